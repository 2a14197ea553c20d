package resolver

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// fakeIdentifier names every sender "a" except the ports listed as unknown.
type fakeIdentifier struct {
	unknown    sync.Map // client port -> true
	allUnknown atomic.Bool
	tcpCalls   atomic.Int32
}

func (f *fakeIdentifier) QueryOrigin(client, local netip.AddrPort) (Origin, error) {
	if _, ok := f.unknown.Load(client.Port()); ok || f.allUnknown.Load() {
		return Origin{}, errors.New("no record")
	}
	return Origin{Agent: "a", Dst: netip.MustParseAddrPort("192.0.2.53:53")}, nil
}

func (f *fakeIdentifier) Origin(client, local netip.AddrPort) (Origin, error) {
	f.tcpCalls.Add(1)
	return f.QueryOrigin(client, local)
}

type fakePolicy map[string][]string

func (p fakePolicy) AllowsName(agent, host string) bool {
	return slices.Contains(p[agent], normName(host))
}

// upstream is a loopback DNS server with fixed answers that counts queries.
type upstream struct {
	addr  netip.AddrPort
	mu    sync.Mutex
	asked []string
}

func (u *upstream) queries() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.asked)
}

func startUpstream(t testing.TB) *upstream {
	t.Helper()
	// UDP and TCP on one port: the port the kernel picks for UDP may be taken for TCP (by any
	// process's connection), so a few are tried.
	var pc net.PacketConn
	var ln net.Listener
	var err error
	for range 20 {
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		if ln, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			break
		}
		pc.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	port := pc.LocalAddr().(*net.UDPAddr).Port
	u := &upstream{addr: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port))}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		q := req.Question[0]
		u.mu.Lock()
		u.asked = append(u.asked, q.Name)
		u.mu.Unlock()
		m := new(dns.Msg)
		m.SetReply(req)
		rr := func(s string) {
			r, err := dns.NewRR(s)
			if err != nil {
				panic(err)
			}
			m.Answer = append(m.Answer, r)
		}
		switch {
		case q.Name == "api.example.test." && q.Qtype == dns.TypeA:
			rr("api.example.test. 5 IN A 127.0.0.2")
		case q.Name == "api.example.test." && q.Qtype == dns.TypeAAAA:
			rr("api.example.test. 5 IN AAAA 2001:db8::2")
		case q.Name == "alias.example.test.":
			rr("alias.example.test. 300 IN CNAME real.cdn.test.")
			rr("real.cdn.test. 300 IN A 192.0.2.9")
		case q.Name == "big.example.test.":
			for range 40 {
				rr("big.example.test. 300 IN TXT \"" + strings.Repeat("x", 200) + "\"")
			}
		default:
			m.Rcode = dns.RcodeNameError
		}
		if _, ok := w.RemoteAddr().(*net.UDPAddr); ok {
			m.Truncate(udpSize(req))
		}
		w.WriteMsg(m)
	})
	for _, s := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}} {
		go s.ActivateAndServe()
		t.Cleanup(func() { s.Shutdown() })
	}
	return u
}

type testResolver struct {
	*Resolver
	udp, tcp string
	id       *fakeIdentifier
	rec      *fakeRecorder
	now      atomic.Int64
}

// fakeRecorder keeps the queries; fail makes it refuse.
type fakeRecorder struct {
	mu   sync.Mutex
	qs   []Query
	fail atomic.Bool
}

func (f *fakeRecorder) Query(q Query) error {
	if f.fail.Load() {
		return errors.New("disk full")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.qs = append(f.qs, q)
	return nil
}

func (f *fakeRecorder) all() []Query {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.qs)
}

func startResolver(t *testing.T, ups ...netip.AddrPort) *testResolver {
	t.Helper()
	tr := &testResolver{id: &fakeIdentifier{}, rec: &fakeRecorder{}}
	tr.now.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	r, err := New(Config{
		Upstreams: ups,
		Identify:  tr.id,
		Recorder:  tr.rec,
		Policy:    fakePolicy{"a": {"api.example.test", "alias.example.test", "big.example.test", "gone.example.test"}},
		Timeout:   time.Second,
		Now:       func() time.Time { return time.Unix(0, tr.now.Load()) },
	})
	if err != nil {
		t.Fatal(err)
	}
	tr.Resolver = r
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tr.udp, tr.tcp = pc.LocalAddr().String(), ln.Addr().String()
	go r.ServeUDP(pc)
	go r.ServeTCP(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r.Shutdown(ctx)
	})
	return tr
}

