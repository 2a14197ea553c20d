package mitm

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/elazarl/goproxy"
	"golang.org/x/net/http2"
)

// The agent side of an intercepted connection is served by goproxy: each request (h2 stream)
// goes through onRequest, its request hook, which runs serve: one path for binding checks,
// policy, audit and injection whatever the protocol, and goproxy writes the answer back,
// streaming the body, relaying trailers and WebSocket upgrades.
//
// HTTP/1.x: the steered connection is handed to goproxy as if the agent had sent CONNECT for
// it (ConnectMitm), and goproxy's MITM loop reads its requests. wirken terminates the agent's
// TLS itself before the hand-over (a leaf from its CA, ALPN offering h2 and http/1.1), so
// goproxy is given the decrypted connection: goproxy would terminate TLS inside its MITM loop,
// on a tls.Conn it builds itself, and nothing could then sit between TLS and its HTTP/1 request
// reader, which is exactly where wirken's own checks go: the framing check (framingConn:
// goproxy's reader, net/http's, accepts Content-Length with Transfer-Encoding by dropping the
// length) and the header size and time limits (limitConn: goproxy's reader has neither).
//
// HTTP/2: an h2 connection is served by an http2.Server (golang.org/x/net/http2, the same one
// goproxy's AllowHTTP2 MITM runs) whose handler passes each stream to goproxy's ServeHTTP, the
// same hook, through streamWriter. goproxy's own h2 MITM (AllowHTTP2) is not used: it sends a
// response's header only with the first body bytes, so a gRPC-style stream whose server
// answers the header first and then waits for the client's next message stalls
// (TestHTTP2FullDuplexWithTrailers); and its h2 server cannot be given an idle timeout.
// goproxy's AllowHTTP2 therefore stays off: an HTTP/1.x connection is also never taken for
// h2c by its first bytes.

// agentConn is an accepted, steered connection after its first bytes were peeked: reads replay
// the peeked bytes first.
type agentConn struct {
	*clientConn
	r io.Reader
}

func (c *agentConn) Read(b []byte) (int, error) { return c.r.Read(b) }

type (
	connectKey   struct{} // the synthetic CONNECT's *session
	sessionKey   struct{} // the connection's *session, on each h2 stream
	ambiguousKey struct{} // set on a request with both Content-Length and Transfer-Encoding
)

// newGoproxy builds the goproxy server for intercepted connections.
func (p *Proxy) newGoproxy() *goproxy.ProxyHttpServer {
	gp := goproxy.NewProxyHttpServer()
	gp.Logger = slogPrintf{p.log}
	gp.AllowHTTP2 = false // see above: h2 streams reach goproxy through serveH2
	// onRequest removes the hop-by-hop headers itself: it needs the Connection header's list
	// first, which goproxy's own removal deletes without reading.
	gp.KeepHeader = true
	gp.KeepAcceptEncoding = true // bodies pass through untouched
	gp.ConnectDial = nil         // not HTTPS_PROXY: nothing is tunnelled
	// Every request is answered by onRequest; goproxy's own transport must never be used.
	gp.Tr = &http.Transport{DialContext: func(context.Context, string, string) (net.Conn, error) {
		return nil, errors.New("mitm: goproxy transport is disabled")
	}}
	gp.OnRequest().HandleConnectFunc(p.handleConnect)
	gp.OnRequest().DoFunc(p.onRequest)
	return gp
}

// newH2Server builds the HTTP/2 server for agents that negotiated h2.
func (p *Proxy) newH2Server() *http2.Server {
	return &http2.Server{IdleTimeout: p.cfg.IdleTimeout}
}

// intercept hands conn, the agent's decrypted (or plain HTTP) connection, to goproxy.
func (p *Proxy) intercept(conn net.Conn, s *session, h2 bool) {
	if h2 {
		p.serveH2(conn, s)
		return
	}
	// HTTP/1.x: as if the agent had sent CONNECT for its destination.
	target := s.origin.Dst.String()
	if s.sni != "" {
		target = net.JoinHostPort(s.sni, fmt.Sprint(s.origin.Dst.Port()))
	}
	req := &http.Request{
		Method:     http.MethodConnect,
		URL:        &url.URL{Host: target},
		Host:       target,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     http.Header{},
		RemoteAddr: conn.RemoteAddr().String(),
	}
	req = req.WithContext(context.WithValue(context.Background(), connectKey{}, s))
	// goproxy hijacks the connection and serves it on its own goroutine.
	p.gp.ServeHTTP(&hijacker{conn: &connectReplyConn{Conn: p.auditUnserved(conn, s)}}, req)
}

