package mitm

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sync"
	"time"

	"github.com/elazarl/goproxy"

	"github.com/wirken/wirken/policy"
)

// Origin is what the kernel recorded about a steered connection.
type Origin struct {
	Agent    string         // agent name ("" if the cgroup is not a known agent)
	Dst      netip.AddrPort // where the agent was connecting to
	PID, UID uint32         // advisory: the process that called connect()
}

// Steering resolves an accepted connection to its agent and original destination. An entry is
// returned at most once. A miss is an error, and the connection is then reset.
type Steering interface {
	Origin(client, local netip.AddrPort) (Origin, error)
}

// Policy decides what an agent may do. Implementations must be safe for concurrent use and
// answer from an immutable snapshot.
type Policy interface {
	Decide(agent, host string, port uint16) policy.Decision
	Authorize(r policy.Request) policy.Grant
}

// Secrets opens a credential's secret just for the duration of fn. fn must not retain the slice.
// It refuses when host is outside the secret's binding.
type Secrets interface {
	WithSecret(name, host string, fn func(secret []byte) error) error
}

// Event describes one decision for the audit trail. It never holds a secret value.
type Event struct {
	Kind       string // conn.deny, conn.passthrough, request.deny, request.allow, credential.use
	Agent      string
	Dst        netip.AddrPort
	PID, UID   uint32
	Method     string
	Host       string
	Port       uint16
	Path       string
	URL        string // redacted: no query string
	Rule       string
	Credential string
	Reason     string
}

// Recorder writes the audit trail.
type Recorder interface {
	// Deny records a decision that sent nothing upstream.
	Deny(ctx context.Context, e Event)
	// Begin records e durably before anything is sent upstream. If it returns an error,
	// nothing may be sent. finish is called exactly once with the outcome.
	Begin(ctx context.Context, e Event) (context.Context, func(status int, bytes int64, err error), error)
}

// Config wires a Proxy.
type Config struct {
	CA            *CA
	UpstreamRoots *x509.CertPool // system roots plus configured extra CAs
	Steering      Steering
	Policy        Policy
	Secrets       Secrets
	Recorder      Recorder
	Logger        *slog.Logger
	// PeekTimeout bounds how long a new connection may take to send its first bytes.
	PeekTimeout time.Duration
	// DialTimeout bounds the upstream TCP connect.
	DialTimeout time.Duration
}

// Proxy is the transparent proxy. Serve it on one or more loopback listeners.
type Proxy struct {
	cfg  Config
	log  *slog.Logger
	gp   *goproxy.ProxyHttpServer
	pool *pool

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
}

// New checks cfg and builds a Proxy.
func New(cfg Config) (*Proxy, error) {
	switch {
	case cfg.CA == nil:
		return nil, errors.New("mitm: no CA")
	case cfg.Steering == nil, cfg.Policy == nil, cfg.Secrets == nil, cfg.Recorder == nil:
		return nil, errors.New("mitm: steering, policy, secrets and recorder are all required")
	case cfg.Logger == nil:
		return nil, errors.New("mitm: no logger")
	}
	if cfg.UpstreamRoots == nil {
		roots, err := x509.SystemCertPool()
		if err != nil {
			return nil, fmt.Errorf("loading system roots: %w", err)
		}
		cfg.UpstreamRoots = roots
	}
	if cfg.PeekTimeout == 0 {
		cfg.PeekTimeout = 10 * time.Second
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	p := &Proxy{cfg: cfg, log: cfg.Logger, listeners: make(map[net.Listener]struct{})}
	p.pool = newPool(cfg.UpstreamRoots, cfg.DialTimeout)

	gp := goproxy.NewProxyHttpServer()
	gp.Logger = slogPrintf{p.log}
	gp.KeepAcceptEncoding = true // bodies pass through untouched
	// Every request goes through roundTrip; goproxy's own transport must never be used.
	gp.Tr = &http.Transport{DialContext: func(context.Context, string, string) (net.Conn, error) {
		return nil, errors.New("mitm: goproxy transport is disabled")
	}}
	gp.OnRequest().HandleConnectFunc(p.handleConnect)
	p.gp = gp
	return p, nil
}

// Serve accepts steered connections on ln until ln is closed.
func (p *Proxy) Serve(ln net.Listener) error {
	p.mu.Lock()
	p.listeners[ln] = struct{}{}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.listeners, ln)
		p.mu.Unlock()
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return fmt.Errorf("accepting: %w", err)
		}
		go p.handle(c)
	}
}

// Close stops every listener given to Serve and drops idle upstream connections.
func (p *Proxy) Close() error {
	p.mu.Lock()
	for ln := range p.listeners {
		ln.Close()
	}
	p.mu.Unlock()
	p.pool.closeIdle()
	return nil
}

// session is what the proxy knows about one accepted connection.
type session struct {
	origin Origin
	sni    string // "" for plain HTTP
	tls    bool
}

type ctxKey struct{}

