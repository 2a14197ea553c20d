package vault

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wirken/wirken/internal/fuzzseed"
)

// TestSealConfigErrors: every configuration mistake is refused before any
// network call, with an error that names the seal type and the option, and
// never repeats a credential.
func TestSealConfigErrors(t *testing.T) {
	c := canary(t)
	dir := t.TempDir()
	open := filepath.Join(dir, "open-token")
	os.WriteFile(open, []byte(c), 0o600)
	os.Chmod(open, 0o644)
	empty := filepath.Join(dir, "empty-token")
	os.WriteFile(empty, []byte("\n"), 0o600)
	transitOK := map[string]string{"address": "https://vault.example:8200", "token": c, "mount_path": "transit", "key_name": "k"}
	with := func(base map[string]string, kv ...string) map[string]string {
		out := copyOptions(base)
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == "" {
				delete(out, kv[i])
			} else {
				out[kv[i]] = kv[i+1]
			}
		}
		return out
	}
	awsOK := map[string]string{"kms_key_id": "alias/wirken", "region": "eu-west-1"}
	gcpOK := map[string]string{"project": "p", "region": "global", "key_ring": "r", "crypto_key": "k"}
	azOK := map[string]string{"vault_name": "v", "key_name": "k"}
	tests := []struct {
		name string
		cfg  SealConfig
		want string
	}{
		{"no type", SealConfig{}, "seal: type: required"},
		{"unknown type", SealConfig{Type: "rot13"}, `seal: type "rot13": unknown`},
		{"aead without key_file", SealConfig{Type: "aead"}, "seal aead: option key_file: required"},
		{"aead unknown option", SealConfig{Type: "aead", Options: map[string]string{"key_file": "/k", "keyfile": "/k"}}, "seal aead: option keyfile: unknown (known: key_file)"},
		{"transit without address", SealConfig{"transit", with(transitOK, "address", "")}, "seal transit: option address: required"},
		{"transit without token", SealConfig{"transit", with(transitOK, "token", "")}, "seal transit: option token or token_file: required"},
		{"transit with two tokens", SealConfig{"transit", with(transitOK, "token_file", "/t")}, "seal transit: option token and token_file: give only one"},
		{"transit without mount", SealConfig{"transit", with(transitOK, "mount_path", "")}, "seal transit: option mount_path: required"},
		{"transit without key", SealConfig{"transit", with(transitOK, "key_name", "")}, "seal transit: option key_name: required"},
		{"transit http to a remote host", SealConfig{"transit", with(transitOK, "address", "http://vault.example:8200")}, "option address: http is allowed only toward a loopback address"},
		{"transit not a URL", SealConfig{"transit", with(transitOK, "address", "vault.example")}, "option address: want an http(s)://"},
		{"transit URL with credentials", SealConfig{"transit", with(transitOK, "address", "https://u:"+c+"@vault.example")}, "option address: want an http(s)://"},
		{"transit skip verify", SealConfig{"transit", with(transitOK, "tls_skip_verify", "true")}, "option tls_skip_verify: not supported"},
		{"transit bad bool", SealConfig{"transit", with(transitOK, "disable_renewal", "yes")}, "option disable_renewal: want true or false"},
		{"transit env reference", SealConfig{"transit", with(transitOK, "token", "env://VAULT_TOKEN")}, "option token: file: and env: references are not supported"},
		{"transit client cert alone", SealConfig{"transit", with(transitOK, "tls_client_cert", "/c")}, "option tls_client_cert: give tls_client_cert and tls_client_key together"},
		{"transit empty value", SealConfig{"transit", with(transitOK, "namespace", "")}, ""}, // control: absent is fine
		{"transit control character", SealConfig{"transit", with(transitOK, "token", c+"\n")}, "option token: value contains control characters"},
		{"awskms without key", SealConfig{"awskms", with(awsOK, "kms_key_id", "")}, "seal awskms: option kms_key_id: required"},
		{"awskms without region", SealConfig{"awskms", with(awsOK, "region", "")}, "seal awskms: option region: required"},
		{"awskms half a key pair", SealConfig{"awskms", with(awsOK, "access_key", "AKIA")}, "option access_key: give access_key and secret_key together"},
		{"awskms plain http endpoint", SealConfig{"awskms", with(awsOK, "endpoint", "http://kms.example")}, "option endpoint: http is allowed only toward a loopback address"},
		{"awskms unknown", SealConfig{"awskms", with(awsOK, "kms_key", "x")}, "option kms_key: unknown"},
		{"gcpckms without crypto_key", SealConfig{"gcpckms", with(gcpOK, "crypto_key", "")}, "seal gcpckms: option crypto_key: required"},
		{"gcpckms without project", SealConfig{"gcpckms", with(gcpOK, "project", "")}, "seal gcpckms: option project: required"},
		{"azure without vault", SealConfig{"azurekeyvault", with(azOK, "vault_name", "")}, "seal azurekeyvault: option vault_name: required"},
		{"azure secret without tenant", SealConfig{"azurekeyvault", with(azOK, "client_secret", c, "client_id", "id")}, "option tenant_id: required with client_secret"},
		{"azure two secrets", SealConfig{"azurekeyvault", with(azOK, "client_secret", c, "client_secret_file", "/s")}, "option client_secret and client_secret_file: give only one"},
		{"tpm2 unknown", SealConfig{"tpm2", map[string]string{"pcrs": "7"}}, "seal tpm2: option pcrs: unknown (known: device)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := planSeal(tc.cfg)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("planSeal = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("planSeal = %v, want ErrInvalid with %q", err, tc.want)
			}
			if strings.Contains(err.Error(), c) {
				t.Fatalf("error repeats a credential: %v", err)
			}
		})
	}
	// Valid cloud configurations pass validation (they are not exercised live).
	for _, cfg := range []SealConfig{{"awskms", awsOK}, {"gcpckms", gcpOK}, {"azurekeyvault", azOK}, {"transit", transitOK}} {
		if _, err := planSeal(cfg); err != nil {
			t.Errorf("%s: valid configuration refused: %v", cfg.Type, err)
		}
	}

	// Errors found when building: credential files and the environment.
	build := []struct {
		name string
		cfg  SealConfig
		env  [2]string
		want string
	}{
		{"token file readable by others", SealConfig{"transit", with(transitOK, "token", "", "token_file", open)}, [2]string{}, "has mode 0644; group or other may access it"},
		{"empty token file", SealConfig{"transit", with(transitOK, "token", "", "token_file", empty)}, [2]string{}, "is empty"},
		{"missing token file", SealConfig{"transit", with(transitOK, "token", "", "token_file", filepath.Join(dir, "none"))}, [2]string{}, "no such file"},
		{"VAULT_SKIP_VERIFY set", SealConfig{"transit", transitOK}, [2]string{"VAULT_SKIP_VERIFY", "1"}, "environment variable VAULT_SKIP_VERIFY is set"},
		{"VAULT_ADDR set", SealConfig{"transit", transitOK}, [2]string{"VAULT_ADDR", "http://evil.example"}, "environment variable VAULT_ADDR is set"},
		{"missing aead key file", SealConfig{"aead", map[string]string{"key_file": filepath.Join(dir, "none")}}, [2]string{}, "no such file"},
		{"gcp credentials readable by others", SealConfig{"gcpckms", with(gcpOK, "credentials", open)}, [2]string{}, "has mode 0644"},
	}
	for _, tc := range build {
		t.Run(tc.name, func(t *testing.T) {
			if tc.env[0] != "" {
				t.Setenv(tc.env[0], tc.env[1])
			}
			s, err := NewSeal(context.Background(), tc.cfg)
			if err == nil {
				FinalizeSeal(context.Background(), s)
				t.Fatal("NewSeal succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), c) {
				t.Fatalf("NewSeal = %v, want %q and no credential", err, tc.want)
			}
		})
	}
}

