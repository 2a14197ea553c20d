package policy

import "net/netip"

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

// LoopbackServices returns the loopback services agent may connect to
// directly, not through the proxy: every host:port of its passthrough rules
// whose host is a loopback IP address literal (127.0.0.0/8 or ::1). Nothing
// is decrypted on a passthrough rule anyway, and a loopback service is not
// upstream; everything else an agent connects to goes through the proxy.
func (p *Policy) LoopbackServices(agent string) []netip.AddrPort {
	ai, ok := p.index[agent]
	if !ok {
		return nil
	}
	seen := map[*rule]bool{}
	var out []netip.AddrPort
	for _, rs := range ai.byHost {
		for _, r := range rs {
			if seen[r] || r.mode != Passthrough {
				continue
			}
			seen[r] = true
			for _, h := range r.exact {
				a, err := netip.ParseAddr(h)
				if err != nil || !a.IsLoopback() {
					continue
				}
				for _, port := range r.ports {
					out = append(out, netip.AddrPortFrom(a, port))
				}
			}
		}
	}
	return out
}