func (p *Proxy) handle(c net.Conn) {
	client, local := addrPort(c.RemoteAddr()), addrPort(c.LocalAddr())
	o, err := p.cfg.Steering.Origin(client, local)
	if err != nil {
		// Not steered by us (or the entry is gone): fail closed.
		p.log.Warn("resetting connection without steering metadata", "client", client, "err", err)
		p.cfg.Recorder.Deny(context.Background(), Event{Kind: "conn.deny", Reason: "no steering metadata"})
		reset(c)
		return
	}
	if o.Agent == "" {
		p.denyConn(c, Event{Dst: o.Dst, PID: o.PID, UID: o.UID}, "unknown agent cgroup")
		return
	}
	ev := Event{Agent: o.Agent, Dst: o.Dst, PID: o.PID, UID: o.UID, Port: o.Dst.Port()}

	_ = c.SetReadDeadline(time.Now().Add(p.cfg.PeekTimeout))
	in := bufio.NewReader(c)
	k := sniff(in)
	var r io.Reader = in
	s := &session{origin: o}
	switch k {
	case kindTLS:
		sni, replay, err := peekClientHello(in)
		if err != nil {
			p.denyConn(c, ev, "unreadable TLS ClientHello")
			return
		}
		r, s.sni, s.tls = replay, sni, true
	case kindHTTP:
	default:
		p.denyConn(c, ev, "not TLS or HTTP")
		return
	}
	_ = c.SetReadDeadline(time.Time{})

	host := s.sni
	ev.Host = host
	if k == kindTLS && host == "" {
		p.denyConn(c, ev, "TLS without a server name")
		return
	}
	if k == kindTLS {
		d := p.cfg.Policy.Decide(o.Agent, host, o.Dst.Port())
		ev.Rule = d.Rule
		switch d.Mode {
		case policy.Intercept:
		case policy.Passthrough:
			p.passthrough(c, r, ev)
			return
		default:
			p.denyConn(c, ev, d.Reason)
			return
		}
	}
	// Plain HTTP is decided per request, from the Host header.
	p.intercept(c, r, s)
}

func (p *Proxy) denyConn(c net.Conn, ev Event, reason string) {
	ev.Kind, ev.Reason = "conn.deny", reason
	p.log.Info("connection denied", "agent", ev.Agent, "dst", ev.Dst, "host", ev.Host, "reason", reason)
	p.cfg.Recorder.Deny(context.Background(), ev)
	reset(c)
}

// passthrough splices the connection to its original destination without decrypting it.
func (p *Proxy) passthrough(c net.Conn, r io.Reader, ev Event) {
	ev.Kind = "conn.passthrough"
	ctx, finish, err := p.cfg.Recorder.Begin(context.Background(), ev)
	if err != nil {
		p.log.Error("audit unavailable; refusing passthrough", "agent", ev.Agent, "err", err)
		reset(c)
		return
	}
	d := net.Dialer{Timeout: p.cfg.DialTimeout}
	up, err := d.DialContext(ctx, "tcp", ev.Dst.String())
	if err != nil {
		finish(0, 0, err)
		reset(c)
		return
	}
	var wg sync.WaitGroup
	var sent, recv int64
	wg.Add(2)
	go func() {
		defer wg.Done()
		sent, _ = io.Copy(up, r)
		closeWrite(up)
	}()
	go func() {
		defer wg.Done()
		recv, _ = io.Copy(c, up)
		closeWrite(c)
	}()
	wg.Wait()
	up.Close()
	c.Close()
	finish(0, sent+recv, nil)
}

// intercept hands the connection to goproxy as if the agent had sent CONNECT for it.
func (p *Proxy) intercept(c net.Conn, r io.Reader, s *session) {
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
		RemoteAddr: c.RemoteAddr().String(),
	}
	req = req.WithContext(context.WithValue(context.Background(), ctxKey{}, s))
	hc := &hijackedConn{Conn: c, r: r}
	p.gp.ServeHTTP(&hijacker{conn: hc}, req)
}

func (p *Proxy) handleConnect(host string, ctx *goproxy.ProxyCtx) (*goproxy.ConnectAction, string) {
	s, ok := ctx.Req.Context().Value(ctxKey{}).(*session)
	if !ok {
		// Only connections accepted by Serve reach goproxy.
		return goproxy.RejectConnect, host
	}
	ctx.UserData = s
	ctx.RoundTripper = goproxy.RoundTripperFunc(p.roundTrip)
	return &goproxy.ConnectAction{Action: goproxy.ConnectMitm, TLSConfig: p.tlsConfig}, host
}

func (p *Proxy) tlsConfig(_ string, ctx *goproxy.ProxyCtx) (*tls.Config, error) {
	s := ctx.UserData.(*session)
	leaf, err := p.cfg.CA.Leaf(s.sni)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		Certificates: []tls.Certificate{*leaf},
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"http/1.1"},
	}, nil
}

// hijacker is the http.ResponseWriter goproxy gets for the synthetic CONNECT: it only hands over
// the connection.
type hijacker struct {
	conn *hijackedConn
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
func (h *hijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return h.conn, bufio.NewReadWriter(bufio.NewReader(h.conn), bufio.NewWriter(h.conn)), nil
}

// hijackedConn replays the peeked bytes and swallows goproxy's "200 Connection established"
// reply, which a transparently steered client never asked for.
type hijackedConn struct {
	net.Conn
	r       io.Reader
	replied bool
}

func (c *hijackedConn) Read(b []byte) (int, error) { return c.r.Read(b) }
func (c *hijackedConn) Write(b []byte) (int, error) {
	if !c.replied {
		c.replied = true
		if len(b) > 9 && string(b[:9]) == "HTTP/1.1 " {
			return len(b), nil
		}
	}
	return c.Conn.Write(b)
}

// CloseWrite lets goproxy half-close the client side.
func (c *hijackedConn) CloseWrite() error { return closeWrite(c.Conn) }

func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

// reset closes c with an RST so the agent sees a refused connection, not a clean end.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

func closeWrite(c net.Conn) error {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// slogPrintf adapts goproxy's printf logger to slog at debug level.
type slogPrintf struct{ l *slog.Logger }

func (s slogPrintf) Printf(format string, v ...any) {
	s.l.Debug(fmt.Sprintf(format, v...), "component", "goproxy")
}
