package resolver

import (
	"net"
	"net/netip"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/wirken/wirken/internal/fuzzseed"
	"github.com/wirken/wirken/policy"
)

// fuzzIdentifier names every sender agent "demo", or none.
type fuzzIdentifier struct{ known bool }

func (f *fuzzIdentifier) QueryOrigin(client, local netip.AddrPort) (Origin, error) {
	if !f.known {
		return Origin{}, os.ErrNotExist
	}
	return Origin{Agent: "demo", Dst: local}, nil
}

func (f *fuzzIdentifier) Origin(client, local netip.AddrPort) (Origin, error) {
	return f.QueryOrigin(client, local)
}

// fuzzWriter is a dns.ResponseWriter that keeps what the resolver answers.
type fuzzWriter struct {
	remote, local net.Addr
	out           []*dns.Msg
}

func (w *fuzzWriter) LocalAddr() net.Addr  { return w.local }
func (w *fuzzWriter) RemoteAddr() net.Addr { return w.remote }
func (w *fuzzWriter) WriteMsg(m *dns.Msg) error {
	w.out = append(w.out, m.Copy())
	return nil
}
func (w *fuzzWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *fuzzWriter) Close() error                { return nil }
func (w *fuzzWriter) TsigStatus() error           { return nil }
func (w *fuzzWriter) TsigTimersOnly(bool)         {}
func (w *fuzzWriter) Hijack()                     {}

// dnsSeed is a query as an agent's stub resolver sends it.
func dnsSeed(f *testing.F, name string, qtype uint16, edns bool) []byte {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.Id = 0x1234
	if edns {
		m.SetEdns0(1232, true)
	}
	b, err := m.Pack()
	if err != nil {
		f.Fatalf("%s: %v", name, err)
	}
	return b
}

