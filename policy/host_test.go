package policy

import (
	"strings"
	"testing"

	"github.com/wirken/wirken/internal/fuzzseed"
)

func TestMatchHost(t *testing.T) {
	long := strings.Repeat("a", 63)
	tests := []struct {
		pattern, host string
		want          bool
	}{
		{"api.example.com", "api.example.com", true},
		{"api.example.com", "API.Example.COM", true},
		{"API.example.com.", "api.example.com", true},
		{"api.example.com", "api.example.com.", true},
		{"api.example.com", "api.example.co", false},
		{"api.example.com", "xapi.example.com", false},
		{"*.example.com", "a.example.com", true},
		{"*.example.com", "a.b.example.com", true},
		{"*.Example.com", "A.EXAMPLE.com.", true},
		{"*.example.com", "example.com", false}, // not the apex
		{"*.example.com", "aexample.com", false},
		{"*.example.com", ".example.com", false},
		{"*.example.com", "a..example.com", false},
		{"*.example.com", "a.example.com:443", false},
		{"*.example.com", "a b.example.com", false},
		{"*", "example.com", false},
		{"*.", "example.com", false},
		{"*example.com", "aexample.com", false},
		{"*..com", "a..com", false},
		{"", "", false},
		{"example.com", "", false},
		{"[::1]", "[::1]", false},
		{"127.0.0.1", "127.0.0.1", true},
		{"\u212a.test", "k.test", false}, // no Unicode case folding
		{long + ".test", long + ".test", true},
		{long + "a.test", long + "a.test", false}, // label too long
	}
	for _, tt := range tests {
		if got := MatchHost(tt.pattern, tt.host); got != tt.want {
			t.Errorf("MatchHost(%q, %q) = %v, want %v", tt.pattern, tt.host, got, tt.want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { MatchHost("*.Example.com", "A.B.EXAMPLE.COM") }); n != 0 {
		t.Errorf("MatchHost allocates %v times", n)
	}
}

func TestPatternCovers(t *testing.T) {
	tests := []struct {
		outer, inner string
		want         bool
	}{
		{"a.test", "a.test", true},
		{"a.test", "b.test", false},
		{"*.test", "a.test", true},
		{"*.test", "test", false},
		{"*.test", "*.test", true},
		{"*.test", "*.a.test", true},
		{"*.a.test", "*.test", false},
		{"*.a.test", "*.ba.test", false},
		{"a.test", "*.a.test", false},
	}
	for _, tt := range tests {
		if got := patternCovers(tt.outer, tt.inner); got != tt.want {
			t.Errorf("patternCovers(%q, %q) = %v, want %v", tt.outer, tt.inner, got, tt.want)
		}
	}
}

func TestCleanPath(t *testing.T) {
	tests := []struct {
		path string
		want bool
	}{
		{"/", true},
		{"/v1/", true},
		{"/v1/items?x", false},
		{"/v1/items#x", false},
		{"/a%41", true},
		{"", false},
		{"v1/", false},
		{"//", false},
		{"/a//b", false},
		{"/.", false},
		{"/..", false},
		{"/a/./b", false},
		{"/a/../b", false},
		{"/a/..b", true},
		{"/a%2Fb", false},
		{"/a%2e", false},
		{"/a%5C", false},
		{"/a%", false},
		{"/a%4", false},
		{"/a\\b", false},
		{"/a b", true}, // a decoded %20
		{"/a\nb", false},
		{"/a\x00", false},
	}
	for _, tt := range tests {
		if got := cleanPath(tt.path); got != tt.want {
			t.Errorf("cleanPath(%q) = %v, want %v", tt.path, got, tt.want)
		}
	}
}

// refMatchHost is a plain, allocating statement of MatchHost's rule.
func refMatchHost(pattern, host string) bool {
	for _, r := range pattern {
		if r >= 0x80 {
			return false
		}
	}
	pattern = strings.ToLower(strings.TrimSuffix(pattern, "."))
	host = strings.TrimSuffix(host, ".")
	if !checkHostSyntax(host) {
		return false
	}
	host = strings.ToLower(host)
	if rest, ok := strings.CutPrefix(pattern, "*."); ok {
		return rest != "" && !strings.HasPrefix(rest, ".") && strings.HasSuffix(host, "."+rest)
	}
	return pattern == host
}

func FuzzMatchHost(f *testing.F) {
	seeds := fuzzseed.New(f)
	seeds.Add("*.example.com", "a.example.com")
	seeds.Add("example.com.", "EXAMPLE.com")
	seeds.Add("*.", ".")
	f.Fuzz(func(t *testing.T, pattern, host string) {
		got, want := MatchHost(pattern, host), refMatchHost(pattern, host)
		if got != want {
			t.Fatalf("MatchHost(%q, %q) = %v, reference says %v", pattern, host, got, want)
		}
		if h, ok := normHost(host); ok {
			if p, ok := normPattern(pattern); ok && matchNorm(p, h) != got {
				t.Fatalf("matchNorm(%q, %q) disagrees with MatchHost", p, h)
			}
		}
	})
}