// serveH2 serves an agent's h2 connection until it ends, each stream through goproxy.
func (p *Proxy) serveH2(conn net.Conn, s *session) {
	defer conn.Close()
	p.h2.ServeConn(conn, &http2.ServeConnOpts{
		Context:    context.WithValue(context.Background(), sessionKey{}, s),
		BaseConfig: &http.Server{MaxHeaderBytes: int(p.cfg.MaxHeaderBytes)},
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// goproxy serves absolute-form requests; the stream's :authority is checked in serve.
			r.URL.Scheme, r.URL.Host = "https", r.Host
			if r.ContentLength == 0 {
				r.Body = http.NoBody // a bodyless stream must not become a body of unknown length
			}
			p.gp.ServeHTTP(&streamWriter{ResponseWriter: w, rc: http.NewResponseController(w)}, r)
		}),
	})
}

func (p *Proxy) handleConnect(host string, ctx *goproxy.ProxyCtx) (*goproxy.ConnectAction, string) {
	if s, ok := ctx.Req.Context().Value(connectKey{}).(*session); ok {
		ctx.UserData = s // goproxy passes it on to each request's ProxyCtx in the MITM loop
		return &goproxy.ConnectAction{Action: goproxy.ConnectMitm, TLSConfig: noNestedTLS}, host
	}
	// A CONNECT sent by the agent (on an h2 stream; over HTTP/1.x the MITM loop treats it as
	// any request): answered by serve, which refuses it and records why.
	_, ctx.Resp = p.onRequest(ctx.Req, ctx)
	return goproxy.RejectConnect, host
}

// noNestedTLS refuses TLS inside the agent's (already terminated) TLS connection.
func noNestedTLS(string, *goproxy.ProxyCtx) (*tls.Config, error) {
	return nil, errors.New("mitm: TLS inside an intercepted connection is not served")
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

// onRequest runs for every request (h2 stream) goproxy reads from an intercepted connection:
// authorize, audit, inject, forward, through serve, and answers it: goproxy's own transport is
// never used. Every failure becomes a response whose body starts with "wirken:", so the agent
// and its operator can tell why.
func (p *Proxy) onRequest(req *http.Request, ctx *goproxy.ProxyCtx) (*http.Request, *http.Response) {
	s, _ := ctx.UserData.(*session)
	if s == nil {
		s, _ = req.Context().Value(sessionKey{}).(*session)
	}
	if s == nil {
		// Only connections accepted by Serve reach goproxy.
		return req, errorResponse(req, http.StatusForbidden, "", "not a steered connection")
	}
	s.begin()
	// goproxy names the scheme by what it read, which is always decrypted: the audit record's
	// URL carries the one the agent used.
	req.URL.Scheme = "https"
	if !s.tls {
		req.URL.Scheme = "http"
	}
	// Only WebSocket upgrades are relayed (goproxy relays nothing else once switched): any
	// other Upgrade offer is dropped, so the upstream answers it as a plain request.
	upgrade := ""
	if headerHasToken(req.Header, "Connection", "upgrade") && strings.EqualFold(req.Header.Get("Upgrade"), "websocket") {
		upgrade = req.Header.Get("Upgrade")
	}
	trailers := headerHasToken(req.Header, "Te", "trailers")
	removeHopByHop(req.Header)
	if upgrade != "" {
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", upgrade)
	}
	if trailers {
		req.Header.Set("Te", "trailers") // gRPC needs it, and it says nothing about this hop
	}
	ambiguous := s.fc != nil && s.fc.next()
	if ambiguous {
		req = req.WithContext(context.WithValue(req.Context(), ambiguousKey{}, true))
	}

	resp := p.serve(req, s)

	if resp.StatusCode == http.StatusSwitchingProtocols {
		up := resp.Header.Get("Upgrade")
		removeHopByHop(resp.Header)
		resp.Header.Set("Connection", "Upgrade")
		resp.Header.Set("Upgrade", up)
	} else {
		if s.fc != nil {
			s.fc.resume() // before the agent sees the answer and sends its next request
		}
		removeHopByHop(resp.Header) // an upstream's Connection: close ends no agent connection
	}
	if ambiguous {
		// The connection's framing cannot be trusted: goproxy closes it after this answer.
		resp.Header.Set("Connection", "close")
		resp.Close = true
	}
	switch b := resp.Body.(type) {
	case *upgradedBody:
		// The connection ends with the relay.
	case *countingBody:
		b.after = s.end
	default:
		s.end()
	}
	return req, resp
}

// hopHeaders are the HTTP/1.1 headers that describe one connection, not the message.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// removeHopByHop removes the hop-by-hop headers and those the Connection header names.
func removeHopByHop(h http.Header) {
	for _, v := range h["Connection"] {
		for f := range strings.SplitSeq(v, ",") {
			if f = textproto.TrimString(f); f != "" {
				h.Del(f)
			}
		}
	}
	for _, k := range hopHeaders {
		h.Del(k)
	}
}

// headerHasToken says whether a comma-separated header lists token (case-insensitive).
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for f := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(textproto.TrimString(f), token) {
				return true
			}
		}
	}
	return false
}

