package mitm

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/elazarl/goproxy"
	"golang.org/x/net/http2"

	"github.com/wirken/wirken/policy"
)

// Origin is what the kernel recorded about a steered connection.
type Origin struct {
	Agent    string         // agent name ("" if the cgroup is not a known agent)
	Dst      netip.AddrPort // where the agent was connecting to
	PID, UID uint32         // advisory: the process that called connect()
	Comm     string         // advisory: its task name (set by the process itself)
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

// Secrets opens a credential's secret, and says which version it is, just for the duration of
// fn. fn must not retain the slice. It refuses when host is outside the secret's binding.
type Secrets interface {
	WithSecretVersion(name, host string, fn func(secret []byte, version int) error) error
}

// Event describes one decision for the audit trail. It never holds a secret value.
type Event struct {
	Kind       string // conn.deny, conn.passthrough, request.deny, request.allow, credential.use
	Agent      string
	Dst        netip.AddrPort
	PID, UID   uint32
	Comm       string
	Method     string
	Host       string
	Port       uint16
	Path       string
	URL        string // redacted: no query string
	Rule       string
	Credential string
	CredVer    int // vault version of the credential's secret that was injected
	Reason     string
}

// Result is how a forwarded request or spliced connection ended.
type Result struct {
	Status int   // upstream HTTP status; 0 for a spliced connection
	Bytes  int64 // response bytes (both directions for a spliced connection)
	Err    error // a short reason; never carries a URL, header or secret
	Usage  Usage // what an LLM API reported, if it did
	// UsageMissing: the rule has a daily token budget but the response reported no usage
	// wirken could read, so nothing was counted against the budget.
	UsageMissing bool
}

// Recorder writes the audit trail.
type Recorder interface {
	// Deny records a decision that sent nothing upstream.
	Deny(ctx context.Context, e Event)
	// Begin records e durably before anything is sent upstream. If it returns an error,
	// nothing may be sent. finish is called exactly once with the outcome.
	Begin(ctx context.Context, e Event) (context.Context, func(Result), error)
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
	// Limits keeps the counters of rule conditions (rates, token budgets). Default: a
	// policy.Meter on the wall clock.
	Limits Limits
	// PeekTimeout bounds how long a new connection may take to send its first bytes.
	PeekTimeout time.Duration
	// HeaderTimeout bounds the agent's TLS handshake, and then each request's header.
	HeaderTimeout time.Duration
	// IdleTimeout bounds how long a kept-alive connection may wait for its next request.
	IdleTimeout time.Duration
	// MaxHeaderBytes caps what an agent may send before a request's header is complete.
	MaxHeaderBytes int64
	// Names, if set, requires that the name a connection is for (SNI, or Host for plain
	// HTTP) is one the agent resolved to the destination through wirken's resolver.
	Names Names
	// Addresses, if set, is where the proxy looks up a name's addresses when only DNS ties
	// the destination to the name (plain HTTP, passthrough); nil: the system resolver. The
	// daemon passes wirken's resolver, so the proxy asks the upstreams agents' DNS goes to.
	Addresses Addresses
	// Own lists wirken's other listeners (the resolver's): like the proxy's own, a
	// connection steered there is refused as a loop, whatever the policy says.
	Own []netip.AddrPort
	// DialTimeout bounds the upstream TCP connect.
	DialTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for an upstream's response header (LLM calls may
	// think for minutes).
	ResponseHeaderTimeout time.Duration
	// BudgetInFlight caps the requests one agent may have in flight under one rule with a
	// daily token budget (default DefaultBudgetInFlight).
	BudgetInFlight int
	// SignBuffer caps the bytes of request bodies held at once, over all requests, to hash
	// them for SigV4 re-signing (default DefaultSignBuffer); beyond it requests get 503.
	SignBuffer int64
}

func (c *Config) defaults() {
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{
		{&c.PeekTimeout, 10 * time.Second},
		{&c.HeaderTimeout, 30 * time.Second},
		{&c.IdleTimeout, 90 * time.Second},
		{&c.DialTimeout, 10 * time.Second},
		{&c.ResponseHeaderTimeout, 10 * time.Minute},
	} {
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	if c.MaxHeaderBytes == 0 {
		c.MaxHeaderBytes = 1 << 20
	}
	if c.SignBuffer <= 0 {
		c.SignBuffer = DefaultSignBuffer
	}
	if c.BudgetInFlight <= 0 {
		c.BudgetInFlight = DefaultBudgetInFlight
	}
}

// Proxy is the transparent proxy. Serve it on one or more loopback listeners.
type Proxy struct {
	cfg  Config
	log  *slog.Logger
	gp   *goproxy.ProxyHttpServer // serves intercepted requests (serve.go)
	h2   *http2.Server            // frames the agents' h2 connections for gp
	pool *pool
	// tokens caches OAuth2 access tokens minted for credentials.
	tokens tokens
	// budgeted counts the requests in flight under rules with a token budget.
	budgeted inFlight
	// signBuf counts the request body bytes held for SigV4 re-signing.
	signBuf byteBudget
	// via marks requests this proxy sent upstream; one that comes back carrying it is a loop.
	via string

	// unsteered limits how many connections without steering metadata are recorded: any local
	// process can make them, and each costs an fsync'd audit record.
	unsteered *limiter
	// acceptLog limits how often a failing Accept (out of file descriptors) is logged;
	// acceptErrs counts every failure.
	acceptLog  *limiter
	acceptErrs atomic.Int64

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*clientConn]struct{}
	idle      chan struct{} // closed and replaced when conns becomes empty
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
	cfg.defaults()
	if cfg.Limits == nil {
		cfg.Limits = policy.NewMeter(nil)
	}
	p := &Proxy{
		cfg:       cfg,
		log:       cfg.Logger,
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[*clientConn]struct{}),
		unsteered: newLimiter(20, time.Second),
		acceptLog: newLimiter(1, time.Second),
		signBuf:   byteBudget{max: cfg.SignBuffer},
	}
	p.pool = newPool(cfg.UpstreamRoots, cfg.DialTimeout, cfg.ResponseHeaderTimeout, maxTransports)
	nonce := make([]byte, 6)
	rand.Read(nonce)
	p.via = "1.1 wirken-" + hex.EncodeToString(nonce)
	p.gp, p.h2 = p.newGoproxy(), p.newH2Server()
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
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			if !acceptRetryable(err) {
				return fmt.Errorf("accepting: %w", err)
			}
			// Out of file descriptors (or memory, or a connection that went away before it
			// was accepted): the listener stays, and accepting resumes once connections close.
			// The waiting agents stay in the kernel's backlog; steering keeps them away from
			// everywhere else.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			p.acceptFailed(err, backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		go p.handle(p.track(c))
	}
}

