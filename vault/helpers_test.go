package vault

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
)

// newSeal writes a fresh AEAD key file and loads it.
func newSeal(t testing.TB) Seal {
	t.Helper()
	kf := filepath.Join(t.TempDir(), "seal.key")
	if err := CreateAEADKeyFile(kf); err != nil {
		t.Fatal(err)
	}
	s, err := AEADSeal(context.Background(), kf)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// newVault creates and opens an empty vault; it is closed at cleanup.
func newVault(t testing.TB) (*Vault, Seal) {
	t.Helper()
	seal := newSeal(t)
	path := filepath.Join(t.TempDir(), "vault.wv")
	if err := Create(context.Background(), path, seal); err != nil {
		t.Fatal(err)
	}
	v, err := Open(context.Background(), path, seal)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	return v, seal
}

func mustPut(t testing.TB, v *Vault, name, value string, hosts ...string) int {
	t.Helper()
	ver, err := v.Put(context.Background(), name, []byte(value), Binding{Hosts: hosts})
	if err != nil {
		t.Fatalf("Put(%q): %v", name, err)
	}
	return ver
}

// get returns a copy of the current value of name for host.
func get(v *Vault, name, host string) (string, error) {
	var out string
	err := v.WithSecret(name, host, func(b []byte) error {
		out = string(b)
		return nil
	})
	return out, err
}

// canary is a unique value that must never show up outside WithSecret/Reveal.
func canary(t testing.TB) string {
	t.Helper()
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return "AVCANARY-" + hex.EncodeToString(b[:])
}

// rewrite applies mutate to the body of v's file and writes it back with a
// valid MAC, as an attacker holding the MAC key (but not using the vault's
// code) could. It shows what the per-secret additional data protects.
func rewrite(t *testing.T, v *Vault, mutate func(*fileBody)) {
	t.Helper()
	raw, err := os.ReadFile(v.Path())
	if err != nil {
		t.Fatal(err)
	}
	p, err := parseFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	mutate(&p.body)
	root, err := v.state.Load().keys.root.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer root.Destroy()
	out, err := encodeFile(&p.body, root.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(v.Path(), out, 0o600); err != nil {
		t.Fatal(err)
	}
}

func readRaw(t *testing.T, path string) []byte {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// writeRaw replaces path atomically, as a writer would.
func writeRaw(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := writeFileAtomic(path, data, true); err != nil {
		t.Fatal(err)
	}
}
