package hostagent

import (
	"strings"
	"testing"
)

func TestDNSConfig(t *testing.T) {
	c, err := ParseConfig("/etc/wirken/wirken.toml", []byte("[dns]\nupstreams = [\"10.0.0.1\", \"[2001:db8::1]:5353\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.DNS.Port != defaultDNSPort || c.DNS.RequireResolved == nil || !*c.DNS.RequireResolved || c.Proxy.IPv6 != "proxy" {
		t.Fatalf("defaults: port %d require_resolved %v", c.DNS.Port, c.DNS.RequireResolved)
	}
	ups, err := c.dnsUpstreams()
	if err != nil || len(ups) != 2 || ups[0].String() != "10.0.0.1:53" || ups[1].String() != "[2001:db8::1]:5353" {
		t.Fatalf("upstreams = %v, %v", ups, err)
	}
	c, err = ParseConfig("/etc/wirken/wirken.toml", []byte("[dns]\nrequire_resolved = false\n"))
	if err != nil || *c.DNS.RequireResolved {
		t.Fatalf("require_resolved = false not honoured: %v", err)
	}
	for _, tt := range []struct{ src, want string }{
		{"[dns]\nport = 70000\n", "wirken.toml:2: dns.port: 70000 is not a port"},
		{"[proxy]\nport = 5353\n[dns]\nport = 5353\n", "wirken.toml:4: dns.port: 5353 is the proxy's port"},
		{"[dns]\n\nupstreams = [\"dns.example\"]\n", "wirken.toml:3: dns.upstreams: upstream \"dns.example\""},
		{"[dns]\nrequire_resolved = \"yes\"\n", "wirken.toml"},
		{"[dns]\nupstreams = [\"127.0.0.1:15053\"]\n", "wirken.toml:2: dns.upstreams: \"127.0.0.1:15053\" is wirken's own resolver"},
		{"[dns]\nport = 5300\nupstreams = [\"10.0.0.1\", \"[::1]:5300\"]\n", "wirken.toml:3: dns.upstreams: \"[::1]:5300\" is wirken's own resolver"},
		{"[dns]\nport = 5300\nupstreams = [\"[::ffff:127.0.0.1]:5300\"]\n", "wirken.toml:3: dns.upstreams: \"[::ffff:127.0.0.1]:5300\" is wirken's own resolver"},
		{"[proxy]\nipv6 = \"drop\"\n", "wirken.toml:2: proxy.ipv6: \"drop\" is not one of proxy, refuse"},
	} {
		_, err := ParseConfig("/etc/wirken/wirken.toml", []byte(tt.src))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: err = %v; want it to contain %q", tt.src, err, tt.want)
		}
	}
}
