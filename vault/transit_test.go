package vault

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeTransit implements the two calls of Vault's transit secrets engine
// the seal uses: POST|PUT /v1/<mount>/encrypt/<key> {"plaintext": b64} →
// {"data":{"ciphertext":"vault:v<N>:…"}} and /decrypt/<key> back, under
// key versions it can rotate, with a fixed token. It records every path.
type fakeTransit struct {
	token, mount, key string

	mu       sync.Mutex
	versions [][]byte // key version i+1
	paths    []string
}

func newFakeTransit(t *testing.T, token string, tlsServer bool) (*fakeTransit, *httptest.Server) {
	f := &fakeTransit{token: token, mount: "transit", key: "wirken"}
	f.rotate(t)
	var srv *httptest.Server
	if tlsServer {
		srv = httptest.NewTLSServer(f)
	} else {
		srv = httptest.NewServer(f)
	}
	t.Cleanup(srv.Close)
	return f, srv
}

func (f *fakeTransit) rotate(t *testing.T) {
	k := make([]byte, keyLen)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.versions = append(f.versions, k)
	f.mu.Unlock()
}

func (f *fakeTransit) called(path string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, p := range f.paths {
		if p == path {
			n++
		}
	}
	return n
}

func (f *fakeTransit) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.paths = append(f.paths, r.URL.Path)
	versions := append([][]byte(nil), f.versions...)
	f.mu.Unlock()
	fail := func(code int, msg string) {
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(map[string]any{"errors": []string{msg}})
	}
	if r.Header.Get("X-Vault-Token") != f.token {
		fail(http.StatusForbidden, "permission denied")
		return
	}
	if r.Method != http.MethodPost && r.Method != http.MethodPut {
		fail(http.StatusMethodNotAllowed, "method")
		return
	}
	var in map[string]string
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		fail(http.StatusBadRequest, "bad json")
		return
	}
	reply := func(data map[string]string) { json.NewEncoder(w).Encode(map[string]any{"data": data}) }
	prefix := "/v1/" + f.mount + "/"
	switch r.URL.Path {
	case prefix + "encrypt/" + f.key:
		pt, err := base64.StdEncoding.DecodeString(in["plaintext"])
		if err != nil {
			fail(http.StatusBadRequest, "plaintext is not base64")
			return
		}
		ct, err := sealGCM(versions[len(versions)-1], pt, []byte(f.key))
		if err != nil {
			fail(http.StatusInternalServerError, err.Error())
			return
		}
		reply(map[string]string{"ciphertext": fmt.Sprintf("vault:v%d:%s", len(versions), base64.StdEncoding.EncodeToString(ct))})
	case prefix + "decrypt/" + f.key:
		parts := strings.Split(in["ciphertext"], ":")
		ver, err := strconv.Atoi(strings.TrimPrefix(parts[min(1, len(parts)-1)], "v"))
		if len(parts) != 3 || parts[0] != "vault" || err != nil || ver < 1 || ver > len(versions) {
			fail(http.StatusBadRequest, "invalid ciphertext")
			return
		}
		ct, err := base64.StdEncoding.DecodeString(parts[2])
		if err != nil || len(ct) < gcmOverhead {
			fail(http.StatusBadRequest, "invalid ciphertext")
			return
		}
		pt := make([]byte, len(ct)-gcmOverhead)
		if err := openGCMInto(versions[ver-1], ct, []byte(f.key), pt); err != nil {
			fail(http.StatusBadRequest, "cipher: message authentication failed")
			return
		}
		reply(map[string]string{"plaintext": base64.StdEncoding.EncodeToString(pt)})
	default:
		fail(http.StatusNotFound, "no handler for route")
	}
}

// transitConfig is the seal configuration for f served at srv.
func transitConfig(srv *httptest.Server, f *fakeTransit, extra map[string]string) SealConfig {
	o := map[string]string{"address": srv.URL, "token": f.token, "mount_path": f.mount, "key_name": f.key}
	for k, v := range extra {
		if v == "" {
			delete(o, k)
		} else {
			o[k] = v
		}
	}
	return SealConfig{Type: "transit", Options: o}
}

func newTransitSeal(t *testing.T, cfg SealConfig) Seal {
	t.Helper()
	s, err := NewSeal(context.Background(), cfg)
	if err != nil {
		t.Fatalf("NewSeal: %v", err)
	}
	t.Cleanup(func() { FinalizeSeal(context.Background(), s) })
	return s
}