// acceptRetryable says whether an Accept error passes: a timeout, too many open files (the
// process's or the system's), no buffer or memory for now, or a connection aborted before it
// was accepted. Anything else ends Serve.
func acceptRetryable(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED, syscall.EINTR} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// acceptFailed logs a passing Accept error, at most once a second, with how many there were.
func (p *Proxy) acceptFailed(err error, backoff time.Duration) {
	p.acceptErrs.Add(1)
	if ok, dropped := p.acceptLog.allow(); ok {
		p.log.Warn("accepting agent connections failed; retrying", "err", err, "retry_in", backoff, "unlogged", dropped)
	}
}

// AcceptErrors is how many times accepting a connection failed and was retried (most often:
// out of file descriptors).
func (p *Proxy) AcceptErrors() int64 { return p.acceptErrs.Load() }

// Shutdown stops accepting, waits for open connections to finish until ctx is done, then
// closes the rest. Every request that was forwarded has been recorded by then.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	for ln := range p.listeners {
		ln.Close()
	}
	p.mu.Unlock()
	// Intercepted connections that wait for a request are closed (again as they become idle);
	// requests in flight, spliced and upgraded connections are waited for.
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		p.mu.Lock()
		n, idle := len(p.conns), p.idle
		var waiting []*clientConn
		for c := range p.conns {
			if s := c.s.Load(); s != nil && s.idle() {
				waiting = append(waiting, c)
			}
		}
		p.mu.Unlock()
		if n == 0 {
			break
		}
		for _, c := range waiting {
			c.Close()
		}
		select {
		case <-idle:
			continue
		case <-tick.C:
			continue
		case <-ctx.Done():
		}
		p.mu.Lock()
		for c := range p.conns {
			c.Conn.Close()
		}
		p.mu.Unlock()
		break
	}
	p.pool.closeIdle()
	return ctx.Err()
}

