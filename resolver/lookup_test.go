package resolver

import (
	"context"
	"net/netip"
	"slices"
	"testing"
)

// The proxy's own lookups go to the same upstreams as agents' DNS, and leave no trace in
// the agents' resolved names or the audit.
func TestLookupNetIP(t *testing.T) {
	up := startUpstream(t)
	tr := startResolver(t, up.addr)
	got, err := tr.LookupNetIP(context.Background(), "api.example.test")
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Addr{netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("2001:db8::2")}
	if !slices.Equal(got, want) {
		t.Fatalf("LookupNetIP(api.example.test) = %v, want %v", got, want)
	}
	if q := up.queries(); !slices.Equal(q, []string{"api.example.test.", "api.example.test."}) {
		t.Fatalf("the upstream was asked %v; want A and AAAA for api.example.test", q)
	}
	if tr.Resolved("a", "api.example.test", want[0]) || len(tr.rec.all()) != 0 {
		t.Fatal("the proxy's own lookup was recorded as an agent's")
	}
	// Through a CNAME, the final address.
	if got, err := tr.LookupNetIP(context.Background(), "alias.example.test"); err != nil || !slices.Contains(got, netip.MustParseAddr("192.0.2.9")) {
		t.Fatalf("LookupNetIP(alias.example.test) = %v, %v", got, err)
	}
	if got, err := tr.LookupNetIP(context.Background(), "nowhere.example.test"); err == nil {
		t.Fatalf("LookupNetIP of an unknown name = %v, want an error", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := tr.LookupNetIP(ctx, "api.example.test"); err == nil {
		t.Fatal("LookupNetIP with a cancelled context succeeded")
	}
}
