package resolver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/time/rate"
)

// Origin is who sent a query, as the kernel recorded it.
type Origin struct {
	Agent string         // "" if the cgroup is no known agent
	Dst   netip.AddrPort // the resolver address the agent used
	PID   uint32         // advisory: the process that sent the query
	UID   uint32         // advisory
	Comm  string         // advisory: its task name (set by the process itself)
}

// Query is one agent query as the audit trail sees it.
type Query struct {
	Origin
	Name     string // as asked (lower case, no trailing dot)
	Type     string // A, AAAA, ...
	Decision string // "allow" (forwarded upstream) or "deny"
	Reason   string // why it was denied
}

// Recorder writes the audit trail. Query is called before an allowed query is forwarded; if it
// fails, nothing is forwarded and the agent gets SERVFAIL. A denial is recorded after the fact
// and its error only logged.
type Recorder interface {
	Query(q Query) error
}

// Identifier tells which agent sent a query.
type Identifier interface {
	// QueryOrigin names the sender of a UDP datagram from client to local.
	QueryOrigin(client, local netip.AddrPort) (Origin, error)
	// Origin names the agent behind an accepted TCP connection; an entry is
	// returned at most once.
	Origin(client, local netip.AddrPort) (Origin, error)
}

// Policy says which names an agent may resolve.
type Policy interface {
	AllowsName(agent, host string) bool
}

