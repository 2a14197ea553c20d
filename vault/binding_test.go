package vault

import (
	"errors"
	"slices"
	"testing"
)

func TestNormalizeBinding(t *testing.T) {
	tests := []struct {
		in      []string
		want    []string
		wantErr bool
	}{
		{nil, []string{}, false},
		{[]string{"B.example", "a.example.", "b.example"}, []string{"a.example", "b.example"}, false},
		{[]string{"*.Example.COM"}, []string{"*.example.com"}, false},
		{[]string{"::FFFF:10.0.0.1", "2001:DB8::1"}, []string{"10.0.0.1", "2001:db8::1"}, false},
		{[]string{"_srv.example"}, []string{"_srv.example"}, false},
		{[]string{""}, nil, true},
		{[]string{"*"}, nil, true},
		{[]string{"*."}, nil, true},
		{[]string{"a.*.example"}, nil, true},
		{[]string{"**.example"}, nil, true},
		{[]string{"*.1.2.3.4"}, nil, true},
		{[]string{"a..example"}, nil, true},
		{[]string{"a-.example"}, nil, true},
		{[]string{"host:80"}, nil, true},
		{[]string{"[::1]"}, nil, true},
		{[]string{"fe80::1%eth0"}, nil, true},
		{[]string{"é.example"}, nil, true},
		{[]string{string(make([]byte, 300))}, nil, true},
	}
	for _, tc := range tests {
		got, err := normalizeBinding(tc.in)
		if (err != nil) != tc.wantErr || !slices.Equal(got, tc.want) {
			t.Errorf("normalizeBinding(%q) = %q, %v; want %q, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("normalizeBinding(%q): error %v is not ErrInvalid", tc.in, err)
		}
	}
}

func TestBindingAllows(t *testing.T) {
	tests := []struct {
		hosts []string
		host  string
		want  bool
	}{
		{[]string{}, "anything.example", true},
		{[]string{"a.example"}, "a.example", true},
		{[]string{"a.example"}, "b.a.example", false},
		{[]string{"*.a.example"}, "b.a.example", true},
		{[]string{"*.a.example"}, "c.b.a.example", true},
		{[]string{"*.a.example"}, "a.example", false},
		{[]string{"*.a.example"}, "xa.example", false},
		{[]string{"*.3.4"}, "1.2.3.4", false}, // IPs match exactly only
		{[]string{"1.2.3.4"}, "1.2.3.4", true},
		{[]string{"x.example", "*.y.example"}, "z.y.example", true},
	}
	for _, tc := range tests {
		if got := bindingAllows(tc.hosts, tc.host); got != tc.want {
			t.Errorf("bindingAllows(%q, %q) = %v, want %v", tc.hosts, tc.host, got, tc.want)
		}
	}
}

func TestBindingDigestIsCanonical(t *testing.T) {
	a, _ := normalizeBinding([]string{"B.example", "a.example"})
	b, _ := normalizeBinding([]string{"a.example.", "b.example", "a.example"})
	c, _ := normalizeBinding([]string{"a.example"})
	da, _ := bindingDigest(a)
	db, _ := bindingDigest(b)
	dc, _ := bindingDigest(c)
	if da != db || da == dc || len(da) != 64 {
		t.Errorf("digests: %s %s %s", da, db, dc)
	}
	if _, err := bindingDigest(nil); err == nil {
		t.Error("digest of nil hosts accepted")
	}
}

func TestValidName(t *testing.T) {
	tests := map[string]bool{
		"a": true, "anthropic-prod": true, "a.b_c-d9": true, "a23456789012345678901234567890123456789012345678901234567890123": true,
		"": false, "A": false, "9a": false, "_a": false, "a b": false, "a|b": false, "a/b": false, "ä": false,
		"a234567890123456789012345678901234567890123456789012345678901234": false,
	}
	for name, want := range tests {
		if got := validName(name); got != want {
			t.Errorf("validName(%q) = %v, want %v", name, got, want)
		}
	}
}
