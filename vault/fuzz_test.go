package vault

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/wirken/wirken/internal/fuzzseed"
)

// fuzzFixture is a real vault with two secrets, its file bytes and its seal.
func fuzzFixture(f *testing.F) (*Vault, Seal, []byte) {
	v, seal := newVault(f)
	mustPut(f, v, "a", "alpha", "a.example", "*.b.example")
	mustPut(f, v, "b", "beta")
	raw, err := os.ReadFile(v.Path())
	if err != nil {
		f.Fatal(err)
	}
	return v, seal, raw
}

// FuzzOpen feeds arbitrary file bytes to the parser and unsealer. Nothing may
// panic, and nothing but the genuine file may open: anything else accepted
// would be a MAC forgery.
func FuzzOpen(f *testing.F) {
	seeds := fuzzseed.New(f)
	_, seal, good := fuzzFixture(f)
	seeds.Add(good)
	seeds.Add([]byte{})
	seeds.Add([]byte(magic + "\n{}\nmac:\n"))
	seeds.Add([]byte("wirken-vault/9\n"))
	seeds.Add(bytes.Replace(good, []byte(`"version":1`), []byte(`"version":-1`), 1))
	seeds.Add(good[:len(good)/2])
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := unseal(context.Background(), data, seal)
		if err == nil && !bytes.Equal(data, good) {
			t.Fatalf("accepted a file that is not the genuine one (generation %d)", st.body.Generation)
		}
	})
}

// FuzzBody signs arbitrary body lines with the vault's real MAC key, so the
// fuzzer gets past the MAC and reaches validation, the keyring and secret
// decryption. Nothing may panic. Open verifies every secret, so whatever
// opens must serve every secret whose binding allows the host.
func FuzzBody(f *testing.F) {
	seeds := fuzzseed.New(f)
	v, seal, good := fuzzFixture(f)
	lines := strings.Split(string(good), "\n")
	seeds.Add([]byte(lines[1]))
	seeds.Add([]byte(strings.Replace(lines[1], `"term":1`, `"term":2`, 1)))
	seeds.Add([]byte(strings.Replace(lines[1], `"hosts":[]`, `"hosts":null`, 1)))
	seeds.Add([]byte(strings.Replace(lines[1], `"generation":3`, `"generation":0`, 1)))
	seeds.Add([]byte(strings.Replace(lines[1], `"key_id":`, `"hint":"x","key_id":`, 1)))
	seeds.Add([]byte(`{"vault_id":"","generation":1,"seals":[],"keyring":"","secrets":[]}`))
	root, err := v.state.Load().keys.root.Open()
	if err != nil {
		f.Fatal(err)
	}
	rootKey := bytes.Clone(root.Bytes()) // test only: the fuzz loop signs with it
	root.Destroy()
	f.Fuzz(func(t *testing.T, body []byte) {
		if bytes.IndexByte(body, '\n') >= 0 {
			return
		}
		signed := append([]byte(magic+"\n"), body...)
		signed = append(signed, '\n')
		mac, err := fileMAC(rootKey, signed)
		if err != nil {
			t.Fatal(err)
		}
		data := append(signed, macPrefix...)
		data = b64.AppendEncode(data, mac)
		data = append(data, '\n')
		st, err := unseal(context.Background(), data, seal)
		if err != nil {
			return
		}
		w := &Vault{path: "fuzz"}
		w.state.Store(st)
		for _, s := range w.List() {
			err := w.WithSecret(s.Name, "x.b.example", func(b []byte) error {
				if len(b) == 0 {
					t.Error("empty value served")
				}
				return nil
			})
			if err != nil && !errors.Is(err, ErrHostNotAllowed) {
				t.Errorf("a verified snapshot does not serve %q: %v", s.Name, err)
			}
		}
		if w.DeriveKey("audit") == nil {
			t.Error("DeriveKey failed on an opened vault")
		}
	})
}

// FuzzBinding checks that host and pattern normalization never panic, are
// idempotent, and that a normalized host is always allowed by itself.
func FuzzBinding(f *testing.F) {
	seeds := fuzzseed.New(f)
	for _, s := range []string{"api.example.com", "*.Example.com.", "::ffff:1.2.3.4", "[::1]", "a..b", "*.", "é", "x:443"} {
		seeds.Add(s, "a.example.com")
	}
	f.Fuzz(func(t *testing.T, pattern, host string) {
		p, perr := normalizePattern(pattern)
		if perr == nil {
			if p2, err := normalizePattern(p); err != nil || p2 != p {
				t.Fatalf("pattern %q -> %q -> %q, %v", pattern, p, p2, err)
			}
		}
		h, herr := normalizeHost(host)
		if herr != nil {
			return
		}
		if h2, err := normalizeHost(h); err != nil || h2 != h {
			t.Fatalf("host %q -> %q -> %q, %v", host, h, h2, err)
		}
		if !bindingAllows([]string{h}, h) {
			t.Fatalf("host %q not allowed by itself", h)
		}
		if perr == nil {
			_ = bindingAllows([]string{p}, h)
		}
	})
}

// FuzzParseKeyFile: no panic; anything accepted is 32 bytes that round-trip.
func FuzzParseKeyFile(f *testing.F) {
	seeds := fuzzseed.New(f)
	seeds.Add([]byte("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"))
	seeds.Add([]byte("  \n"))
	seeds.Add([]byte("AAAA"))
	f.Fuzz(func(t *testing.T, data []byte) {
		key, err := parseKeyFile(data)
		if err != nil {
			return
		}
		if len(key) != keyLen {
			t.Fatalf("key of %d bytes accepted", len(key))
		}
		if string(b64.EncodeToString(key)) != string(bytes.TrimSpace(data)) {
			t.Fatal("accepted a non-canonical encoding")
		}
	})
}

// FuzzTPMBlob: the blob parser never panics, and whatever it accepts
// re-encodes to exactly the bytes it was given.
func FuzzTPMBlob(f *testing.F) {
	seeds := fuzzseed.New(f)
	pub := tpm2.Marshal(tpm2.New2B(tpm2.ECCSRKTemplate))
	priv := tpm2.Marshal(tpm2.TPM2BPrivate{Buffer: []byte("opaque")})
	seeds.Add(appendTPMBlob(nil, pub, priv))
	seeds.Add([]byte{0, 0, 0, 0})
	seeds.Add([]byte{0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, q, err := parseTPMBlob(b)
		if err != nil {
			return
		}
		if got := appendTPMBlob(nil, tpm2.Marshal(*p), tpm2.Marshal(*q)); !bytes.Equal(got, b) {
			t.Fatalf("accepted %x, re-encodes as %x", b, got)
		}
	})
}
