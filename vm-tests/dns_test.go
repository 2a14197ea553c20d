//go:build linux

package vmtests

import (
	"sync"
	"testing"

	"github.com/wirken/wirken/demo/zone"
)

// dnsUpstream is the upstream resolver the daemon forwards agents' allowed names to: a
// loopback server with A records that logs what it was asked. A test may change a record
// (set), as a zone's owner would; wirken's resolver keeps no cache, so the next query sees it.
type dnsUpstream struct {
	addr  string
	z     *zone.Server // nil for a server a test runs itself (asked is then its log)
	mu    sync.Mutex
	asked []string
}

func (u *dnsUpstream) queries() []string {
	if u.z != nil {
		return u.z.Queries()
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.asked...)
}

// set points name at ip from the next query on.
func (u *dnsUpstream) set(name, ip string) { u.z.Set(name, ip) }

func startDNSUpstream(t *testing.T, records map[string]string) *dnsUpstream {
	t.Helper()
	z, err := zone.Start(records)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(z.Close)
	return &dnsUpstream{addr: z.Addr, z: z}
}
