package hostagent

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/BurntSushi/toml"

	"github.com/wirken/wirken/resolver"
)

// defaultDNSPort is where the resolver listens (127.0.0.1 and [::1], UDP and TCP) unless
// [dns] port says otherwise.
const defaultDNSPort = 15053

// resolvConf is where the upstream resolvers come from when [dns] upstreams is empty.
const resolvConf = "/etc/resolv.conf"

// dnsDefaults fills and checks [dns] and proxy.ipv6 (the settings of the kernel-enforcement
// work); it returns the errors found, naming file, line and field.
func (c *Config) dnsDefaults(data []byte) []string {
	var errs []string
	at := func(k ...string) string {
		return keyAt(c.path, data, append(toml.Key{"dns"}, k...))
	}
	if c.DNS.Port == 0 {
		c.DNS.Port = defaultDNSPort
	}
	if c.DNS.Port < 1 || c.DNS.Port > 65535 {
		errs = append(errs, fmt.Sprintf("%s: %d is not a port", at("port"), c.DNS.Port))
	} else if c.DNS.Port == c.Proxy.Port {
		errs = append(errs, fmt.Sprintf("%s: %d is the proxy's port", at("port"), c.DNS.Port))
	}
	for _, u := range c.DNS.Upstreams {
		ap, err := resolver.ParseUpstream(u)
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", at("upstreams"), err))
			continue
		}
		if slices.ContainsFunc(c.dnsListenAddrs(), func(l netip.AddrPort) bool {
			return l.Addr() == ap.Addr().Unmap() && l.Port() == ap.Port()
		}) {
			errs = append(errs, fmt.Sprintf("%s: %q is wirken's own resolver (it would ask itself)", at("upstreams"), u))
		}
	}
	switch c.Proxy.IPv6 {
	case "":
		c.Proxy.IPv6 = "proxy"
	case "proxy", "refuse":
	default:
		errs = append(errs, fmt.Sprintf("%s: %q is not one of proxy, refuse", keyAt(c.path, data, toml.Key{"proxy", "ipv6"}), c.Proxy.IPv6))
	}
	if c.DNS.RequireResolved == nil {
		on := true
		c.DNS.RequireResolved = &on
	}
	return errs
}

// dnsListenAddrs are the resolver's own addresses (an upstream there would loop).
func (c *Config) dnsListenAddrs() []netip.AddrPort {
	p := uint16(c.DNS.Port)
	return []netip.AddrPort{
		netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), p),
		netip.AddrPortFrom(netip.IPv6Loopback(), p),
	}
}

// dnsUpstreams are the configured upstream resolvers, or those of /etc/resolv.conf.
func (c *Config) dnsUpstreams() ([]netip.AddrPort, error) {
	if len(c.DNS.Upstreams) == 0 {
		ups, err := resolver.SystemUpstreams(resolvConf, c.dnsListenAddrs()...)
		if err != nil {
			return nil, fmt.Errorf("%w (set [dns] upstreams in %s)", err, c.path)
		}
		return ups, nil
	}
	var ups []netip.AddrPort
	for _, u := range c.DNS.Upstreams {
		ap, err := resolver.ParseUpstream(u)
		if err != nil {
			return nil, err
		}
		ups = append(ups, ap)
	}
	return ups, nil
}
