package vault

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// tamper re-renders raw with mutate applied to its body and the ORIGINAL
// MAC line: what someone who can write the file but holds no key can do.
func tamper(t *testing.T, raw []byte, mutate func(*fileBody)) []byte {
	t.Helper()
	p, err := parseFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	mutate(&p.body)
	j, err := json.Marshal(&p.body)
	if err != nil {
		t.Fatal(err)
	}
	macLine := raw[bytes.LastIndex(raw[:len(raw)-1], []byte("\n"))+1:]
	out := append([]byte(magic+"\n"), j...)
	out = append(out, '\n')
	return append(out, macLine...)
}

// flipB64 changes one byte in the middle of base64 data, keeping it valid
// base64 of the same length.
func flipB64(t *testing.T, s string) string {
	t.Helper()
	b, err := b64.DecodeString(s)
	if err != nil || len(b) == 0 {
		t.Fatalf("not base64: %v", err)
	}
	b[len(b)/2] ^= 0x01
	return b64.EncodeToString(b)
}

// tamperCases edits one field each, as an attacker without keys would, and
// says what the refusal must name.
func tamperCases(t *testing.T) []struct {
	name   string
	edit   func(raw []byte) []byte
	target error
	want   string
	// On Reload, when other seal entries are unchanged, the live root key
	// is reused without a KMS call; set when the refusal then differs.
	reloadTarget error
	reloadWant   string
} {
	secret := func(b *fileBody, name string) *secretEntry {
		for i := range b.Secrets {
			if b.Secrets[i].Name == name {
				return &b.Secrets[i]
			}
		}
		t.Fatalf("no secret %q", name)
		return nil
	}
	body := func(f func(*fileBody)) func([]byte) []byte {
		return func(raw []byte) []byte { return tamper(t, raw, f) }
	}
	return []struct {
		name         string
		edit         func(raw []byte) []byte
		target       error
		want         string
		reloadTarget error
		reloadWant   string
	}{
		{"value", body(func(b *fileBody) { s := secret(b, "cred"); s.Value = flipB64(t, s.Value) }),
			ErrCorrupt, `secret "cred" version 1: value does not decrypt`, nil, ""},
		{"data key", body(func(b *fileBody) { s := secret(b, "cred"); s.DEK = flipB64(t, s.DEK) }),
			ErrCorrupt, `secret "cred" version 1: data key does not decrypt`, nil, ""},
		{"keyring", body(func(b *fileBody) { b.Keyring = flipB64(t, b.Keyring) }),
			ErrCorrupt, "keyring does not decrypt", nil, ""},
		{"seal entry in use", body(func(b *fileBody) { b.Seals[0].Root = flipB64(t, b.Seals[0].Root) }),
			ErrSeal, `seal entry "s1"`, ErrCorrupt, "MAC does not verify"},
		{"other seal entry", body(func(b *fileBody) { b.Seals[1].Root = flipB64(t, b.Seals[1].Root) }),
			ErrCorrupt, "MAC does not verify", nil, ""},
		{"seal entry key id", body(func(b *fileBody) { b.Seals[1].KeyID = "aead-0000000000000000" }),
			ErrCorrupt, "MAC does not verify", nil, ""},
		{"generation", body(func(b *fileBody) { b.Generation += 5 }),
			ErrCorrupt, "MAC does not verify", nil, ""},
		{"binding moved to another host", body(func(b *fileBody) { secret(b, "cred").Hosts = []string{"evil.example"} }),
			ErrCorrupt, `secret "cred" version 1: value does not decrypt for this name, version and binding`, nil, ""},
		{"secret deleted", body(func(b *fileBody) { b.Secrets = b.Secrets[1:] }),
			ErrCorrupt, "MAC does not verify", nil, ""},
		{"MAC", func(raw []byte) []byte {
			i := bytes.LastIndex(raw, []byte(macPrefix)) + len(macPrefix) + 5
			out := bytes.Clone(raw)
			out[i] = map[bool]byte{true: 'B', false: 'A'}[out[i] == 'A']
			return out
		}, ErrCorrupt, "MAC does not verify", nil, ""},
	}
}

// tamperFixture is a vault with two seal entries (s1 opens it) and two
// secrets; it returns the seal of s1.
func tamperFixture(t *testing.T) (*Vault, Seal) {
	v, seal := newVault(t)
	if err := v.Rewrap(context.Background(), newSeal(t), nil); err != nil {
		t.Fatal(err)
	}
	mustPut(t, v, "another", "x", "a.example")
	mustPut(t, v, "cred", "value-1", "api.example.com")
	return v, seal
}

// TestTamperRefusedByOpen edits each field of the file without the keys:
// Open refuses every edit with the error class and text naming what failed.
func TestTamperRefusedByOpen(t *testing.T) {
	v, seal := tamperFixture(t)
	good, err := os.ReadFile(v.Path())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range tamperCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			bad := tc.edit(good)
			if bytes.Equal(bad, good) {
				t.Fatal("the edit changed nothing")
			}
			path := filepath.Join(t.TempDir(), "v")
			if err := os.WriteFile(path, bad, 0o600); err != nil {
				t.Fatal(err)
			}
			w, err := Open(context.Background(), path, seal)
			if !errors.Is(err, tc.target) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("Open = %v, %v; want %v naming the file and %q", w, err, tc.target, tc.want)
			}
		})
	}
}

