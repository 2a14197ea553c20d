package vault

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const childEnv = "WIRKEN_VAULT_UNPRIVILEGED_CHILD"

// TestUnprivilegedLowMemlock runs the vault tests that use the most locked
// memory again as an unprivileged user (no CAP_IPC_LOCK) with the historical
// 64 KiB RLIMIT_MEMLOCK, where memguard would panic after 16 pages without
// the page budget. It needs root to switch users.
func TestUnprivilegedLowMemlock(t *testing.T) {
	if os.Getenv(childEnv) != "" {
		// In the child: prove it really runs unprivileged under the low limit, so the
		// parent's test means something.
		var rl unix.Rlimit
		if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &rl); err != nil {
			t.Fatal(err)
		}
		if os.Geteuid() == 0 || rl.Cur != 64<<10 {
			t.Fatalf("child euid %d, memlock %d; want unprivileged with 64 KiB", os.Geteuid(), rl.Cur)
		}
		return
	}
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root to start a child as another user, and CI=true forbids skipping")
		}
		t.Skip("needs root to start a child as another user")
	}
	if testing.Short() {
		t.Skip("short mode")
	}
	// A copy of the test binary that the unprivileged user may execute.
	dir, err := os.MkdirTemp("", "vault-unpriv-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "vault.test")
	copyFile(t, self, bin)

	// Without the budget memguard panics or hangs; the timeout turns a hang into a failure.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-test.run=^(TestUnprivilegedLowMemlock|TestConcurrentWithSecret|TestRoundTrip|TestRevealAndDestroy|TestRotateWhileReading|TestReloadPicksUpChanges)$", "-test.count=1", "-test.v")
	cmd.Env = []string{childEnv + "=1", "TMPDIR=" + os.TempDir(), "PATH=/usr/bin:/bin"}
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}

	// The child inherits the soft limit; this (root) process is not bound by it.
	lockedPages() // size this process's budget from the real limit first
	var orig unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &orig); err != nil {
		t.Fatal(err)
	}
	low := orig
	low.Cur = 64 << 10
	if err := unix.Setrlimit(unix.RLIMIT_MEMLOCK, &low); err != nil {
		t.Fatal(err)
	}
	out, err := func() ([]byte, error) {
		defer unix.Setrlimit(unix.RLIMIT_MEMLOCK, &orig)
		return cmd.CombinedOutput()
	}()
	if err != nil {
		t.Fatalf("unprivileged run failed: %v\n%s", err, out)
	}
	for _, want := range []string{"--- PASS: TestUnprivilegedLowMemlock", "--- PASS: TestConcurrentWithSecret", "--- PASS: TestRoundTrip",
		"--- PASS: TestRevealAndDestroy", "--- PASS: TestRotateWhileReading", "--- PASS: TestReloadPicksUpChanges"} {
		if !strings.Contains(string(out), want) {
			t.Fatalf("child output lacks %q:\n%s", want, out)
		}
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}
