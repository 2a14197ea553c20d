package mitm

import (
	"context"
	"net/netip"
)

// Names tells whether an agent resolved a name to an address through wirken's resolver, and
// the answer is still within its TTL.
type Names interface {
	Resolved(agent, host string, addr netip.Addr) bool
}

// Addresses looks up a name's IPv4 and IPv6 addresses.
type Addresses interface {
	LookupNetIP(ctx context.Context, host string) ([]netip.Addr, error)
}

// agentResolved reports whether the connection's destination is an address the agent
// resolved host to (always true without Config.Names). A host that is an IP address literal
// needs no resolving: it must be the destination itself.
func (p *Proxy) agentResolved(o Origin, host string) bool {
	if a, err := netip.ParseAddr(host); err == nil {
		return a.Unmap() == o.Dst.Addr().Unmap()
	}
	if p.cfg.Names == nil {
		return true
	}
	return p.cfg.Names.Resolved(o.Agent, host, o.Dst.Addr())
}

func unresolvedReason(o Origin, host string) string {
	return "destination " + o.Dst.Addr().String() + " is not an address agent " + o.Agent + " resolved " + host + " to"
}
