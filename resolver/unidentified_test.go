package resolver

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// refusals returns the recorded refusals with reason, waiting up to 2 s for want of them.
func (f *fakeRecorder) refusals(reason string, want int) []Query {
	var out []Query
	for range 100 {
		out = out[:0]
		for _, q := range f.all() {
			if q.Decision == "deny" && strings.HasPrefix(q.Reason, reason) {
				out = append(out, q)
			}
		}
		if len(out) >= want {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return out
}

func TestUnidentifiedTrafficIsAudited(t *testing.T) {
	up := startUpstream(t)
	r := startResolver(t, up.addr)
	r.id.allUnknown.Store(true)

	if m := ask(t, "udp", r.udp, "api.example.test.", dns.TypeA); m.Rcode != dns.RcodeRefused {
		t.Fatalf("UDP from an unknown sender: %s; want REFUSED", dns.RcodeToString[m.Rcode])
	}
	if got := r.rec.refusals(unidentifiedUDP, 1); len(got) != 1 || got[0].Agent != "" || got[0].Dst.String() != r.udp {
		t.Fatalf("records of the refused UDP query: %+v; want one, with no agent and the resolver's address", got)
	}
	// TCP: closed unanswered and audited, at most 20 at once (one went to the UDP query above);
	// a later record counts the ones left out.
	for range 25 {
		c, err := net.Dial("tcp", r.tcp)
		if err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, _ := c.Read(make([]byte, 1)); n != 0 {
			t.Fatal("the resolver answered an unidentified TCP connection")
		}
		c.Close()
	}
	got := r.rec.refusals(unidentifiedTCP, 19)
	if len(got) != 19 || got[0].Dst.String() != r.tcp {
		t.Fatalf("%d records of refused TCP connections (%+v); want 19 (the burst less the UDP one)", len(got), got)
	}
	r.now.Add(int64(100 * time.Millisecond)) // the resolver's clock: a token comes back every 50 ms
	c, err := net.Dial("tcp", r.tcp)
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	c.Read(make([]byte, 1))
	c.Close()
	got = r.rec.refusals(unidentifiedTCP, 20)
	if len(got) != 20 || !strings.HasSuffix(got[19].Reason, "(and 6 more not recorded)") {
		t.Fatalf("the record after the burst: %+v; want it to count 6 left out", got[len(got)-1])
	}
	if len(up.queries()) != 0 {
		t.Fatal("something was forwarded")
	}
}
