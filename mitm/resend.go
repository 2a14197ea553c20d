package mitm

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptrace"
	"sync/atomic"
)

// errResent is the outcome recorded for a send that net/http gave up on and sent again.
var errResent = errors.New("no answer on a reused upstream connection; sent again on another")

// resends keeps "nothing goes upstream unaudited" true across net/http's own retries. The
// transport sends an idempotent request again, on another connection, when a reused one failed
// before any answer; the upstream may well have read the first send (a server that reads a
// request and then closes), so each further send is a new use of the credential: its record is
// made durable before the transport dials or picks the connection for it, in the GetConn hook
// that precedes every send. If that record cannot be written the send is stopped.
//
// A send is counted when its headers were written (WroteHeaders), not when GetConn ran: the
// HTTP/2 pool skips GetConn for a request that takes a connection another request dialled, so
// counting GetConn calls would take such a request's retry for its first send.
type resends struct {
	p      *Proxy
	ctx    context.Context // the agent's request's
	ev     Event
	tr     *http.Transport
	wrote  atomic.Int64 // sends whose headers were written (HTTP/2 writes on its own goroutine)
	finish func(Result) // closes the record of the latest send
	failed error        // a further send's record could not be written
	cancel context.CancelFunc
}

// trace returns ctx with the hook; the request sent upstream must carry it.
func (r *resends) trace(ctx context.Context) context.Context {
	ctx, r.cancel = context.WithCancel(ctx)
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		GetConn:      r.getConn,
		WroteHeaders: func() { r.wrote.Add(1) },
	})
}

// getConn runs on the round trip's goroutine before each send: once something was written, the
// next send is a resend and needs its own record first.
func (r *resends) getConn(string) {
	if r.wrote.Load() == 0 || r.failed != nil {
		return
	}
	r.finish(Result{Status: http.StatusBadGateway, Err: errResent})
	_, finish, err := r.p.cfg.Recorder.Begin(r.ctx, r.ev)
	if err != nil {
		// Stop this send: with no idle connection to hand over, getConn waits for a dial and
		// sees the cancelled context first.
		r.failed, r.finish = err, func(Result) {}
		if r.tr != nil {
			r.tr.CloseIdleConnections()
		}
		r.cancel()
		return
	}
	r.finish = finish
}