// TestTamperRefusedByReload: a running Vault refuses each tampered file on
// Reload, says what failed, and keeps serving its last good snapshot.
func TestTamperRefusedByReload(t *testing.T) {
	for _, tc := range tamperCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			v, seal := tamperFixture(t)
			good, err := os.ReadFile(v.Path())
			if err != nil {
				t.Fatal(err)
			}
			daemon, err := Open(context.Background(), v.Path(), seal)
			if err != nil {
				t.Fatal(err)
			}
			defer daemon.Close()
			gen := daemon.Generation()
			target, want := tc.target, tc.want
			if tc.reloadTarget != nil {
				target, want = tc.reloadTarget, tc.reloadWant
			}
			if err := os.WriteFile(v.Path(), tc.edit(good), 0o600); err != nil {
				t.Fatal(err)
			}
			changed, err := daemon.Reload(context.Background())
			if changed || !errors.Is(err, target) || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "still serving generation") {
				t.Fatalf("Reload = %v, %v; want %v with %q", changed, err, target, want)
			}
			if got, err := get(daemon, "cred", "api.example.com"); err != nil || got != "value-1" || daemon.Generation() != gen {
				t.Fatalf("after a refused reload: %q, %v, generation %d (want %d)", got, err, daemon.Generation(), gen)
			}
		})
	}
}

// TestReloadRefusesRollbackAndSwap: an older copy of the file, a different
// file claiming the live generation, and another vault are all refused.
func TestReloadRefusesRollbackAndSwap(t *testing.T) {
	v, seal := newVault(t)
	mustPut(t, v, "cred", "old", "api.example.com")
	older, _ := os.ReadFile(v.Path())
	mustPut(t, v, "cred", "new", "api.example.com")
	live, _ := os.ReadFile(v.Path())

	// A fork: another writer started from the older file and wrote the same generation.
	fork := filepath.Join(t.TempDir(), "fork")
	os.WriteFile(fork, older, 0o600)
	fv, err := Open(context.Background(), fork, seal)
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, fv, "cred", "forked", "api.example.com")
	fv.Close()
	forked, _ := os.ReadFile(fork)

	other, _ := newVault(t) // another vault, with its own seal
	otherRaw, _ := os.ReadFile(other.Path())

	tests := []struct {
		name   string
		data   []byte
		target error
		want   string
	}{
		{"older generation", older, ErrRollback, "older than the live"},
		{"same generation, other contents", forked, ErrRollback, "claims generation 3"},
		{"another vault", otherRaw, ErrCorrupt, "another vault was put in its place"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(v.Path(), tc.data, 0o600); err != nil {
				t.Fatal(err)
			}
			changed, err := v.Reload(context.Background())
			if changed || !errors.Is(err, tc.target) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Reload = %v, %v; want %v with %q", changed, err, tc.target, tc.want)
			}
			if got, err := get(v, "cred", "api.example.com"); err != nil || got != "new" {
				t.Fatalf("still serving: %q, %v", got, err)
			}
		})
	}
	if err := os.WriteFile(v.Path(), live, 0o600); err != nil {
		t.Fatal(err)
	}
	if changed, err := v.Reload(context.Background()); changed || err != nil {
		t.Fatalf("the live file again: %v, %v; want unchanged", changed, err)
	}
}

func TestOpenMinGeneration(t *testing.T) {
	v, seal := newVault(t)
	mustPut(t, v, "cred", "v1")
	mustPut(t, v, "cred", "v2") // generation 3
	tests := []struct {
		name    string
		opts    []OpenOption
		wantErr error
	}{
		{"no floor", nil, nil},
		{"floor below", []OpenOption{WithMinGeneration(2)}, nil},
		{"floor equal", []OpenOption{WithMinGeneration(3)}, nil},
		{"floor above", []OpenOption{WithMinGeneration(4)}, ErrRollback},
		{"floor above, accepted", []OpenOption{WithMinGeneration(9), WithAcceptRollback()}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w, err := Open(context.Background(), v.Path(), seal, tc.opts...)
			if !errors.Is(err, tc.wantErr) || (err == nil) != (tc.wantErr == nil) {
				t.Fatalf("Open = %v, want %v", err, tc.wantErr)
			}
			if err != nil {
				if errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "generation 3") {
					t.Fatalf("rollback error is not distinct or does not say the generation: %v", err)
				}
				return
			}
			defer w.Close()
			if got, _ := get(w, "cred", "h.example"); got != "v2" {
				t.Fatalf("value %q", got)
			}
		})
	}
}

// TestBase64HasOneSpelling: the vault file's base64 values (MAC, root, keyring, data keys,
// values) are refused with a line break inside, which Go's decoder would skip.
func TestBase64HasOneSpelling(t *testing.T) {
	canon := b64.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	if b, err := b64Decode(canon); err != nil || string(b) != "0123456789abcdef0123456789abcdef" {
		t.Fatalf("canonical base64: %q, %v", b, err)
	}
	for _, s := range []string{canon[:8] + "\n" + canon[8:], canon[:8] + "\r" + canon[8:], canon + "\n"} {
		if _, err := b64Decode(s); err == nil {
			t.Errorf("%q accepted", s)
		}
		if _, err := b64.DecodeString(s); err != nil {
			t.Errorf("Go's decoder refuses %q too; the check would be unneeded", s)
		}
	}
}
