//go:build pkcs11 && cgo

package vault

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ThalesGroup/crypto11"
)

const softHSMLib = "/usr/lib/softhsm/libsofthsm2.so"

// softHSM makes a fresh SoftHSM2 token "wirken" (user PIN in a 0600 file)
// holding AES-256 keys with the given labels, and returns the PIN file.
// Without SoftHSM2 the test is skipped, except under CI=true.
func softHSM(t *testing.T, pin string, labels ...string) string {
	t.Helper()
	util, err := exec.LookPath("softhsm2-util")
	if _, serr := os.Stat(softHSMLib); err != nil || serr != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("SoftHSM2 is not installed (apt-get install softhsm2) and CI=true forbids skipping")
		}
		t.Skip("SoftHSM2 is not installed")
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "softhsm2.conf")
	tokens := filepath.Join(dir, "tokens")
	if err := os.Mkdir(tokens, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(conf, []byte("directories.tokendir = "+tokens+"\nobjectstore.backend = file\nlog.level = ERROR\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SOFTHSM2_CONF", conf)
	out, err := exec.Command(util, "--init-token", "--free", "--label", "wirken", "--pin", pin, "--so-pin", "so-"+pin).CombinedOutput()
	if err != nil {
		t.Fatalf("softhsm2-util: %v\n%s", err, out)
	}
	c, err := crypto11.Configure(&crypto11.Config{Path: softHSMLib, TokenLabel: "wirken", Pin: pin})
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range labels {
		if _, err := c.GenerateSecretKeyWithLabel([]byte{byte(i + 1)}, []byte(l), 256, crypto11.CipherAES); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	pinFile := filepath.Join(dir, "pin")
	if err := os.WriteFile(pinFile, []byte(pin+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return pinFile
}

func pkcs11Config(pinFile, label string) SealConfig {
	return SealConfig{Type: "pkcs11", Options: map[string]string{
		"lib": softHSMLib, "token_label": "wirken", "pin_file": pinFile, "key_label": label,
	}}
}

// TestPKCS11RoundTrip seals a vault with an AES key in SoftHSM2, reopens
// it through a new session, and unseals with either of two token keys.
func TestPKCS11RoundTrip(t *testing.T) {
	pinFile := softHSM(t, "4711", "wirken-a", "wirken-b")
	ctx := context.Background()
	a, err := NewSeal(ctx, pkcs11Config(pinFile, "wirken-a"))
	if err != nil {
		t.Fatal(err)
	}
	defer FinalizeSeal(ctx, a)
	path := filepath.Join(t.TempDir(), "vault.wv")
	if err := Create(ctx, path, a); err != nil {
		t.Fatal(err)
	}
	v, err := Open(ctx, path, a)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	mustPut(t, v, "cred", "c1", "api.example.com")
	b, err := NewSeal(ctx, pkcs11Config(pinFile, "wirken-b"))
	if err != nil {
		t.Fatal(err)
	}
	defer FinalizeSeal(ctx, b)
	if err := v.Rewrap(ctx, b, nil); err != nil {
		t.Fatal(err)
	}
	e := v.SealEntries()
	if len(e) != 2 || e[0].Type != "pkcs11" || e[0].KeyID != "wirken-a" || e[1].Hint != "token_label=wirken key_label=wirken-b" {
		t.Fatalf("seal entries %+v", e)
	}
	openWith(t, path, a, "c1")
	openWith(t, path, b, "c1")
	if err := v.Rewrap(ctx, nil, []string{"s1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctx, path, a); !errors.Is(err, ErrSeal) {
		t.Fatalf("dropped key still opens: %v", err)
	}
	fresh, err := NewSeal(ctx, pkcs11Config(pinFile, "wirken-b"))
	if err != nil {
		t.Fatal(err)
	}
	defer FinalizeSeal(ctx, fresh)
	openWith(t, path, fresh, "c1")
}

func TestPKCS11Refuses(t *testing.T) {
	pin := "8642"
	pinFile := softHSM(t, pin, "wirken-a")
	wrongPin := filepath.Join(t.TempDir(), "wrong")
	os.WriteFile(wrongPin, []byte("97531"), 0o600)
	tests := []struct {
		name string
		cfg  SealConfig
		want string
	}{
		{"wrong pin", pkcs11Config(wrongPin, "wirken-a"), "opening the PKCS#11 token"},
		{"no such key", pkcs11Config(pinFile, "nope"), `0 secret keys have label "nope"`},
		{"no such token", func() SealConfig {
			c := pkcs11Config(pinFile, "wirken-a")
			c.Options["token_label"] = "other"
			return c
		}(), "opening the PKCS#11 token"},
		{"no such library", func() SealConfig {
			c := pkcs11Config(pinFile, "wirken-a")
			c.Options["lib"] = "/nonexistent.so"
			return c
		}(), "opening the PKCS#11 token"},
		{"pin and pin_file", func() SealConfig { c := pkcs11Config(pinFile, "wirken-a"); c.Options["pin"] = pin; return c }(), "give only one"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := NewSeal(context.Background(), tc.cfg)
			if err == nil {
				FinalizeSeal(context.Background(), s)
				t.Fatal("NewSeal succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), pin) || strings.Contains(err.Error(), "97531") {
				t.Fatalf("NewSeal = %v; want %q and no PIN", err, tc.want)
			}
		})
	}
}
