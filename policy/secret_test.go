package policy

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
)

func canary(t *testing.T) string {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "CANARY" + hex.EncodeToString(b)
}

func TestRender(t *testing.T) {
	tests := []struct {
		format, secret, want string
	}{
		{"{secret}", "s3cr3t", "s3cr3t"},
		{"Bearer {secret}", "s3cr3t", "Bearer s3cr3t"},
		{"token={secret};v=1", "abc", "token=abc;v=1"},
		{"Bearer {secret}", "{secret}", "Bearer {secret}"},
		{"Bearer {secret}", "", "Bearer "},
		{"no placeholder", "abc", ""}, // a hand-made Credential fails closed
		{"", "abc", ""},
	}
	for _, tt := range tests {
		c := &Credential{Name: "c", Format: tt.format}
		if got := c.Render([]byte(tt.secret)); got != tt.want {
			t.Errorf("Render(%q) with format %q = %q, want %q", tt.secret, tt.format, got, tt.want)
		}
	}
	c := &Credential{Format: "Bearer {secret}"}
	secret := []byte("0123456789abcdef0123456789abcdef")
	if n := testing.AllocsPerRun(100, func() { _ = c.Render(secret) }); n != 1 {
		t.Errorf("Render allocates %v times, want 1", n)
	}
	// Render does not keep the secret: wiping the caller's buffer afterwards
	// leaves the returned value intact, and a second render sees new bytes.
	buf := []byte("first")
	v := c.Render(buf)
	copy(buf, "xxxxx")
	if v != "Bearer first" || c.Render(buf) != "Bearer xxxxx" {
		t.Errorf("Render shares memory with its input")
	}
}

// TestSecretsStayOut checks that secret values never reach errors or
// formatted output: neither a value passed to Render nor one pasted into the
// policy file by mistake.
func TestSecretsStayOut(t *testing.T) {
	secret := canary(t)
	p := mustParse(t, decidePolicy)
	g := p.Authorize(Request{Agent: "demo", Method: "GET", Host: "api.example.test", Port: 443, Path: "/v1/"})
	if !g.Allow || g.Credential == nil {
		t.Fatalf("Authorize = %+v", g)
	}
	if v := g.Credential.Render([]byte(secret)); v != "Bearer "+secret {
		t.Fatalf("Render = %q", v)
	}
	out := fmt.Sprintf("%v %+v %#v %v %+v %s", g, g, g, *g.Credential, *g.Credential, p.Digest())
	if strings.Contains(out, secret) {
		t.Errorf("formatted grant holds the secret: %s", out)
	}

	pasted := []string{
		// A value where the secret name goes, and as the format.
		"version = 1\n[credentials.c]\nsecret = \"" + secret + "\"\nhosts = [\"a.test\"]\nheader = \"X\"\nformat = \"Bearer " + secret + "\"\n",
		// As a header name (a valid token, but not an allowed header here).
		"version = 1\n[credentials.c]\nsecret = \"s\"\nhosts = [\"a.test\"]\nheader = \"" + secret + " x\"\n",
		// Without quotes, which the TOML parser quotes back.
		"version = 1\n[credentials.c]\nsecret = " + secret + "\n",
		"version = 1\n[credentials.c]\nsecret = [" + secret + "]\n",
		"version = 1\nx = { y = " + secret + " }\n",
		// Under an unknown key.
		"version = 1\napi_key = \"" + secret + "\"\n",
	}
	for i, src := range pasted {
		_, err := Parse("p.toml", []byte(src))
		if err == nil {
			t.Errorf("case %d: Parse accepted the file", i)
			continue
		}
		if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), secret[:16]) {
			t.Errorf("case %d: error holds the secret: %v", i, err)
		}
	}
}