func ask(t *testing.T, network, server, name string, qtype uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	var resp *dns.Msg
	var err error
	for range 50 { // the servers start asynchronously
		resp, _, err = (&dns.Client{Net: network, Timeout: 2 * time.Second}).Exchange(m, server)
		if err == nil {
			return resp
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("asking %s over %s: %v", name, network, err)
	return nil
}

func TestResolver(t *testing.T) {
	up := startUpstream(t)
	r := startResolver(t, up.addr)
	api := netip.MustParseAddr("127.0.0.2")

	resp := ask(t, "udp", r.udp, "api.example.test.", dns.TypeA)
	if resp.Rcode != dns.RcodeSuccess || len(resp.Answer) != 1 || resp.Answer[0].(*dns.A).A.String() != "127.0.0.2" {
		t.Fatalf("allowed name: %v", resp)
	}
	if !r.Resolved("a", "API.example.test.", api) || !r.Resolved("a", "api.example.test", netip.MustParseAddr("::ffff:127.0.0.2")) {
		t.Error("the answer was not recorded for the agent")
	}
	if r.Resolved("b", "api.example.test", api) || r.Resolved("a", "api.example.test", netip.MustParseAddr("127.0.0.3")) ||
		r.Resolved("a", "other.example.test", api) {
		t.Error("Resolved is true for another agent, address or name")
	}

	// A name no rule names: NXDOMAIN, and upstream never hears of it.
	resp = ask(t, "udp", r.udp, "evil.example.test.", dns.TypeA)
	if resp.Rcode != dns.RcodeNameError {
		t.Fatalf("denied name: rcode %s, want NXDOMAIN", dns.RcodeToString[resp.Rcode])
	}
	if slices.Contains(up.queries(), "evil.example.test.") {
		t.Fatal("a denied name was forwarded upstream")
	}

	// HTTPS/SVCB: empty, not forwarded.
	resp = ask(t, "udp", r.udp, "api.example.test.", dns.TypeHTTPS)
	if resp.Rcode != dns.RcodeSuccess || len(resp.Answer) != 0 {
		t.Fatalf("HTTPS record: %v, want an empty answer", resp)
	}
	if n := len(up.queries()); n != 1 {
		t.Fatalf("upstream saw %d queries (%v), want 1", n, up.queries())
	}

	// CNAME: the address counts for the name the agent asked.
	ask(t, "udp", r.udp, "alias.example.test.", dns.TypeA)
	if !r.Resolved("a", "alias.example.test", netip.MustParseAddr("192.0.2.9")) {
		t.Error("address behind a CNAME not recorded for the asked name")
	}

	// Two queries over one TCP connection: identified once.
	c, err := (&dns.Client{Net: "tcp"}).Dial(r.tcp)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		m := new(dns.Msg)
		m.SetQuestion("api.example.test.", dns.TypeAAAA)
		resp, _, err := (&dns.Client{Net: "tcp"}).ExchangeWithConn(m, c)
		if err != nil || len(resp.Answer) != 1 {
			t.Fatalf("TCP query: %v %v", resp, err)
		}
	}
	c.Close()
	if n := r.id.tcpCalls.Load(); n != 1 {
		t.Errorf("TCP connection identified %d times, want once", n)
	}
	if !r.Resolved("a", "api.example.test", netip.MustParseAddr("2001:db8::2")) {
		t.Error("AAAA over TCP not recorded")
	}

	// TTL 5s is clamped to a minute, then it expires.
	r.now.Add(int64(59 * time.Second))
	if !r.Resolved("a", "api.example.test", api) {
		t.Error("expired before the minimum TTL")
	}
	r.now.Add(int64(2 * time.Second))
	if r.Resolved("a", "api.example.test", api) {
		t.Error("still resolved after the TTL")
	}

	// A big answer over UDP is truncated; the client retries over TCP.
	resp = ask(t, "udp", r.udp, "big.example.test.", dns.TypeTXT)
	if !resp.Truncated || resp.Rcode != dns.RcodeSuccess {
		t.Errorf("big answer over UDP: rcode %s, truncated %v; want a truncated success", dns.RcodeToString[resp.Rcode], resp.Truncated)
	}
	if resp = ask(t, "tcp", r.tcp, "big.example.test.", dns.TypeTXT); len(resp.Answer) != 40 {
		t.Errorf("big answer over TCP: %d answers, want 40", len(resp.Answer))
	}
}

func TestResolverRefusesUnknownSender(t *testing.T) {
	up := startUpstream(t)
	r := startResolver(t, up.addr)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	r.id.unknown.Store(uint16(pc.LocalAddr().(*net.UDPAddr).Port), true)
	m := new(dns.Msg)
	m.SetQuestion("api.example.test.", dns.TypeA)
	dst, _ := net.ResolveUDPAddr("udp", r.udp)
	b, _ := m.Pack()
	var resp dns.Msg
	for range 50 {
		pc.WriteTo(b, dst)
		pc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		buf := make([]byte, 512)
		n, _, err := pc.ReadFrom(buf)
		if err == nil {
			if err := resp.Unpack(buf[:n]); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	if resp.Rcode != dns.RcodeRefused {
		t.Fatalf("unknown sender: rcode %s, want REFUSED", dns.RcodeToString[resp.Rcode])
	}
	if len(up.queries()) != 0 {
		t.Fatal("a query from an unknown sender was forwarded")
	}
}

func TestResolverUpstreamDown(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := pc.LocalAddr().(*net.UDPAddr).AddrPort()
	pc.Close()
	r := startResolver(t, dead)
	if resp := ask(t, "udp", r.udp, "api.example.test.", dns.TypeA); resp.Rcode != dns.RcodeServerFailure {
		t.Fatalf("upstream down: rcode %s, want SERVFAIL", dns.RcodeToString[resp.Rcode])
	}
}

func TestSystemUpstreams(t *testing.T) {
	p := filepath.Join(t.TempDir(), "resolv.conf")
	os.WriteFile(p, []byte("# comment\nnameserver 127.0.0.53\nnameserver 10.255.255.53\nnameserver ::1\nnameserver 10.255.255.53\noptions edns0\n"), 0o644)
	got, err := SystemUpstreams(p, netip.MustParseAddrPort("[::1]:53"))
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.AddrPort{netip.MustParseAddrPort("127.0.0.53:53"), netip.MustParseAddrPort("10.255.255.53:53")}
	if !slices.Equal(got, want) {
		t.Fatalf("SystemUpstreams = %v, want %v", got, want)
	}
	os.WriteFile(p, []byte("nameserver ::1\n"), 0o644)
	if _, err := SystemUpstreams(p, netip.MustParseAddrPort("[::1]:53")); err == nil {
		t.Fatal("a resolv.conf naming only ourselves was accepted")
	}
	for in, want := range map[string]string{"10.0.0.1": "10.0.0.1:53", "10.0.0.1:5353": "10.0.0.1:5353", "[::1]:54": "[::1]:54", "::1": "[::1]:53"} {
		if got, err := ParseUpstream(in); err != nil || got.String() != want {
			t.Errorf("ParseUpstream(%q) = %v, %v; want %s", in, got, err, want)
		}
	}
	if _, err := ParseUpstream("dns.example"); err == nil {
		t.Error("ParseUpstream accepted a name")
	}
}

func TestResolverRecords(t *testing.T) {
	up := startUpstream(t)
	r := startResolver(t, up.addr)
	ask(t, "udp", r.udp, "API.example.test.", dns.TypeA)
	ask(t, "udp", r.udp, "evil.example.test.", dns.TypeA)
	got := r.rec.all()
	if len(got) != 2 ||
		got[0].Agent != "a" || got[0].Name != "api.example.test" || got[0].Type != "A" || got[0].Decision != "allow" ||
		got[1].Name != "evil.example.test" || got[1].Decision != "deny" || got[1].Reason == "" {
		t.Fatalf("recorded %+v", got)
	}

	// An allowed query that cannot be recorded is not forwarded.
	r.rec.fail.Store(true)
	n := len(up.queries())
	if resp := ask(t, "udp", r.udp, "alias.example.test.", dns.TypeA); resp.Rcode != dns.RcodeServerFailure {
		t.Fatalf("unrecorded query: rcode %s, want SERVFAIL", dns.RcodeToString[resp.Rcode])
	}
	if len(up.queries()) != n {
		t.Fatal("a query that was not recorded went upstream")
	}
}