func TestNewSealAEAD(t *testing.T) {
	kf := filepath.Join(t.TempDir(), "k")
	if err := CreateAEADKeyFile(kf); err != nil {
		t.Fatal(err)
	}
	s, err := NewSeal(context.Background(), SealConfig{Type: "aead", Options: map[string]string{"key_file": kf}})
	if err != nil {
		t.Fatal(err)
	}
	direct, _ := AEADSeal(context.Background(), kf)
	k1, _ := s.KeyId(context.Background())
	k2, _ := direct.KeyId(context.Background())
	if k1 != k2 || !strings.HasPrefix(k1, "aead-") {
		t.Fatalf("key ids %q and %q", k1, k2)
	}
	// Same key file, either construction: one opens what the other sealed.
	path := filepath.Join(t.TempDir(), "v")
	if err := Create(context.Background(), path, s); err != nil {
		t.Fatal(err)
	}
	w, err := Open(context.Background(), path, direct)
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	if err := FinalizeSeal(context.Background(), s); err != nil {
		t.Fatalf("FinalizeSeal on aead: %v", err)
	}
}

// FuzzSealConfig: validation never panics, fails only with ErrInvalid or
// ErrUnavailable, and its errors never repeat the value of an option that
// may hold a credential (marked with a prefix no message contains).
func FuzzSealConfig(f *testing.F) {
	seeds := fuzzseed.New(f)
	seeds.Add("transit", "address", "https://v.example", "token", "s.abc", "key_name", "k")
	seeds.Add("awskms", "kms_key_id", "alias/x", "secret_key", "x", "region", "r")
	seeds.Add("azurekeyvault", "vault_name", "v", "client_secret", "c\x00", "key_name", "k")
	seeds.Add("pkcs11", "lib", "/l.so", "pin", "1234", "slot", "-1")
	seeds.Add("aead", "key_file", "", "x", "y", "z", "w")
	const mark = "AVCANARY"
	f.Fuzz(func(t *testing.T, typ, k1, v1, k2, v2, k3, v3 string) {
		opts := map[string]string{}
		for _, kv := range [][2]string{{k1, v1}, {k2, v2}, {k3, v3}} {
			if isCredentialOption(kv[0]) {
				kv[1] = mark + kv[1]
			}
			opts[kv[0]] = kv[1]
		}
		_, err := planSeal(SealConfig{Type: typ, Options: opts})
		if err == nil {
			return
		}
		if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrUnavailable) {
			t.Fatalf("validation error of another class: %v", err)
		}
		if strings.Contains(err.Error(), mark) && !strings.Contains(typ+k1+k2+k3, mark) {
			t.Fatalf("error repeats a credential: %v", err)
		}
	})
}

func isCredentialOption(k string) bool {
	switch k {
	case "token", "pin", "secret_key", "access_key", "session_token", "client_secret":
		return true
	}
	return false
}
