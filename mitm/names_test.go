package mitm

import (
	"net/netip"
	"sync"
	"testing"
)

// fakeNames holds what each agent resolved.
type fakeNames struct {
	mu  sync.Mutex
	set map[string]netip.Addr // agent/host -> addr
}

func (f *fakeNames) Resolved(agent, host string, addr netip.Addr) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	a, ok := f.set[agent+"/"+host]
	return ok && a == addr.Unmap()
}

func (f *fakeNames) put(agent, host string, addr netip.Addr) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.set[agent+"/"+host] = addr
}

func TestRequireResolved(t *testing.T) {
	names := &fakeNames{set: map[string]netip.Addr{}}
	h := newHarness(t, func(c *Config) { c.Names = names })
	c := h.client("api.example.test")

	code, hdr, body, err := get(t, c, "https://api.example.test/v1/x", nil)
	if err == nil {
		t.Fatalf("a name the agent never resolved was served: %d %q %v", code, body, hdr)
	}
	if len(h.auth()) != 0 {
		t.Fatal("the upstream was reached")
	}
	if kinds := h.rec.kinds(); len(kinds) != 1 || kinds[0] != "conn.deny" {
		t.Fatalf("audit events %v, want one conn.deny", kinds)
	}

	// Resolved by another agent, or to another address: still refused.
	names.put("other", "api.example.test", h.steer.dst.Addr())
	names.put("demo", "api.example.test", netip.MustParseAddr("192.0.2.1"))
	if _, _, _, err := get(t, h.client("api.example.test"), "https://api.example.test/v1/x", nil); err == nil {
		t.Fatal("served although the agent resolved the name to another address")
	}

	names.put("demo", "api.example.test", h.steer.dst.Addr())
	code, _, body, err = get(t, h.client("api.example.test"), "https://api.example.test/v1/x", nil)
	if err != nil || code != 200 || body != "upstream api.example.test /v1/x" {
		t.Fatalf("after resolving: %d %q %v", code, body, err)
	}
	if got := h.auth(); len(got) != 1 || got[0] != "Bearer "+h.canary {
		t.Fatalf("upstream saw %q", got)
	}
}
