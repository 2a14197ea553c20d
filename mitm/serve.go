package mitm

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"sync"
)

// The agent side of an intercepted connection is served by net/http's server, for HTTP/1.1 and
// HTTP/2 alike (chosen by ALPN on the agent's TLS handshake), and each request is forwarded by
// httputil.ReverseProxy through serve: one path for policy, audit and injection whatever the
// protocol. goproxy's MITM loop speaks only HTTP/1.1 (no h2, so no gRPC), which is why the
// intercepted connection is no longer handed to it.

// agentConn is an accepted, steered connection after its first bytes were peeked: reads replay
// the peeked bytes first. It carries the session to the request handler.
type agentConn struct {
	*clientConn
	r io.Reader
	s *session
}

func (c *agentConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// CloseWrite lets the server half-close the agent side.
func (c *agentConn) CloseWrite() error { return closeWrite(c.clientConn.Conn) }

// connQueue is the listener the HTTP server accepts intercepted connections from.
type connQueue struct {
	ch     chan net.Conn
	done   chan struct{}
	once   sync.Once
	closed bool
}

func newConnQueue() *connQueue {
	return &connQueue{ch: make(chan net.Conn), done: make(chan struct{})}
}

func (q *connQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.ch:
		return c, nil
	case <-q.done:
		return nil, net.ErrClosed
	}
}

// push hands c to the server; it fails once the server is shut down.
func (q *connQueue) push(c net.Conn) bool {
	select {
	case q.ch <- c:
		return true
	case <-q.done:
		return false
	}
}

func (q *connQueue) Close() error {
	q.once.Do(func() { close(q.done) })
	return nil
}

func (q *connQueue) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

type (
	sessionKey   struct{}
	framingKey   struct{} // the request's *framingConn (HTTP/1.x)
	ambiguousKey struct{} // set on a request with both Content-Length and Transfer-Encoding
)

func sessionOf(ctx context.Context) *session {
	s, _ := ctx.Value(sessionKey{}).(*session)
	return s
}

// newServer builds the HTTP server for intercepted connections.
func (p *Proxy) newServer() *http.Server {
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			// ReverseProxy drops X-Forwarded-* before Rewrite; wirken is transparent and adds
			// none, so the agent's own pass unchanged.
			for _, k := range []string{"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"} {
				if v, ok := pr.In.Header[k]; ok {
					pr.Out.Header[k] = v
				}
			}
		},
		Transport:     roundTripperFunc(p.roundTrip),
		FlushInterval: -1, // every write reaches the agent at once: SSE, gRPC, chunked streams
		BufferPool:    copyBuffers{},
		ErrorLog:      log.New(slogWriter{p.log}, "", 0),
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if fc, _ := r.Context().Value(framingKey{}).(*framingConn); fc != nil {
				fc.resume()
			}
			p.log.Warn("proxying failed", "err", upstreamReason(err))
			writeError(w, http.StatusBadGateway, "", "upstream failed: "+upstreamReason(err))
		},
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fc, _ := r.Context().Value(framingKey{}).(*framingConn)
		if fc != nil {
			// Let a request body and its response stream at the same time, as over h2.
			_ = http.NewResponseController(w).EnableFullDuplex()
			if fc.next() {
				// Refused in serve (and audited); the connection's framing cannot be trusted.
				w.Header().Set("Connection", "close")
				r = r.WithContext(context.WithValue(r.Context(), ambiguousKey{}, true))
			}
		}
		rp.ServeHTTP(w, r)
	})
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: p.cfg.HeaderTimeout, // the TLS handshake is bounded in handle
		IdleTimeout:       p.cfg.IdleTimeout,
		MaxHeaderBytes:    int(p.cfg.MaxHeaderBytes),
		ErrorLog:          log.New(slogWriter{p.log}, "", 0),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			switch c := c.(type) {
			case *framingConn:
				return context.WithValue(context.WithValue(ctx, sessionKey{}, c.s), framingKey{}, c)
			case *tls.Conn:
				if ac, ok := c.NetConn().(*agentConn); ok {
					return context.WithValue(ctx, sessionKey{}, ac.s)
				}
			}
			return ctx
		},
	}
}

// agentTLS is the TLS configuration shown to an agent: a leaf for the server name it asked
// for, HTTP/2 or HTTP/1.1 as the agent prefers.
func (p *Proxy) agentTLS(sni string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2", "http/1.1"},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return p.cfg.CA.Leaf(sni)
		},
	}
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// roundTrip runs for every request on an intercepted connection: authorize, audit, inject,
// forward. It never returns an error: every failure becomes a response whose body starts with
// "wirken:", so the agent and its operator can tell why.
func (p *Proxy) roundTrip(req *http.Request) (*http.Response, error) {
	s := sessionOf(req.Context())
	if s == nil {
		return nil, errors.New("mitm: request without a session")
	}
	// The scheme the agent used (a server request has none): it is on the audit record's URL.
	req.URL.Scheme = "https"
	if !s.tls {
		req.URL.Scheme = "http"
	}
	resp := p.serve(req, s)
	if fc, _ := req.Context().Value(framingKey{}).(*framingConn); fc != nil && resp.StatusCode != http.StatusSwitchingProtocols {
		fc.resume() // before the agent sees the answer and sends its next request
	}
	return resp, nil
}

// slogWriter turns net/http's log lines into debug records.
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(b []byte) (int, error) {
	w.l.Debug(string(b), "component", "http")
	return len(b), nil
}

// copyBuffers reuses ReverseProxy's body copy buffers (32 KiB each) across requests.
type copyBuffers struct{}

var copyBufferPool = sync.Pool{New: func() any { return new([32 << 10]byte) }}

func (copyBuffers) Get() []byte { return copyBufferPool.Get().(*[32 << 10]byte)[:] }

func (copyBuffers) Put(b []byte) {
	if cap(b) == 32<<10 {
		copyBufferPool.Put((*[32 << 10]byte)(b[:32<<10]))
	}
}