// FuzzServeDNS hands the resolver's query handler arbitrary DNS messages, from a known agent
// or not, over UDP or TCP, with a loopback upstream and the example policy (agent demo may
// resolve api.example.test, pypi.test and *.pythonhosted.test). It must answer every message
// exactly once with the query's id, never panic, refuse senders that are no agent, answer
// NXDOMAIN for names no rule names, and ask the upstream only names the policy allows, each
// after an "allow" audit record for it.
func FuzzServeDNS(f *testing.F) {
	seeds := fuzzseed.New(f)
	for _, s := range []struct {
		name  string
		qtype uint16
		edns  bool
	}{
		{"api.example.test.", dns.TypeA, false},
		{"API.Example.Test.", dns.TypeAAAA, true},
		{"files.pythonhosted.test.", dns.TypeA, true},
		{"pypi.test.", dns.TypeHTTPS, false},
		{"evil.test.", dns.TypeA, false},
		{"api.example.test.", dns.TypeTXT, true},
		{"x\\.y.pythonhosted.test.", dns.TypeA, false},
	} {
		seeds.Add(dnsSeed(f, s.name, s.qtype, s.edns), true, false)
	}
	seeds.Add(dnsSeed(f, "api.example.test.", dns.TypeA, false), false, false)
	seeds.Add(dnsSeed(f, "api.example.test.", dns.TypeA, true), true, true)
	two := new(dns.Msg)
	two.Question = []dns.Question{{Name: "api.example.test.", Qtype: dns.TypeA, Qclass: dns.ClassINET}, {Name: "evil.test.", Qtype: dns.TypeA, Qclass: dns.ClassINET}}
	b, _ := two.Pack()
	seeds.Add(b, true, false)
	upd := new(dns.Msg)
	upd.SetUpdate("example.test.")
	b, _ = upd.Pack()
	seeds.Add(b, true, false)
	// A long label, as DNS exfiltration through an allowed wildcard would send.
	seeds.Add(dnsSeed(f, "aGVsbG8gd29ybGQgc2VjcmV0IGRhdGEgZXhmaWx0cmF0ZWQgdGhyb3VnaCBsYWJ.c2VjcmV0.pythonhosted.test.", dns.TypeA, false), true, false)

	pol, err := policy.Load("../policy/testdata/example.toml")
	if err != nil {
		f.Fatal(err)
	}
	up := startUpstream(f)
	id := &fuzzIdentifier{}
	rec := &fakeRecorder{}
	r, err := New(Config{
		Upstreams: []netip.AddrPort{up.addr},
		Identify:  id,
		Policy:    pol,
		Recorder:  rec,
		Timeout:   300 * time.Millisecond,
	})
	if err != nil {
		f.Fatal(err)
	}
	local := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53}
	f.Fuzz(func(t *testing.T, wire []byte, known, tcp bool) {
		req := new(dns.Msg)
		if req.Unpack(wire) != nil {
			return // the dns server answers FORMERR before the handler runs
		}
		id.known = known
		w := &fuzzWriter{remote: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}, local: local}
		if tcp {
			w.remote, w.local = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53}
			key := connKey(w.remote, w.local)
			r.tcp.Delete(key)
			if known {
				r.tcp.Store(key, Origin{Agent: "demo"})
			}
		}
		askedBefore, recBefore := len(up.queries()), len(rec.all())
		r.ServeDNS(w, req)
		asked, recs := up.queries()[askedBefore:], rec.all()[recBefore:]

		if len(w.out) != 1 {
			t.Fatalf("%d answers to one query", len(w.out))
		}
		resp := w.out[0]
		if resp.Id != req.Id || !resp.Response {
			t.Fatalf("answer id %d response %v; query id %d", resp.Id, resp.Response, req.Id)
		}
		if _, err := resp.Pack(); err != nil {
			t.Fatalf("answer does not pack: %v", err)
		}
		single := req.Opcode == dns.OpcodeQuery && len(req.Question) == 1
		switch {
		case !single:
			if resp.Rcode != dns.RcodeNotImplemented {
				t.Fatalf("rcode %s for opcode %d with %d questions", dns.RcodeToString[resp.Rcode], req.Opcode, len(req.Question))
			}
		case !known:
			if resp.Rcode != dns.RcodeRefused {
				t.Fatalf("rcode %s for a sender that is no agent", dns.RcodeToString[resp.Rcode])
			}
		case !pol.AllowsName("demo", req.Question[0].Name):
			if resp.Rcode != dns.RcodeNameError {
				t.Fatalf("rcode %s for %q, which no rule names", dns.RcodeToString[resp.Rcode], req.Question[0].Name)
			}
			if len(recs) != 1 || recs[0].Decision != "deny" || recs[0].Name != normName(req.Question[0].Name) {
				t.Fatalf("denial recorded as %+v", recs)
			}
		}
		if (!single || !known) && len(asked) > 0 {
			t.Fatalf("refused query forwarded %q", asked)
		}
		if !known {
			// Unidentified traffic is audited (rate limited: at most one record per query),
			// as a denial naming no agent.
			if len(recs) > 1 || len(recs) == 1 && (recs[0].Decision != "deny" || recs[0].Origin.Agent != "") {
				t.Fatalf("query from no agent recorded as %+v", recs)
			}
		} else if !single && len(recs) > 0 {
			t.Fatalf("refused query recorded %+v", recs)
		}
		if !tcp && len(req.Question) == 1 {
			if b, _ := resp.Pack(); len(b) > udpSize(req) {
				t.Fatalf("UDP answer of %d bytes; the client takes %d", len(b), udpSize(req))
			}
		}
		for _, name := range asked {
			if !pol.AllowsName("demo", name) {
				t.Fatalf("upstream asked %q, which no rule names", name)
			}
			if !slices.ContainsFunc(recs, func(q Query) bool { return q.Decision == "allow" && q.Name == normName(name) }) {
				t.Fatalf("upstream asked %q without an allow record (records %+v)", name, recs)
			}
		}
		if len(asked) > 2 {
			t.Fatalf("one query asked the upstream %d times", len(asked))
		}
	})
}

