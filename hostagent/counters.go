package hostagent

import "sync"

// AgentCounts are an agent's totals since the daemon started, for `wirken status`.
type AgentCounts struct {
	Requests int64 `json:"requests"` // forwarded upstream
	Denials  int64 `json:"denials"`  // connections and requests refused
}

// counters keep per-agent totals beside the OTel instruments, so status needs no exporter.
type counters struct {
	mu sync.Mutex
	m  map[string]*AgentCounts
}

func (c *counters) add(agent string, requests, denials int64) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]*AgentCounts{}
	}
	n := c.m[agent]
	if n == nil {
		n = &AgentCounts{}
		c.m[agent] = n
	}
	n.Requests += requests
	n.Denials += denials
}

// snapshot copies the totals; the unnamed agent ("") is traffic from unregistered cgroups.
func (c *counters) snapshot() map[string]AgentCounts {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]AgentCounts, len(c.m))
	for k, v := range c.m {
		out[k] = *v
	}
	return out
}
