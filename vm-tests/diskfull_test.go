//go:build linux

package vmtests

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// TestAuditDiskFull fills the disk under the audit log while agents make requests: every
// request is answered 503 and nothing reaches the upstream; when space returns, so does service.
func TestAuditDiskFull(t *testing.T) {
	requireRoot(t)
	dir, err := os.MkdirTemp("", "wirken-e2e-auditfs-")
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=512k,mode=0700"); err != nil {
		t.Fatalf("mounting a small tmpfs for the audit log: %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Logf("cleanup: unmounting %s: %v", dir, err)
		}
		os.Remove(dir)
	})
	e := newEnvWith(t, envOptions{auditDir: dir})
	e.asAgent(curlArgs("api.example.test", "127.0.0.2", "/echo", "--fail")...).mustSucceed(t)

	filler := filepath.Join(dir, "filler")
	fill(t, filler)
	// The log's last page may still hold a record or two: requests that fit are audited and
	// may go; the first 503 shows the disk is really full. Every request that went upstream
	// must have its durable record.
	// The agent's DNS needs a durable record too: with the disk full a lookup fails and nothing
	// is asked upstream. The requests below use the address the agent resolved above (still
	// within its TTL), so they reach the proxy.
	for i := 0; ; i++ {
		r := e.asAgent(curlArgs("api.example.test", "127.0.0.2", "/echo")...)
		if r.code != 0 && strings.Contains(r.stderr, "resolve") {
			break
		}
		if i == 30 {
			t.Fatalf("name lookups still work after %d tries with the audit disk full: exit %d, %q", i, r.code, r.stderr)
		}
	}
	t.Log("what the agent saw with the audit disk full: name lookups fail (no DNS answer without a durable dns record)")
	asked := len(e.dnsUp.queries())
	if r := e.asAgent(curlArgs("api.example.test", "127.0.0.2", "/echo")...); r.code == 0 {
		t.Errorf("name lookup with the audit disk full succeeded: %q", r.stdout)
	}
	if n := len(e.dnsUp.queries()) - asked; n != 0 {
		t.Errorf("%d DNS queries went upstream while nothing could be audited", n)
	}
	usesBefore, upBefore := len(e.records("credential.use")), len(e.api.seen())
	for i := 0; ; i++ {
		r := e.asAgent(curlResolveArgs("api.example.test", "127.0.0.2", "/echo", "-w", "\n%{http_code}")...)
		if strings.HasSuffix(strings.TrimSpace(r.stdout), "503") {
			break
		}
		if i == 30 {
			t.Fatalf("no 503 after %d requests with the disk full: %q", i, r.stdout)
		}
	}
	if ups, uses := len(e.api.seen())-upBefore, len(e.records("credential.use"))-usesBefore; ups != uses {
		t.Fatalf("%d requests reached the upstream but only %d were audited", ups, uses)
	}
	before := len(e.api.seen())

	// Load: several agents at once, each of whose requests needs a durable record first.
	const n = 8
	results := make([]result, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = e.asAgent(curlResolveArgs("api.example.test", "127.0.0.2", "/echo", "-w", "\n%{http_code}")...)
		}()
	}
	wg.Wait()
	for i, r := range results {
		if !strings.HasSuffix(strings.TrimSpace(r.stdout), "503") || !strings.Contains(r.stdout, "wirken: audit log unavailable") {
			t.Errorf("request %d with the audit disk full: %q; want a 503 saying the audit log is unavailable", i, r.stdout)
		}
	}
	if got := len(e.api.seen()); got != before {
		t.Fatalf("%d requests reached the upstream while nothing could be audited", got-before)
	}
	t.Logf("what the agent saw with the audit disk full: %d concurrent requests each answered %q; the upstream received none",
		n, strings.ReplaceAll(strings.TrimSpace(results[0].stdout), "\n", " "))
	if !strings.Contains(e.logs.String(), "AUDIT LOG UNAVAILABLE") {
		t.Error("the daemon did not say loudly that the audit log is unavailable")
	}

	// Space returns: service resumes by itself and the log still verifies.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	e.asAgent(curlArgs("api.example.test", "127.0.0.2", "/echo", "--fail")...).mustSucceed(t)
	if got := len(e.api.seen()); got != before+1 {
		t.Fatalf("after space returned the upstream saw %d requests; want 1", got-before)
	}
	v := e.wirken(nil, "audit", "verify").mustSucceed(t)
	t.Logf("space back: the agent got 200 again with no restart; audit verify: %s", strings.TrimSpace(v.stdout))
}

// fill writes path until the file system is full.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return
			}
			t.Fatal(err)
		}
	}
}