// hijacker is the http.ResponseWriter goproxy gets for the synthetic CONNECT: it only hands
// over the connection.
type hijacker struct {
	conn net.Conn
	hdr  http.Header
}

func (h *hijacker) Header() http.Header {
	if h.hdr == nil {
		h.hdr = http.Header{}
	}
	return h.hdr
}
func (h *hijacker) Write(b []byte) (int, error) { return h.conn.Write(b) }
func (h *hijacker) WriteHeader(int)             {}

// Hijack hands over the connection with nothing buffered: goproxy reads it from the start.
func (h *hijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return h.conn, bufio.NewReadWriter(bufio.NewReaderSize(h.conn, 16), bufio.NewWriterSize(h.conn, 16)), nil
}

// connectReplyConn swallows goproxy's answer to the synthetic CONNECT ("HTTP/1.1 200 OK"): a
// transparently steered agent never asked for it. Everything else passes.
type connectReplyConn struct {
	net.Conn
	replied bool // set by goproxy's CONNECT handler before the MITM loop starts
}

func (c *connectReplyConn) Write(b []byte) (int, error) {
	if !c.replied {
		c.replied = true
		if s := string(b); strings.HasPrefix(s, "HTTP/1.1 200 ") && strings.HasSuffix(s, "\r\n\r\n") {
			return len(b), nil
		}
	}
	return c.Conn.Write(b)
}

// errHeaderTooLarge ends a connection whose agent sends more than MaxHeaderBytes before a
// request header is complete.
var errHeaderTooLarge = errors.New("request header too large")

// limitConn bounds what an HTTP/1.x agent may send while the proxy waits for a request header
// (goproxy's request reader has no limits of its own): a read deadline and a byte budget,
// armed by await and lifted by serving while a request is served (its body streams at its own
// pace). Once the first bytes of a header arrive, the rest must follow within headerTimeout.
type limitConn struct {
	net.Conn
	max           int64
	headerTimeout time.Duration

	// bodyRead says whether the request's body has been read to its end: the limits are armed
	// only then, as an upstream may answer before it has read the whole upload.
	bodyRead func() bool

	mu      sync.Mutex
	budget  int64         // bytes left before the awaited header must be complete; -1 when serving
	pending time.Duration // await's timeout while the rest of a request body is still to come
}

func (c *limitConn) Read(b []byte) (int, error) {
	c.mu.Lock()
	budget := c.budget
	c.mu.Unlock()
	if budget == 0 {
		return 0, errHeaderTooLarge
	}
	if budget > 0 && int64(len(b)) > budget {
		b = b[:budget]
	}
	n, err := c.Conn.Read(b)
	if budget < 0 && n > 0 {
		c.armAfterBody()
	}
	if budget > 0 && n > 0 {
		c.mu.Lock()
		if c.budget == c.max {
			// A header has begun: no longer an idle wait.
			_ = c.SetReadDeadline(time.Now().Add(c.headerTimeout))
		}
		if c.budget > 0 {
			c.budget = max(c.budget-int64(n), 0)
		}
		c.mu.Unlock()
	}
	return n, err
}

