package audit

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"
)

func TestNewSigner(t *testing.T) {
	seed := bytes.Repeat([]byte{7}, SeedSize)
	tests := []struct {
		name   string
		origin string
		seed   []byte
		ok     bool
	}{
		{"valid", testOrigin, seed, true},
		{"unicode origin", "wirken/hôst/audit", seed, true},
		{"empty origin", "", seed, false},
		{"origin with space", "a b", seed, false},
		{"origin with newline", "a\nb", seed, false},
		{"origin with plus", "a+b", seed, false},
		{"origin with control char", "a\x01b", seed, false},
		{"origin with invalid UTF-8", "a\xffb", seed, false},
		{"origin too long", strings.Repeat("a", maxOriginBytes+1), seed, false},
		{"short seed", testOrigin, seed[:31], false},
		{"long seed", testOrigin, append(bytes.Clone(seed), 1), false},
		{"nil seed", testOrigin, nil, false},
		{"zero seed", testOrigin, make([]byte, SeedSize), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := NewSigner(tc.origin, tc.seed)
			if (err == nil) != tc.ok {
				t.Fatalf("NewSigner = %v, want ok=%v", err, tc.ok)
			}
			if !tc.ok {
				return
			}
			v, err := note.NewVerifier(s.VerifierKey())
			if err != nil {
				t.Fatalf("verifier key does not parse: %v", err)
			}
			if v.Name() != tc.origin || s.Origin() != tc.origin {
				t.Fatalf("key name %q, origin %q, want %q", v.Name(), s.Origin(), tc.origin)
			}
		})
	}
}

// TestSignerIsDeterministic: the same seed gives the same key (the daemon
// re-derives it at every start), another seed another key.
func TestSignerIsDeterministic(t *testing.T) {
	seed := bytes.Repeat([]byte{9}, SeedSize)
	a, _ := NewSigner(testOrigin, seed)
	b, _ := NewSigner(testOrigin, bytes.Clone(seed))
	seed[0] ^= 1
	c, _ := NewSigner(testOrigin, seed)
	if a.VerifierKey() != b.VerifierKey() {
		t.Fatal("same seed, different keys")
	}
	if a.VerifierKey() == c.VerifierKey() {
		t.Fatal("different seeds, same key")
	}
	// The verifier key embeds the Ed25519 public key of the seed.
	pub := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, SeedSize)).Public().(ed25519.PublicKey)
	if !strings.HasSuffix(a.VerifierKey(), base64.StdEncoding.EncodeToString(append([]byte{1}, pub...))) {
		t.Fatal("verifier key does not carry the seed's public key")
	}
}

// TestSignerNeverPrintsItsKey formats a signer every way fmt allows and
// checks neither the seed nor the private key appears.
func TestSignerNeverPrintsItsKey(t *testing.T) {
	seed := make([]byte, SeedSize)
	if _, err := rand.Read(seed); err != nil {
		t.Fatal(err)
	}
	s, err := NewSigner(testOrigin, seed)
	if err != nil {
		t.Fatal(err)
	}
	priv := ed25519.NewKeyFromSeed(seed)
	secrets := []string{
		hex.EncodeToString(seed), base64.StdEncoding.EncodeToString(seed), string(seed),
		hex.EncodeToString(priv), base64.StdEncoding.EncodeToString(priv),
		fmt.Sprint([]byte(seed)), fmt.Sprint([]byte(priv[:8])),
	}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X"} {
		for _, val := range []any{s, *s, []*Signer{s}, struct{ S *Signer }{s}} {
			out := fmt.Sprintf(verb, val)
			for _, sec := range secrets {
				if strings.Contains(out, sec) || strings.Contains(strings.ToLower(out), strings.ToLower(sec)) {
					t.Fatalf("%s of %T leaks key material: %s", verb, val, out)
				}
			}
		}
	}
	if !strings.Contains(s.String(), s.VerifierKey()) {
		t.Fatalf("String() = %q, want it to show the verifier key", s.String())
	}
}

func TestWriteVerifierKey(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.pub")
	if err := os.WriteFile(path, []byte("old contents"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := testSigner(t, testOrigin)
	if err := WriteVerifierKey(path, s); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != s.VerifierKey()+"\n" {
		t.Fatalf("file holds %q, want the verifier key and a newline", got)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o644 {
		t.Fatalf("mode %v, want 0644", perm)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Fatalf("%d files in the directory, want 1 (no temporary file left)", len(entries))
	}
	// What was written is what Verify takes.
	if _, err := Verify(strings.NewReader(""), WithVerifierKey(string(got))); err != nil {
		t.Fatalf("the written key is not accepted by Verify: %v", err)
	}
	if err := WriteVerifierKey(filepath.Join(dir, "missing", "audit.pub"), s); err == nil {
		t.Fatal("writing into a missing directory succeeded")
	}
	if err := WriteVerifierKey(path, nil); err == nil {
		t.Fatal("a nil signer was accepted")
	}
}

// noteSign signs arbitrary note text with s (for forging in tests).
func noteSign(text string, s *Signer) ([]byte, error) {
	return note.Sign(&note.Note{Text: text}, noteSigner{s})
}