// TestTransitRoundTrip creates, fills and reopens a vault sealed by transit
// (plain HTTP on loopback, and TLS with tls_ca_cert and token_file), then
// survives a transit key rotation.
func TestTransitRoundTrip(t *testing.T) {
	for _, useTLS := range []bool{false, true} {
		t.Run(fmt.Sprint("tls=", useTLS), func(t *testing.T) {
			tok := canary(t)
			f, srv := newFakeTransit(t, tok, useTLS)
			extra := map[string]string{}
			if useTLS {
				dir := t.TempDir()
				ca := filepath.Join(dir, "ca.pem")
				pemCert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
				tokFile := filepath.Join(dir, "token")
				if err := os.WriteFile(ca, pemCert, 0o644); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(tokFile, []byte(tok+"\n"), 0o600); err != nil {
					t.Fatal(err)
				}
				extra = map[string]string{"tls_ca_cert": ca, "token": "", "token_file": tokFile}
			}
			cfg := transitConfig(srv, f, extra)
			seal := newTransitSeal(t, cfg)
			path := filepath.Join(t.TempDir(), "vault.wv")
			if err := Create(context.Background(), path, seal); err != nil {
				t.Fatal(err)
			}
			v, err := Open(context.Background(), path, seal)
			if err != nil {
				t.Fatal(err)
			}
			mustPut(t, v, "cred", "c1", "api.example.com")
			e := v.SealEntries()
			if len(e) != 1 || e[0].Type != "transit" || e[0].KeyID != "v1" || e[0].Hint != "address="+srv.URL+" mount_path=transit key_name=wirken" {
				t.Fatalf("seal entry %+v", e)
			}
			v.Close()

			// A fresh seal from the same configuration (a restarted daemon) opens it.
			openWith(t, path, newTransitSeal(t, cfg), "c1")

			// The transit key rotates: the wrapper now reports key ID "v2", yet
			// the entry (matched by its hint) still opens, and a rewrap moves
			// the root key to the new key version.
			f.rotate(t)
			s2 := newTransitSeal(t, cfg)
			if kid, _ := s2.KeyId(context.Background()); kid != "v2" {
				t.Fatalf("key id after rotation %q", kid)
			}
			w, err := Open(context.Background(), path, s2)
			if err != nil {
				t.Fatalf("Open after transit key rotation: %v", err)
			}
			defer w.Close()
			if err := w.Rewrap(context.Background(), nil, []string{"s1"}); !errors.Is(err, ErrInvalid) {
				t.Fatalf("removing the only entry: %v", err)
			}
			if err := w.RotateRoot(context.Background()); err != nil {
				t.Fatal(err)
			}
			if e := w.SealEntries(); len(e) != 1 || e[0].ID != "s1" || e[0].KeyID != "v2" {
				t.Fatalf("after RotateRoot: %+v", e)
			}
			openWith(t, path, s2, "c1")
			if n := f.called("/v1/auth/token/renew-self"); n != 0 {
				t.Fatalf("token renewal ran %d times with renewal disabled by default", n)
			}
		})
	}
}

// TestTransitAndAEADEntries: a vault with an aead and a transit entry opens
// with either one.
func TestTransitAndAEADEntries(t *testing.T) {
	f, srv := newFakeTransit(t, canary(t), false)
	tr := newTransitSeal(t, transitConfig(srv, f, nil))
	v, local := newVault(t)
	mustPut(t, v, "cred", "c1", "api.example.com")
	if err := v.Rewrap(context.Background(), tr, nil); err != nil {
		t.Fatal(err)
	}
	openWith(t, v.Path(), tr, "c1")
	openWith(t, v.Path(), local, "c1")
	// Drop the local entry: only transit opens it now.
	if err := v.Rewrap(context.Background(), nil, []string{"s1"}); err != nil {
		t.Fatal(err)
	}
	openWith(t, v.Path(), tr, "c1")
	if _, err := Open(context.Background(), v.Path(), local); !errors.Is(err, ErrSeal) {
		t.Fatalf("local seal after its entry was dropped: %v", err)
	}
}

func TestTransitFailures(t *testing.T) {
	tok := canary(t)
	f, srv := newFakeTransit(t, tok, false)
	release := make(chan struct{})
	hung := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release // answers only when the test ends
	}))
	t.Cleanup(hung.Close)
	t.Cleanup(func() { close(release) })
	tests := []struct {
		name    string
		cfg     SealConfig
		timeout time.Duration
		want    string
	}{
		{"wrong token", transitConfig(srv, f, map[string]string{"token": "not-" + tok}), 10 * time.Second, "permission denied"},
		{"wrong key name", transitConfig(srv, f, map[string]string{"key_name": "other"}), 10 * time.Second, "Code: 404"},
		{"server never answers", transitConfig(hung, f, nil), 300 * time.Millisecond, "context deadline exceeded"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), tc.timeout)
			defer cancel()
			start := time.Now()
			s, err := NewSeal(ctx, tc.cfg)
			if err == nil {
				FinalizeSeal(context.Background(), s)
				t.Fatal("NewSeal succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), tok) {
				t.Fatalf("NewSeal = %v; want %q and no token", err, tc.want)
			}
			if time.Since(start) > tc.timeout+2*time.Second {
				t.Fatalf("NewSeal took %v, past its deadline", time.Since(start))
			}
		})
	}
}

// TestTransitRenewal: with disable_renewal = "false" the wrapper renews its
// token (here the server refuses, and the seal still works).
func TestTransitRenewal(t *testing.T) {
	f, srv := newFakeTransit(t, canary(t), false)
	s := newTransitSeal(t, transitConfig(srv, f, map[string]string{"disable_renewal": "false"}))
	if n := f.called("/v1/auth/token/renew-self"); n != 1 {
		t.Fatalf("renew-self called %d times, want 1", n)
	}
	if err := FinalizeSeal(context.Background(), s); err != nil {
		t.Fatal(err)
	}
}