// FuzzNameTable runs a sequence of adds and lookups against the resolved-names table and a
// plain map: a name is found for an agent and address only until the latest expiry recorded
// for it, in any case and with or without a trailing dot, and never for another agent.
func FuzzNameTable(f *testing.F) {
	seeds := fuzzseed.New(f)
	seeds.Add([]byte{0, 1, 2, 10, 1, 1, 2, 0, 2, 1, 3, 0})
	seeds.Add([]byte("\x00\x00\x00\x05\x00\x00\x00\x01\x01\x00\x00\x09"))
	seeds.Add([]byte{})
	names := []string{"api.example.test", "API.example.test.", "b.test", "c.test."}
	addrs := []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("::ffff:192.0.2.1"), netip.MustParseAddr("2001:db8::1")}
	agents := []string{"a", "b"}
	f.Fuzz(func(t *testing.T, ops []byte) {
		var tb table
		type key struct {
			agent, name string
			addr        netip.Addr
		}
		model := map[key]time.Time{}
		now := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
		for len(ops) >= 4 {
			op, agent, name, addr := ops[0]%3, agents[ops[1]%2], names[ops[2]%4], addrs[ops[3]%3]
			arg := 0
			if len(ops) >= 5 {
				arg = int(ops[4])
			}
			ops = ops[min(5, len(ops)):]
			k := key{agent, normName(name), addr.Unmap()}
			switch op {
			case 0:
				exp := now.Add(time.Duration(arg) * time.Second)
				if !tb.add(agent, name, addr, exp, now) {
					t.Fatal("a small table refused a name")
				}
				if exp.After(model[k]) {
					model[k] = exp
				}
			case 1:
				now = now.Add(time.Duration(arg) * time.Second)
			}
			want := model[k].After(now)
			if got := tb.has(agent, name, addr, now); got != want {
				t.Fatalf("has(%s, %s, %s) = %v, want %v", agent, name, addr, got, want)
			}
			other := agents[(ops0(agent)+1)%2]
			if tb.has(other, name, addr, now) != model[key{other, normName(name), addr.Unmap()}].After(now) {
				t.Fatalf("agent %s sees agent %s's names", other, agent)
			}
		}
	})
}

func ops0(agent string) int {
	if agent == "a" {
		return 0
	}
	return 1
}

// FuzzParseUpstream: an accepted upstream prints back to itself, with IPv4-mapped addresses
// unmapped and port 53 by default.
func FuzzParseUpstream(f *testing.F) {
	seeds := fuzzseed.New(f)
	for _, s := range []string{"192.0.2.53", "192.0.2.53:5353", "[2001:db8::53]:53", "2001:db8::53", "::ffff:10.0.0.1", "[fe80::1%eth0]:53", "", "1.2.3.4:99999", "host:53", "[::%00]:53", "192.0.2.1%eth0"} {
		seeds.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ap, err := ParseUpstream(s)
		if err != nil {
			return
		}
		if ap.Addr().Is4In6() || !ap.IsValid() || ap.Addr().Zone() != "" && !ap.Addr().IsLinkLocalUnicast() {
			t.Fatalf("ParseUpstream(%q) = %v", s, ap)
		}
		if _, perr := netip.ParseAddrPort(s); perr != nil && ap.Port() != 53 {
			t.Fatalf("ParseUpstream(%q) = %v: no port given, want 53", s, ap)
		}
		again, err := ParseUpstream(ap.String())
		if err != nil || again != ap {
			t.Fatalf("ParseUpstream(%q) = %v; its string %q parses as %v, %v", s, ap, ap.String(), again, err)
		}
	})
}

// FuzzSystemUpstreams reads arbitrary resolv.conf files: the upstreams are valid, unmapped,
// distinct, never one of wirken's own listeners, and there is at least one unless it errs.
func FuzzSystemUpstreams(f *testing.F) {
	seeds := fuzzseed.New(f)
	seeds.Add("nameserver 192.0.2.53\nnameserver 2001:db8::53\nsearch example.test\noptions ndots:2\n")
	seeds.Add("# systemd-resolved\nnameserver 127.0.0.53\noptions edns0 trust-ad\n")
	seeds.Add("nameserver 127.0.0.1\nport 15053\nnameserver ::ffff:127.0.0.1\nnameserver fe80::1%eth0\nnameserver 192.0.2.53\nnameserver 192.0.2.53\n")
	seeds.Add("nameserver\nnameserver nope\n")
	seeds.Add("")
	self := []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:53"), netip.MustParseAddrPort("[::1]:53")}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, conf string) {
		path := dir + "/resolv.conf"
		if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		ups, err := SystemUpstreams(path, self...)
		if err != nil {
			if len(ups) != 0 {
				t.Fatal("upstreams returned with an error")
			}
			return
		}
		if len(ups) == 0 {
			t.Fatal("no upstream and no error")
		}
		for i, u := range ups {
			if !u.IsValid() || u.Addr().Is4In6() || u.Addr().Zone() != "" && !u.Addr().IsLinkLocalUnicast() || u.Port() == 0 || slices.Contains(self, u) || slices.Contains(ups[:i], u) {
				t.Fatalf("upstream %v of %v", u, ups)
			}
		}
	})
}
