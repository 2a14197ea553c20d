package resolver

import (
	"net/netip"
	"strings"
	"sync"
	"time"
)

// maxNamesPerAgent bounds the table: an agent resolving ever new names cannot
// grow the daemon without limit. Past it, expired entries are swept; if none
// are, new answers are not recorded (their connections are then refused:
// fail closed).
const maxNamesPerAgent = 65536

// nameKey is one resolved name and address.
type nameKey struct {
	name string
	addr netip.Addr
}

// table records, per agent, until when each (name, address) pair is valid.
type table struct {
	mu     sync.Mutex
	agents map[string]map[nameKey]time.Time
	// nextSweep is, per agent whose table is full, the earliest expiry seen by the last
	// sweep: no entry can be swept before then, so add does not scan the table again
	// (an agent asking for new names of a wildcard rule would otherwise make every answer
	// scan 65,536 entries under the lock the proxy's lookups take).
	nextSweep map[string]time.Time
}

func normName(name string) string {
	return strings.ToLower(strings.TrimSuffix(name, "."))
}

// add records that name resolved to addr for agent until expiry. It reports
// false if the agent's table is full.
func (t *table) add(agent, name string, addr netip.Addr, expiry, now time.Time) bool {
	k := nameKey{normName(name), addr.Unmap()}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.agents == nil {
		t.agents = map[string]map[nameKey]time.Time{}
	}
	m := t.agents[agent]
	if m == nil {
		m = map[nameKey]time.Time{}
		t.agents[agent] = m
	}
	if _, ok := m[k]; !ok && len(m) >= maxNamesPerAgent {
		if now.Before(t.nextSweep[agent]) {
			return false
		}
		var earliest time.Time
		for key, exp := range m {
			switch {
			case !exp.After(now):
				delete(m, key)
			case earliest.IsZero() || exp.Before(earliest):
				earliest = exp
			}
		}
		if len(m) >= maxNamesPerAgent {
			if t.nextSweep == nil {
				t.nextSweep = map[string]time.Time{}
			}
			t.nextSweep[agent] = earliest
			return false
		}
		delete(t.nextSweep, agent)
	}
	if expiry.After(m[k]) {
		m[k] = expiry
	}
	return true
}

// has reports whether name resolved to addr for agent and has not expired.
func (t *table) has(agent, name string, addr netip.Addr, now time.Time) bool {
	k := nameKey{normName(name), addr.Unmap()}
	t.mu.Lock()
	defer t.mu.Unlock()
	exp, ok := t.agents[agent][k]
	return ok && exp.After(now)
}
