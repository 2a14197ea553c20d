package bpf

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/wirken/wirken/internal/fuzzseed"
)

func TestConfigValidate(t *testing.T) {
	good := Config{
		AgentsCgroup: "/sys/fs/cgroup/unified/wirken/agents",
		AgentLevel:   3,
		PinDir:       "/sys/fs/bpf/wirken/v1",
		ProxyPort:    15001,
	}
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantErr string // "" = valid
	}{
		{"valid", func(*Config) {}, ""},
		{"relative agents cgroup", func(c *Config) { c.AgentsCgroup = "wirken/agents" }, "absolute"},
		{"empty agents cgroup", func(c *Config) { c.AgentsCgroup = "" }, "absolute"},
		{"agent level 0", func(c *Config) { c.AgentLevel = 0 }, "agent level"},
		{"relative pin dir", func(c *Config) { c.PinDir = "bpf/wirken" }, "absolute"},
		{"empty pin dir", func(c *Config) { c.PinDir = "" }, "absolute"},
		{"pin dir is bpffs root", func(c *Config) { c.PinDir = "/sys/fs/bpf/" }, "below the bpffs root"},
		{"proxy port 0", func(c *Config) { c.ProxyPort = 0 }, "proxy port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good
			tt.mutate(&c)
			err := c.validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("validate() = %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestAddr16(t *testing.T) {
	tests := []struct {
		in   string
		want string // as an IPv6 address
	}{
		{"1.2.3.4", "::ffff:1.2.3.4"},
		{"127.0.0.1", "::ffff:127.0.0.1"},
		{"::ffff:1.2.3.4", "::ffff:1.2.3.4"},
		{"::1", "::1"},
		{"2001:db8::2", "2001:db8::2"},
		{"fe80::1%eth0", "fe80::1"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got := addr16(netip.MustParseAddr(tt.in))
			want := netip.MustParseAddr(tt.want).As16()
			if got != want {
				t.Fatalf("addr16(%s) = %x, want %x", tt.in, got, want)
			}
		})
	}
}

func TestDstFrom(t *testing.T) {
	tests := []struct {
		addr string // as stored in the map
		port uint16
		want string
	}{
		{"::ffff:93.184.216.34", 443, "93.184.216.34:443"},
		{"::ffff:127.0.0.2", 8080, "127.0.0.2:8080"},
		{"2001:db8::1", 443, "[2001:db8::1]:443"},
		{"::2", 1, "[::2]:1"},
		{"::", 65535, "[::]:65535"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			got := dstFrom(netip.MustParseAddr(tt.addr).As16(), tt.port)
			if got != netip.MustParseAddrPort(tt.want) {
				t.Fatalf("dstFrom(%s, %d) = %s, want %s", tt.addr, tt.port, got, tt.want)
			}
		})
	}
}

func comm(s string) [16]int8 {
	var c [16]int8
	for i := 0; i < len(s) && i < len(c); i++ {
		c[i] = int8(s[i])
	}
	return c
}

func TestCommString(t *testing.T) {
	tests := []struct {
		name string
		in   [16]int8
		want string
	}{
		{"empty", [16]int8{}, ""},
		{"short", comm("curl"), "curl"},
		{"full 16 bytes, no NUL", comm("0123456789abcdef"), "0123456789abcdef"},
		{"stops at first NUL", comm("py\x00thon"), "py"},
		{"invalid UTF-8 replaced", comm("a\xffb"), "a\uFFFDb"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := commString(tt.in); got != tt.want {
				t.Fatalf("commString() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestErrorsAreDistinct(t *testing.T) {
	if errors.Is(ErrNoOrigin, ErrNotSupported) || errors.Is(ErrNotSupported, ErrNoOrigin) {
		t.Fatal("ErrNoOrigin and ErrNotSupported must not match each other")
	}
}

func FuzzCommString(f *testing.F) {
	seeds := fuzzseed.New(f)
	seeds.Add([]byte("curl"))
	seeds.Add([]byte("a\xffb\x00c"))
	seeds.Add([]byte("0123456789abcdefXYZ"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var c [16]int8
		for i := 0; i < len(b) && i < len(c); i++ {
			c[i] = int8(b[i])
		}
		s := commString(c)
		if !utf8.ValidString(s) {
			t.Fatalf("commString returned invalid UTF-8 %q", s)
		}
		if strings.ContainsRune(s, 0) {
			t.Fatalf("commString returned a NUL: %q", s)
		}
		if len(s) > 16*len("\uFFFD") {
			t.Fatalf("commString returned %d bytes from 16", len(s))
		}
	})
}

func FuzzDstFrom(f *testing.F) {
	seeds := fuzzseed.New(f)
	seeds.Add(netip.MustParseAddr("::ffff:1.2.3.4").AsSlice(), uint16(443))
	seeds.Add(netip.MustParseAddr("2001:db8::1").AsSlice(), uint16(0))
	f.Fuzz(func(t *testing.T, b []byte, port uint16) {
		var a [16]byte
		copy(a[:], b)
		d := dstFrom(a, port)
		if !d.IsValid() || d.Port() != port {
			t.Fatalf("dstFrom(%x, %d) = %s", a, port, d)
		}
		if d.Addr().Is4In6() {
			t.Fatalf("dstFrom(%x) kept a v4-mapped address: %s", a, d)
		}
		if got := addr16(d.Addr()); got != a {
			t.Fatalf("addr16(dstFrom(%x)) = %x: not a round trip", a, got)
		}
	})
}