// CloseIdle closes the idle upstream connections that carried the named credentials (all
// idle connections when none are named), so a rotated secret's old header value leaves no
// live connection behind. Requests in flight finish on theirs.
func (p *Proxy) CloseIdle(creds ...string) { p.pool.closeIdle(creds...) }

func (p *Proxy) track(c net.Conn) *clientConn {
	cc := &clientConn{Conn: c, p: p}
	p.mu.Lock()
	if len(p.conns) == 0 {
		p.idle = make(chan struct{})
	}
	p.conns[cc] = struct{}{}
	p.mu.Unlock()
	return cc
}

func (p *Proxy) untrack(cc *clientConn) {
	p.mu.Lock()
	delete(p.conns, cc)
	if len(p.conns) == 0 && p.idle != nil {
		close(p.idle)
		p.idle = nil
	}
	p.mu.Unlock()
}

// session is what the proxy knows about one accepted connection.
type session struct {
	origin Origin
	sni    string // "" for plain HTTP
	tls    bool

	// HTTP/1.x: the framing check and the header limits under goproxy's request reader.
	fc *framingConn
	lc *limitConn

	idleTimeout time.Duration // HTTP/1.x: how long to wait for the next request

	// HTTP/2: how many streams are being served.
	mu     sync.Mutex
	active int
}

func (p *Proxy) handle(c *clientConn) {
	client, local := addrPort(c.RemoteAddr()), addrPort(c.LocalAddr())
	o, err := p.cfg.Steering.Origin(client, local)
	if err != nil {
		// Not steered by us (or the entry is gone): fail closed. Any local process can do
		// this, so only a bounded number per second is recorded; the rest are counted.
		if ok, dropped := p.unsteered.allow(); ok {
			reason := "no steering metadata"
			if dropped > 0 {
				reason = fmt.Sprintf("no steering metadata (and %d more not recorded)", dropped)
			}
			p.log.Warn("resetting connection without steering metadata", "client", client, "err", err, "unrecorded", dropped)
			p.cfg.Recorder.Deny(context.Background(), Event{Kind: "conn.deny", Reason: reason})
		}
		c.reset()
		return
	}
	if o.Agent == "" {
		p.denyConn(c, Event{Dst: o.Dst, PID: o.PID, UID: o.UID, Comm: o.Comm}, "unknown agent cgroup")
		return
	}
	ev := Event{Agent: o.Agent, Dst: o.Dst, PID: o.PID, UID: o.UID, Comm: o.Comm, Port: o.Dst.Port()}
	if p.isSelf(o.Dst) {
		p.denyConn(c, ev, "destination is wirken's own listener (proxy loop)")
		return
	}
	// Other TCP goes only where a passthrough rule names the address and port: such a rule
	// splices at once, before any peek (the protocol may wait for the server to speak first).
	if d := p.cfg.Policy.Decide(o.Agent, o.Dst.Addr().String(), o.Dst.Port()); d.Mode == policy.Passthrough {
		ev.Rule, ev.Host = d.Rule, o.Dst.Addr().String()
		p.passthrough(c, c, ev)
		return
	}

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

	ev.Host = s.sni
	if s.tls {
		if s.sni == "" {
			p.denyConn(c, ev, "TLS without a server name")
			return
		}
		d := p.cfg.Policy.Decide(o.Agent, s.sni, o.Dst.Port())
		ev.Rule = d.Rule
		if d.Mode != policy.Deny && !p.agentResolved(o, s.sni) {
			p.denyConn(c, ev, unresolvedReason(o, s.sni))
			return
		}
		switch d.Mode {
		case policy.Intercept:
		case policy.Passthrough:
			// Nothing is decrypted, so nothing but DNS ties the destination to the name: it
			// must be one of the name's addresses.
			if !p.resolvesTo(context.Background(), s.sni, o.Dst.Addr()) {
				p.denyConn(c, ev, "destination is not an address of "+s.sni)
				return
			}
			_ = c.SetReadDeadline(time.Time{})
			p.passthrough(c, r, ev)
			return
		default:
			p.denyConn(c, ev, d.Reason)
			return
		}
	}
	// Intercepted: plain HTTP is decided per request, from the Host header. wirken terminates
	// TLS (see serve.go), then goproxy serves the requests.
	s.idleTimeout = p.cfg.IdleTimeout
	var conn net.Conn = &agentConn{clientConn: c, r: r}
	h2 := false
	if s.tls {
		tc := tls.Server(conn, p.agentTLS(s.sni))
		_ = c.SetDeadline(time.Now().Add(p.cfg.HeaderTimeout))
		if err := tc.Handshake(); err != nil {
			p.log.Debug("agent TLS handshake failed", "agent", o.Agent, "host", s.sni, "err", err)
			c.Close()
			return
		}
		_ = c.SetDeadline(time.Time{})
		conn = tc
		h2 = tc.ConnectionState().NegotiatedProtocol == "h2"
	}
	if !h2 { // HTTP/2 frames its own messages; its server bounds idle connections
		// HTTP/1.x: goproxy reads through the framing check and the header limits.
		s.fc = &framingConn{Conn: conn}
		s.lc = &limitConn{Conn: s.fc, max: p.cfg.MaxHeaderBytes, headerTimeout: p.cfg.HeaderTimeout, bodyRead: s.fc.bodyRead}
		s.lc.await(p.cfg.HeaderTimeout)
		conn = s.lc
	}
	c.s.Store(s)
	p.intercept(conn, s, h2)
}