// Config wires a Resolver.
type Config struct {
	Upstreams []netip.AddrPort // tried in order
	Identify  Identifier
	Policy    Policy
	Recorder  Recorder // nil: nothing is recorded
	Logger    *slog.Logger
	// Timeout bounds one exchange with one upstream (default 5s).
	Timeout time.Duration
	// MinTTL and MaxTTL clamp how long a resolved address is remembered
	// (defaults 60s and 24h): a name resolved with TTL 0 can still be
	// connected to right after.
	MinTTL, MaxTTL time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Resolver answers agents' DNS queries. Serve it on UDP and TCP sockets.
type Resolver struct {
	cfg   Config
	names table

	mu      sync.Mutex
	servers []*dns.Server
	tcp     sync.Map // "client|local" of an accepted TCP connection -> Origin

	// unidentified limits the audit records of refused TCP connections (unidentified.go).
	unidentified        *rate.Limiter
	unidentifiedDropped atomic.Int64
}

// New checks cfg and returns a Resolver.
func New(cfg Config) (*Resolver, error) {
	switch {
	case len(cfg.Upstreams) == 0:
		return nil, errors.New("creating resolver: no upstream resolver")
	case cfg.Identify == nil || cfg.Policy == nil:
		return nil, errors.New("creating resolver: no identifier or policy")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.MinTTL == 0 {
		cfg.MinTTL = time.Minute
	}
	if cfg.MaxTTL == 0 {
		cfg.MaxTTL = 24 * time.Hour
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Resolver{cfg: cfg, unidentified: rate.NewLimiter(20, 20)}, nil
}

// Resolved reports whether agent resolved host (any case, optional trailing
// dot) to addr through this resolver and the answer has not expired.
func (r *Resolver) Resolved(agent, host string, addr netip.Addr) bool {
	return r.names.has(agent, host, addr, r.cfg.Now())
}

// LookupNetIP returns host's A and AAAA addresses as the upstreams answer them: wirken's own
// lookup, not an agent's, so nothing is recorded or audited. It fails only if neither
// lookup got an answer.
func (r *Resolver) LookupNetIP(ctx context.Context, host string) ([]netip.Addr, error) {
	var addrs []netip.Addr
	var errs []error
	for _, qtype := range []uint16{dns.TypeA, dns.TypeAAAA} {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("looking up %s: %w", host, err)
		}
		q := new(dns.Msg)
		q.SetQuestion(dns.Fqdn(host), qtype)
		resp, err := r.forward(q, false)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if resp.Rcode != dns.RcodeSuccess {
			errs = append(errs, fmt.Errorf("%s %s: %s", host, dns.TypeToString[qtype], dns.RcodeToString[resp.Rcode]))
			continue
		}
		for _, rr := range resp.Answer {
			if a, ok := answerAddr(rr); ok {
				addrs = append(addrs, a.Unmap())
			}
		}
	}
	if len(addrs) == 0 && len(errs) > 0 {
		return nil, fmt.Errorf("looking up %s: %w", host, errors.Join(errs...))
	}
	return addrs, nil
}

// ServeUDP answers queries arriving on pc until Shutdown.
func (r *Resolver) ServeUDP(pc net.PacketConn) error {
	return r.serve(&dns.Server{PacketConn: pc, Handler: r})
}

// ServeTCP answers queries on connections accepted from l until Shutdown.
func (r *Resolver) ServeTCP(l net.Listener) error {
	return r.serve(&dns.Server{Listener: &identifyingListener{Listener: l, r: r}, Handler: r})
}

func (r *Resolver) serve(s *dns.Server) error {
	r.mu.Lock()
	r.servers = append(r.servers, s)
	r.mu.Unlock()
	if err := s.ActivateAndServe(); err != nil {
		return fmt.Errorf("serving DNS: %w", err)
	}
	return nil
}

// Shutdown stops every server.
func (r *Resolver) Shutdown(ctx context.Context) error {
	r.mu.Lock()
	servers := r.servers
	r.servers = nil
	r.mu.Unlock()
	var errs []error
	for _, s := range servers {
		if err := s.ShutdownContext(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// identifyingListener looks up each accepted connection's agent once (the
// kernel's TCP record is taken at the first lookup) and keeps it for the
// connection's queries.
type identifyingListener struct {
	net.Listener
	r *Resolver
}

type identifiedConn struct {
	net.Conn
	key  string
	r    *Resolver
	once sync.Once
}

func (c *identifiedConn) Close() error {
	c.once.Do(func() { c.r.tcp.Delete(c.key) })
	return c.Conn.Close()
}

func connKey(remote, local net.Addr) string { return remote.String() + "|" + local.String() }

func (l *identifyingListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		o, err := l.r.cfg.Identify.Origin(addrPort(c.RemoteAddr()), addrPort(c.LocalAddr()))
		if err != nil || o.Agent == "" {
			l.r.recordUnidentified(c.RemoteAddr(), c.LocalAddr(), o, unidentifiedTCP)
			c.Close()
			continue
		}
		key := connKey(c.RemoteAddr(), c.LocalAddr())
		l.r.tcp.Store(key, o)
		return &identifiedConn{Conn: c, key: key, r: l.r}, nil
	}
}

func addrPort(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.UDPAddr:
		return a.AddrPort()
	case *net.TCPAddr:
		return a.AddrPort()
	}
	return netip.AddrPort{}
}

// origin names the agent that sent the query w carries.
func (r *Resolver) origin(w dns.ResponseWriter) (Origin, bool) {
	if _, ok := w.RemoteAddr().(*net.TCPAddr); ok {
		v, ok := r.tcp.Load(connKey(w.RemoteAddr(), w.LocalAddr()))
		if !ok {
			return Origin{}, false
		}
		return v.(Origin), true
	}
	o, err := r.cfg.Identify.QueryOrigin(addrPort(w.RemoteAddr()), addrPort(w.LocalAddr()))
	return o, err == nil && o.Agent != ""
}

// ServeDNS answers one query: REFUSED when the sender is no known agent,
// NXDOMAIN for a name none of the agent's rules names, an empty answer for
// HTTPS and SVCB records (so clients neither try HTTP/3, which is denied,
// nor ECH, which hides the name from the proxy), otherwise what the first
// upstream that answers says, with its addresses recorded for the agent
// before the answer is sent.
func (r *Resolver) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	resp := new(dns.Msg)
	if req.Opcode != dns.OpcodeQuery || len(req.Question) != 1 {
		resp.SetRcode(req, dns.RcodeNotImplemented)
		w.WriteMsg(resp)
		return
	}
	q := req.Question[0]
	o, ok := r.origin(w)
	if !ok {
		r.recordUnidentified(w.RemoteAddr(), w.LocalAddr(), o, unidentifiedUDP)
		resp.SetRcode(req, dns.RcodeRefused)
		w.WriteMsg(resp)
		return
	}
	log := r.cfg.Logger.With("agent", o.Agent, "name", q.Name, "type", dns.TypeToString[q.Qtype])
	rec := Query{Origin: o, Name: normName(q.Name), Type: dns.TypeToString[q.Qtype]}
	if !r.cfg.Policy.AllowsName(o.Agent, q.Name) {
		log.Info("DNS query answered NXDOMAIN: no rule names it")
		rec.Decision, rec.Reason = "deny", "no rule names it"
		r.recordQuery(rec, log)
		resp.SetRcode(req, dns.RcodeNameError)
		w.WriteMsg(resp)
		return
	}
	if q.Qtype == dns.TypeHTTPS || q.Qtype == dns.TypeSVCB {
		resp.SetReply(req)
		w.WriteMsg(resp)
		return
	}
	rec.Decision = "allow"
	if err := r.recordQuery(rec, log); err != nil {
		resp.SetRcode(req, dns.RcodeServerFailure)
		w.WriteMsg(resp)
		return
	}
	_, tcp := w.RemoteAddr().(*net.TCPAddr)
	up, err := r.forward(req, tcp)
	if err != nil {
		log.Warn("DNS query failed upstream", "err", err)
		resp.SetRcode(req, dns.RcodeServerFailure)
		w.WriteMsg(resp)
		return
	}
	r.record(o.Agent, q.Name, up)
	up.Id = req.Id
	if !tcp {
		up.Truncate(udpSize(req))
	}
	log.Debug("DNS query answered", "rcode", dns.RcodeToString[up.Rcode], "answers", len(up.Answer))
	w.WriteMsg(up)
}

func (r *Resolver) recordQuery(q Query, log *slog.Logger) error {
	if r.cfg.Recorder == nil {
		return nil
	}
	err := r.cfg.Recorder.Query(q)
	if err != nil {
		log.Error("DNS query not recorded in the audit log; not forwarded", "err", err)
	}
	return err
}

// forward asks the upstreams in order; over TCP when the agent asked over
// TCP, or when a UDP answer came back truncated.
func (r *Resolver) forward(req *dns.Msg, tcp bool) (*dns.Msg, error) {
	q := req.Copy()
	var errs []error
	for _, u := range r.cfg.Upstreams {
		network := "udp"
		if tcp {
			network = "tcp"
		}
		c := &dns.Client{Net: network, Timeout: r.cfg.Timeout}
		resp, _, err := c.Exchange(q, u.String())
		if err == nil && resp.Truncated && network == "udp" {
			c.Net = "tcp"
			resp, _, err = c.Exchange(q, u.String())
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", u, err))
			continue
		}
		return resp, nil
	}
	return nil, errors.Join(errs...)
}

// record remembers the A and AAAA answers for the name the agent asked
// (through any CNAMEs) until their TTL, clamped, has passed.
func (r *Resolver) record(agent, name string, m *dns.Msg) {
	now := r.cfg.Now()
	for _, rr := range m.Answer {
		a, ok := answerAddr(rr)
		if !ok {
			continue
		}
		ttl := min(max(time.Duration(rr.Header().Ttl)*time.Second, r.cfg.MinTTL), r.cfg.MaxTTL)
		if !r.names.add(agent, name, a, now.Add(ttl), now) {
			r.cfg.Logger.Warn("resolved names table full for agent; answer not recorded", "agent", agent)
			return
		}
	}
}

// answerAddr is the address an A or AAAA record holds.
func answerAddr(rr dns.RR) (netip.Addr, bool) {
	switch rr := rr.(type) {
	case *dns.A:
		return netip.AddrFromSlice(rr.A)
	case *dns.AAAA:
		return netip.AddrFromSlice(rr.AAAA)
	}
	return netip.Addr{}, false
}

// udpSize is the largest UDP answer the client accepts.
func udpSize(req *dns.Msg) int {
	if o := req.IsEdns0(); o != nil {
		return max(int(o.UDPSize()), dns.MinMsgSize)
	}
	return dns.MinMsgSize
}
