package mitm

// Connections is the number of agent connections open now (being peeked, intercepted or
// spliced).
func (p *Proxy) Connections() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}
