package resolver

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"

	"github.com/miekg/dns"
)

// SystemUpstreams reads the nameservers of a resolv.conf file (normally
// /etc/resolv.conf) as the upstreams, leaving out any that is one of self
// (wirken's own listening addresses: asking those would loop). A loopback
// stub such as systemd-resolved's 127.0.0.53 is kept: the daemon's own
// queries are not steered, so it reaches the stub, not itself.
func SystemUpstreams(path string, self ...netip.AddrPort) ([]netip.AddrPort, error) {
	cc, err := dns.ClientConfigFromFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading upstream resolvers: %w", err)
	}
	port, err := strconv.Atoi(cc.Port)
	if err != nil || port < 1 || port > 65535 {
		port = 53
	}
	var out []netip.AddrPort
	for _, s := range cc.Servers {
		a, err := netip.ParseAddr(s)
		if err != nil || !zoneOK(a) {
			continue // malformed: not usable (a zone-scoped link-local entry is kept: the dialer honours its zone)
		}
		ap := netip.AddrPortFrom(a.Unmap(), uint16(port))
		if slices.Contains(self, ap) || slices.Contains(out, ap) {
			continue
		}
		out = append(out, ap)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("reading upstream resolvers: %s names no usable nameserver", path)
	}
	return out, nil
}

// zoneOK says whether a's zone, if any, means something: only a link-local address has one.
func zoneOK(a netip.Addr) bool { return a.Zone() == "" || a.IsLinkLocalUnicast() }

// ParseUpstream parses "ip" or "ip:port" (port 53 by default).
func ParseUpstream(s string) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil && zoneOK(ap.Addr()) {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || !zoneOK(a) {
		return netip.AddrPort{}, fmt.Errorf("upstream %q: want an IP address and optional port", s)
	}
	return netip.AddrPortFrom(a.Unmap(), 53), nil
}
