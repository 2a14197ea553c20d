package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// cli runs the CLI in-process with stdin, and returns the exit code, stdout and stderr.
func cli(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	inR, inW, _ := os.Pipe()
	outR, outW, _ := os.Pipe()
	oldIn, oldOut, oldErr := os.Stdin, os.Stdout, os.Stderr
	os.Stdin, os.Stdout = inR, outW
	errR, errW, _ := os.Pipe()
	os.Stderr = errW
	go func() { io.WriteString(inW, stdin); inW.Close() }()
	code := run(args, errW)
	outW.Close()
	errW.Close()
	os.Stdin, os.Stdout, os.Stderr = oldIn, oldOut, oldErr
	out, _ := io.ReadAll(outR)
	errb, _ := io.ReadAll(errR)
	return code, string(out), string(errb)
}

func tempConfig(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "wirken.toml")
	os.WriteFile(filepath.Join(dir, "policy.toml"), []byte("version = 1\n[agents.demo]\n"), 0o644)
	os.WriteFile(cfg, []byte("policy = \"policy.toml\"\nstate_dir = \"state\"\n"), 0o644)
	return cfg
}

func TestCLIVault(t *testing.T) {
	cfg := tempConfig(t)
	b := make([]byte, 16)
	rand.Read(b)
	canary := "WKCANARY-" + hex.EncodeToString(b)

	if code, out, errs := cli(t, "", "vault", "init", "--config", cfg); code != 0 || !strings.Contains(out, "created vault") {
		t.Fatalf("vault init: %d %q %q", code, out, errs)
	}
	if code, _, errs := cli(t, "", "vault", "init", "--config", cfg); code != 1 || !strings.HasPrefix(errs, "wirken: error: ") {
		t.Fatalf("second vault init: exit %d, stderr %q; want a wirken: error", code, errs)
	}
	if code, out, _ := cli(t, "", "vault", "init", "--config", cfg, "--if-missing"); code != 0 || !strings.Contains(out, "keeping it") {
		t.Fatalf("vault init --if-missing: %d %q", code, out)
	}
	if code, _, errs := cli(t, canary+"\n", "vault", "put", "--config", cfg, "--host", "api.example.test", "api-key"); code != 0 {
		t.Fatalf("vault put: %d %q", code, errs)
	}
	// A value on the command line is refused: NAME is the only argument.
	if code, _, errs := cli(t, "", "vault", "put", "--config", cfg, "api-key", canary); code != 2 || strings.Contains(errs, canary) {
		t.Fatalf("vault put with a value argument: exit %d, stderr %q; want exit 2 without echoing it", code, errs)
	}
	if code, _, errs := cli(t, "", "vault", "put", "--config", cfg, "empty"); code != 1 || !strings.Contains(errs, "empty") {
		t.Fatalf("vault put with empty stdin: exit %d, stderr %q", code, errs)
	}
	code, out, _ := cli(t, "", "vault", "list", "--config", cfg)
	if code != 0 || !strings.Contains(out, "api-key") || !strings.Contains(out, "api.example.test") {
		t.Fatalf("vault list: %d %q", code, out)
	}
	if strings.Contains(out, canary) {
		t.Fatal("vault list printed a secret value")
	}
	code, out, _ = cli(t, "", "vault", "show", "--config", cfg, "api-key")
	if code != 0 || !strings.Contains(out, "version 1") || strings.Contains(out, canary) {
		t.Fatalf("vault show: %d %q; want metadata and never the value", code, out)
	}
	code, out, _ = cli(t, "", "vault", "status", "--config", cfg)
	if code != 0 || !strings.Contains(out, "generation") || !strings.Contains(out, "aead") {
		t.Fatalf("vault status: %d %q", code, out)
	}
	raw, _ := os.ReadFile(filepath.Join(filepath.Dir(cfg), "state", "vault.wkv"))
	if len(raw) == 0 || bytes.Contains(raw, []byte(canary)) {
		t.Fatal("the vault file is empty or holds the secret in clear")
	}
}

func TestCLIPolicyCheck(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.toml")
	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(good, []byte("version = 1\n[agents.demo]\n"), 0o644)
	os.WriteFile(bad, []byte("version = 1\n[agents.demo]\nusr = \"x\"\n"), 0o644)
	if code, out, _ := cli(t, "", "policy", "check", good); code != 0 || !strings.Contains(out, "ok") {
		t.Fatalf("good policy: %d %q", code, out)
	}
	code, _, errs := cli(t, "", "policy", "check", bad)
	if code != 1 || !strings.Contains(errs, bad+":3:1: agents.demo.usr") {
		t.Fatalf("bad policy: exit %d, stderr %q; want file:line:col and the field", code, errs)
	}
}

func TestCLIAuditVerifyExitCodes(t *testing.T) {
	if code, _, _ := cli(t, "", "audit", "verify", "--log", filepath.Join(t.TempDir(), "missing")); code != 2 {
		t.Fatalf("missing log: exit %d, want 2", code)
	}
	bad := filepath.Join(t.TempDir(), "bad.jsonl")
	os.WriteFile(bad, []byte("{\"v\":1,\"seq\":5}\n"), 0o600)
	if code, _, errs := cli(t, "", "audit", "verify", "--log", bad); code != 2 || !strings.Contains(errs, "no verifier key") {
		t.Fatalf("verify without a key: exit %d %q, want 2 naming the missing key", code, errs)
	}
	if code, _, errs := cli(t, "", "audit", "verify", "--no-pubkey", "--log", bad); code != 1 || !strings.Contains(errs, "TAMPERED") {
		t.Fatalf("bad log: exit %d %q, want 1", code, errs)
	}
	if code, _, _ := cli(t, "", "audit"); code != 2 {
		t.Fatalf("audit without subcommand: exit %d, want 2", code)
	}
}

func TestCLIUsage(t *testing.T) {
	if code, _, errs := cli(t, "", "frobnicate"); code != 2 || !strings.Contains(errs, `wirken: error: unknown command "frobnicate"`) {
		t.Fatalf("unknown command: %d %q", code, errs)
	}
	if code, out, _ := cli(t, "", "version"); code != 0 || !strings.HasPrefix(out, "wirken ") {
		t.Fatalf("version: %d %q", code, out)
	}
	if code, _, errs := cli(t, "", "exec", "--agent", "demo"); code != 2 || !strings.Contains(errs, "needs a command") {
		t.Fatalf("exec without a command: %d %q", code, errs)
	}
}