// await arms the limits for the next request header, which must begin within timeout. While
// the request's body is still being sent (the answer came first), the limits wait for its
// end, and meanwhile the upload must not stall for longer than timeout.
func (c *limitConn) await(timeout time.Duration) {
	c.mu.Lock()
	if c.bodyRead != nil && !c.bodyRead() {
		c.pending = timeout
	} else {
		c.budget, c.pending = c.max, 0
	}
	c.mu.Unlock()
	_ = c.SetReadDeadline(time.Now().Add(timeout))
}

// armAfterBody runs after each read while serving: once a pending await's body has ended,
// the limits are armed; until then each read extends the upload's stall timeout.
func (c *limitConn) armAfterBody() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pending == 0 || c.budget >= 0 {
		return
	}
	timeout := c.pending
	if c.bodyRead() {
		c.budget, c.pending = c.max, 0
	}
	_ = c.SetReadDeadline(time.Now().Add(timeout))
}

// serving lifts the limits while a request is served.
func (c *limitConn) serving() {
	c.mu.Lock()
	c.budget, c.pending = -1, 0
	c.mu.Unlock()
	_ = c.SetReadDeadline(time.Time{})
}

func (c *limitConn) awaiting() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.budget >= 0
}

// begin marks a request (h2 stream) of the session as being served.
func (s *session) begin() {
	if s.lc != nil {
		s.lc.serving()
		return
	}
	s.mu.Lock()
	s.active++
	s.mu.Unlock()
}

// end marks a request (h2 stream) as done: an HTTP/1.x connection waits for the next header
// within the idle timeout (the h2 server keeps its own).
func (s *session) end() {
	if s.lc != nil {
		s.lc.await(s.idleTimeout)
		return
	}
	s.mu.Lock()
	s.active--
	s.mu.Unlock()
}

// idle says whether the session waits for a request (h2: has no stream open).
func (s *session) idle() bool {
	if s.lc != nil {
		return s.lc.awaiting()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.active == 0
}

// streamWriter is an h2 stream's ResponseWriter as goproxy writes to it. A response of
// unknown length (gRPC, SSE, any stream) is flushed at its header and at each write, so that
// neither waits in the h2 server's buffer: a server may answer the header first and then wait
// for the client's next message, which the client sends only once it has the header.
type streamWriter struct {
	http.ResponseWriter
	rc     *http.ResponseController
	stream bool
}

func (w *streamWriter) WriteHeader(code int) {
	w.ResponseWriter.WriteHeader(code)
	if code >= 200 && w.Header().Get("Content-Length") == "" {
		w.stream = true
		_ = w.rc.Flush()
	}
}

func (w *streamWriter) Write(b []byte) (int, error) {
	n, err := w.ResponseWriter.Write(b)
	if w.stream && err == nil {
		err = w.rc.Flush()
	}
	return n, err
}

func (w *streamWriter) Flush() { _ = w.rc.Flush() }

// ReadFrom copies a body with a pooled buffer: goproxy copies with io.Copy, which would
// allocate 32 KiB per stream.
func (w *streamWriter) ReadFrom(r io.Reader) (int64, error) {
	buf := copyBufferPool.Get().(*[32 << 10]byte)
	defer copyBufferPool.Put(buf)
	return io.CopyBuffer(writerOnly{w}, r, buf[:])
}

// writerOnly hides ReadFrom from io.CopyBuffer, which would call it again.
type writerOnly struct{ io.Writer }

var copyBufferPool = sync.Pool{New: func() any { return new([32 << 10]byte) }}

// Unwrap lets http.ResponseController reach the h2 stream (trailers, deadlines).
func (w *streamWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// slogPrintf adapts goproxy's printf logger to slog at debug level.
type slogPrintf struct{ l *slog.Logger }

func (s slogPrintf) Printf(format string, v ...any) {
	s.l.Debug(strings.TrimSuffix(fmt.Sprintf(format, v...), "\n"), "component", "goproxy")
}
