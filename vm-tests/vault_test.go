//go:build linux

package vmtests

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestVaultLive rotates a credential while an agent loops on requests, then rolls the vault
// file back behind the daemon's back.
func TestVaultLive(t *testing.T) {
	e := newEnv(t)
	vaultFile := filepath.Join(e.dir, "state", "vault.wkv")
	oldVault, err := os.ReadFile(vaultFile)
	if err != nil {
		t.Fatal(err)
	}
	newValue := "WKCANARY2-" + randHex(t, 16)

	// The agent loops on requests in the background while the secret rotates under it.
	const n = 60
	loop := exec.Command(wirkenBin, "exec", "--agent", "demo", "--", "sh", "-c",
		`for i in $(seq 1 `+strconv.Itoa(n)+`); do curl -s -o /dev/null -w '%{http_code}\n' --max-time 10 https://api.example.test/echo; sleep 0.03; done`)
	loop.Env = append(os.Environ(), "WIRKEN_CONFIG="+e.config)
	var out lockedBuffer
	loop.Stdout = &out
	if err := loop.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	e.wirken(strings.NewReader(newValue+"\n"), "vault", "put", "--host", "api.example.test", "api-key").mustSucceed(t)
	if err := loop.Wait(); err != nil {
		t.Fatalf("agent loop: %v", err)
	}
	codes := strings.Fields(out.String())
	if len(codes) != n {
		t.Fatalf("agent made %d requests, want %d", len(codes), n)
	}
	for i, c := range codes {
		if c != "200" {
			t.Fatalf("request %d during the rotation got %s; none may fail", i, c)
		}
	}
	seen := e.api.seen()
	sawNew := false
	for i, a := range seen {
		switch a {
		case "Bearer " + e.canary:
			if sawNew {
				t.Fatalf("request %d carried the old value after one had carried the new", i)
			}
		case "Bearer " + newValue:
			sawNew = true
		default:
			t.Fatalf("request %d carried %q: neither the old nor the new value", i, a)
		}
	}
	if !sawNew {
		t.Fatal("no request carried the rotated value")
	}
	// After the daemon recorded the change, requests carry the new value.
	waitRecord(t, e, "vault.reload")
	before := len(e.api.seen())
	e.asAgent(curlArgs("api.example.test", "127.0.0.2", "/echo", "--fail")...).mustSucceed(t)
	if got := e.api.seen()[before]; got != "Bearer "+newValue {
		t.Fatalf("after the reload the upstream saw %q", got)
	}

	// A corrupted vault file is refused and the last good vault keeps serving.
	good, err := os.ReadFile(vaultFile)
	if err != nil {
		t.Fatal(err)
	}
	bad := append([]byte(nil), good...)
	bad[len(bad)/2] ^= 0x01
	if err := os.WriteFile(vaultFile, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !hasDecision(e.records("vault.reload"), "reject") {
		if time.Now().After(deadline) {
			t.Fatal("the corrupted vault file was not refused (no vault.reload reject record)")
		}
		time.Sleep(50 * time.Millisecond)
	}
	before = len(e.api.seen())
	e.asAgent(curlArgs("api.example.test", "127.0.0.2", "/echo", "--fail")...).mustSucceed(t)
	if got := e.api.seen()[before]; got != "Bearer "+newValue {
		t.Fatalf("with a corrupted vault file the upstream saw %q; want the last good value", got)
	}
	if err := os.WriteFile(vaultFile, good, 0o600); err != nil {
		t.Fatal(err)
	}

	// Roll the vault file back to before the put: the restarted daemon refuses it...
	e.killDaemon()
	if err := os.WriteFile(vaultFile, oldVault, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	refused := run(t, nil, exec.CommandContext(ctx, wirkenBin, "run", "--config", e.config))
	if refused.code == 0 || !strings.Contains(refused.stderr, "rollback") {
		t.Fatalf("the daemon started on a rolled-back vault: exit %d, stderr %q", refused.code, refused.stderr)
	}
	// ...unless the operator accepts it, which is audited.
	e.startDaemon("--accept-rollback")
	waitRecord(t, e, "vault.rollback")
	// Once accepted, later restarts (systemd's, say) need no flag.
	e.killDaemon()
	e.startDaemon()

	// A root key rotation changes the audit signing key: the verifier key file keeps both, and
	// the log, signed by the old key and then the new, still verifies.
	e.wirken(nil, "vault", "rotate", "root").mustSucceed(t)
	e.killDaemon()
	e.startDaemon()
	e.asAgent(curlArgs("api.example.test", "127.0.0.2", "/echo", "--fail")...).mustSucceed(t)
	e.killDaemon()
	keys, err := os.ReadFile(filepath.Join(e.dir, "state", "audit.pub"))
	if err != nil || strings.Count(strings.TrimSpace(string(keys)), "\n") != 1 {
		t.Fatalf("audit.pub after a root rotation: %q, %v; want two keys", keys, err)
	}
	e.wirken(nil, "audit", "verify").mustSucceed(t)
	for name, text := range map[string]string{"daemon log": e.logs.String(), "audit log": e.auditLog()} {
		if strings.Contains(text, newValue) {
			t.Errorf("the rotated secret appears in the %s", name)
		}
	}
}

// waitRecord waits until the audit log has a record of type typ.
func waitRecord(t *testing.T, e *env, typ string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(e.records(typ)) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no %s record after 10s", typ)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func hasDecision(recs []map[string]any, d string) bool {
	for _, r := range recs {
		if r["decision"] == d {
			return true
		}
	}
	return false
}
