package zone

import (
	"slices"
	"testing"

	"github.com/miekg/dns"
)

func TestServer(t *testing.T) {
	z, err := Start(map[string]string{"API.example.test": "127.0.0.2"})
	if err != nil {
		t.Fatal(err)
	}
	defer z.Close()
	ask := func(network, name string, qtype uint16) *dns.Msg {
		t.Helper()
		q := new(dns.Msg)
		q.SetQuestion(name, qtype)
		r, _, err := (&dns.Client{Net: network}).Exchange(q, z.Addr)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	r := ask("udp", "api.example.test.", dns.TypeA)
	if len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "127.0.0.2" {
		t.Fatalf("A over UDP: %v", r)
	}
	if r := ask("tcp", "api.example.test.", dns.TypeAAAA); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
		t.Fatalf("AAAA over TCP: %v; want an empty answer", r)
	}
	if r := ask("udp", "other.example.test.", dns.TypeA); r.Rcode != dns.RcodeNameError {
		t.Fatalf("unknown name: %v; want NXDOMAIN", r)
	}
	z.Set("api.example.test", "127.0.0.9")
	if r := ask("udp", "api.example.test.", dns.TypeA); r.Answer[0].(*dns.A).A.String() != "127.0.0.9" {
		t.Fatalf("after Set: %v", r)
	}
	want := []string{"api.example.test", "api.example.test", "other.example.test", "api.example.test"}
	if got := z.Queries(); !slices.Equal(got, want) {
		t.Fatalf("Queries() = %v, want %v", got, want)
	}
	if !z.Asked("other.example.test.") || z.Asked("never.example.test") {
		t.Fatal("Asked does not match the queries")
	}
}