// isSelf says whether dst is one of the proxy's own listeners or another of wirken's
// (Config.Own): a connection there would loop.
func (p *Proxy) isSelf(dst netip.AddrPort) bool {
	at := func(a netip.AddrPort) bool {
		return a.Port() == dst.Port() && (a.Addr().Unmap() == dst.Addr().Unmap() || a.Addr().IsUnspecified())
	}
	for _, a := range p.cfg.Own {
		if at(a) {
			return true
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for ln := range p.listeners {
		if at(addrPort(ln.Addr())) {
			return true
		}
	}
	return false
}

func (p *Proxy) denyConn(c *clientConn, ev Event, reason string) {
	ev.Kind, ev.Reason = "conn.deny", reason
	p.log.Info("connection denied", "agent", ev.Agent, "dst", ev.Dst, "host", ev.Host, "reason", reason)
	p.cfg.Recorder.Deny(context.Background(), ev)
	c.reset()
}

// passthrough splices the connection to its original destination without decrypting it.
func (p *Proxy) passthrough(c *clientConn, r io.Reader, ev Event) {
	ev.Kind = "conn.passthrough"
	ctx, finish, err := p.cfg.Recorder.Begin(context.Background(), ev)
	if err != nil {
		p.log.Error("audit unavailable; refusing passthrough", "agent", ev.Agent, "err", err)
		c.reset()
		return
	}
	d := net.Dialer{Timeout: p.cfg.DialTimeout}
	up, err := d.DialContext(ctx, "tcp", ev.Dst.String())
	if err != nil {
		finish(Result{Err: errors.New(upstreamReason(err))})
		c.reset()
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
		closeWrite(c.Conn)
		// The upstream is done; an agent that never closes its side must not pin the splice.
		_ = c.SetReadDeadline(time.Now().Add(p.cfg.IdleTimeout))
	}()
	wg.Wait()
	up.Close()
	c.Close()
	finish(Result{Bytes: sent + recv})
}

// clientConn is an accepted connection the proxy keeps track of until it is closed.
type clientConn struct {
	net.Conn
	p    *Proxy
	once sync.Once
	s    atomic.Pointer[session] // set once the connection is intercepted
}

func (c *clientConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.p.untrack(c) })
	return err
}

// reset closes with an RST so the agent sees a refused connection, not a clean end.
func (c *clientConn) reset() {
	if tc, ok := c.Conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

func closeWrite(c net.Conn) error {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// limiter allows n events per period and counts the ones it refuses.
type limiter struct {
	mu      sync.Mutex
	n       int
	period  time.Duration
	start   time.Time
	used    int
	dropped int
}

func newLimiter(n int, period time.Duration) *limiter { return &limiter{n: n, period: period} }

// allow says whether one more event may go ahead, and how many were refused since the last one
// that did.
func (l *limiter) allow() (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if now.Sub(l.start) >= l.period {
		l.start, l.used = now, 0
	}
	if l.used >= l.n {
		l.dropped++
		return false, 0
	}
	l.used++
	d := l.dropped
	l.dropped = 0
	return true, d
}
