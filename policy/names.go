package policy

// AllowsName reports whether any of agent's rules names host (exactly or
// through a wildcard), on any port. wirken's resolver answers an agent only
// for such names. host may carry a trailing dot (a DNS name) and any case.
func (p *Policy) AllowsName(agent, host string) bool {
	ai, ok := p.index[agent]
	if !ok {
		return false
	}
	h, ok := normHost(host)
	if !ok {
		return false
	}
	rules, matched := ai.candidates(h)
	for _, r := range rules {
		if matched || r.matchHost(h) {
			return true
		}
	}
	return false
}
