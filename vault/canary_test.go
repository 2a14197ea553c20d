package vault

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

// TestCanaryAbsentFromManagement stores a canary, rotates, rewraps, reloads
// and fails in every way the management API can, and looks for the canary
// in every result, error and log line, and in every file version on disk.
func TestCanaryAbsentFromManagement(t *testing.T) {
	ctx := context.Background()
	daemon, cli, _ := daemonAndCLI(t)
	c := canary(t)
	mustPut(t, cli, "cred", c, "api.example.com")
	var out bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&out, nil))
	record := func(what string, v any) {
		j, _ := json.Marshal(v)
		fmt.Fprintf(&out, "%s %v %+v %#v %s\n", what, v, v, v, j)
		log.Info(what, "value", v)
	}
	files := [][]byte{readRaw(t, cli.Path())}
	step := func(what string, err error) {
		if err != nil {
			record(what+" error", err)
		}
		files = append(files, readRaw(t, cli.Path()))
	}

	// Positive control: the canary is really there.
	changed, err := daemon.Reload(ctx)
	step("reload", err)
	if got, err := get(daemon, "cred", "api.example.com"); !changed || err != nil || got != c {
		t.Fatalf("control: %v %v %v", changed, err, got == c)
	}

	_, err = cli.RotateKeyring(ctx)
	step("rotate keyring", err)
	step("rotate root", cli.RotateRoot(ctx))
	step("rewrap", cli.Rewrap(ctx, newSeal(t), nil))
	step("rewrap twice", cli.Rewrap(ctx, nil, []string{"s99"}))
	_, err = cli.Put(ctx, "cred", []byte(c+"-2"), Binding{Hosts: []string{"api.example.com"}})
	step("put", err)
	_, err = daemon.Reload(ctx)
	step("reload again", err)
	_, err = daemon.Put(ctx, "cred", []byte(c), Binding{}) // the daemon is current after its reload
	step("daemon put", err)
	_, err = cli.Put(ctx, "cred", []byte(c), Binding{}) // cli is now stale: ErrConflict
	if err == nil {
		t.Fatal("stale Put succeeded")
	}
	step("stale put", err)

	// A tampered file refused by Reload.
	writeRaw(t, cli.Path(), tamper(t, readRaw(t, cli.Path()), func(b *fileBody) { b.Secrets[0].Hosts = []string{"evil.example"} }))
	_, err = daemon.Reload(ctx)
	if err == nil {
		t.Fatal("tampered file reloaded")
	}
	step("tampered reload", err)

	for _, name := range []string{"cred", "missing"} {
		d, err := daemon.Show(name)
		record("show", d)
		step("show", err)
	}
	st, err := daemon.Status()
	record("status", st)
	record("entries", daemon.SealEntries())
	gen, vers := daemon.Versions()
	record("versions", fmt.Sprint(gen, vers))
	record("list", daemon.List())
	record("vault", daemon)

	// Seal configuration errors with the canary as a credential.
	t.Setenv("VAULT_MAX_RETRIES", "0") // connection refused at once, no backoff
	for _, cfg := range []SealConfig{
		{"transit", map[string]string{"address": "http://127.0.0.1:1", "token": c, "mount_path": "t", "key_name": "k"}},
		{"transit", map[string]string{"address": "https://x:" + c + "@h", "token": c, "mount_path": "t", "key_name": "k"}},
		{"awskms", map[string]string{"kms_key_id": "k", "region": "r", "access_key": c}},
		{"azurekeyvault", map[string]string{"vault_name": "v", "key_name": "k", "client_secret": c}},
		{"pkcs11", map[string]string{"lib": "/none.so", "token_label": "t", "pin": c, "key_label": "k"}},
	} {
		s, err := NewSeal(ctx, cfg)
		if err == nil {
			FinalizeSeal(ctx, s)
			t.Fatalf("%s: NewSeal succeeded", cfg.Type)
		}
		record("seal "+cfg.Type, err)
	}

	if strings.Contains(out.String(), c) {
		t.Fatalf("canary leaked:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "still serving generation") || !strings.Contains(out.String(), `"Name":"cred"`) {
		t.Fatalf("the test looked at nothing:\n%s", out.String())
	}
	for i, f := range files {
		if bytes.Contains(f, []byte(c)) {
			t.Fatalf("file version %d holds the canary in plain text", i)
		}
	}
}
