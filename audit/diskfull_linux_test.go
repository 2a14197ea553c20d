//go:build linux

package audit

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// requireRoot skips a privileged test when not root, except under CI=true,
// where skipping would hide a gap, so it fails instead.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("this test needs root (CI=true does not allow skipping it)")
	}
	t.Skip("needs root to mount a tmpfs")
}

// mountTmpfs mounts a tmpfs of the given size in a fresh temp dir and
// unmounts it at cleanup, even if the test fails. Register it before
// anything that must be closed first (cleanups run last-in first-out).
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "tmpfs")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("wirken-audit-test", dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "size="+size+",mode=0700"); err != nil {
		t.Fatalf("mounting tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmounting %s: %v; detaching", dir, err)
			_ = syscall.Unmount(dir, syscall.MNT_DETACH)
		}
	})
	return dir
}

// fill writes a file until the file system is full.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 4096)
	for i := 0; ; i++ {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling: %v", err)
			}
			break
		}
		if i > 1<<16 {
			t.Fatal("the tmpfs never filled up")
		}
	}
	// Byte-sized writes take what is left of the last page.
	for {
		if _, err := f.Write(chunk[:1]); err != nil {
			break
		}
	}
}

// TestDiskFullFailsClosedAndRecovers fills a small tmpfs holding a signed
// log: Appends, concurrent ones included, fail with ENOSPC and leave no
// partial record; once space is freed the next Append succeeds on the next
// seq and the log verifies, checkpoints and all. With small segments the
// disk also fills up around rotations.
func TestDiskFullFailsClosedAndRecovers(t *testing.T) {
	requireRoot(t)
	tests := []struct {
		name    string
		segSize int64
	}{
		{"one segment", DefaultSegmentSize},
		{"rotating every 3 KiB", 3 << 10},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			diskFull(t, tc.segSize)
		})
	}
}

func diskFull(t *testing.T, segSize int64) {
	dir := mountTmpfs(t, "64k")
	s := testSigner(t, testOrigin)
	path := filepath.Join(dir, "audit.jsonl")
	logger, logs := testLogger()
	l, err := Open(path, logger, WithSigner(s), WithCheckpointEvery(8, 0), WithSegmentSize(segSize))
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			_ = l.Close()
		}
	})
	rec := Record{Type: TypeCredentialUse, Agent: "agent-7", Credential: "anthropic-prod", Host: "api.anthropic.com"}
	var last Entry
	for range 20 {
		last = mustAppend(t, l, rec)
	}
	filler := filepath.Join(dir, "filler")
	fill(t, filler)

	// The log's last page may still have room for a record or two.
	var firstErr error
	for range 100 {
		e, err := l.Append(rec)
		if err != nil {
			firstErr = err
			break
		}
		last = e
	}
	if firstErr == nil {
		t.Fatal("Append kept succeeding on a full file system")
	}
	if !errors.Is(firstErr, syscall.ENOSPC) {
		t.Fatalf("Append on a full disk = %v, want ENOSPC", firstErr)
	}
	paths, err := SegmentPaths(path)
	if err != nil {
		t.Fatal(err)
	}
	durable := make(map[string]int64)
	for _, p := range paths {
		durable[p] = fileSize(t, p)
	}
	// Under load: every concurrent Append fails, none is half-written.
	const workers = 32
	var wg sync.WaitGroup
	errs := make(chan error, workers*5)
	for range workers {
		wg.Go(func() {
			for range 5 {
				_, err := l.Append(rec)
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err == nil {
			t.Fatal("an Append succeeded while the disk was full")
		}
	}
	for p, size := range durable {
		if got := fileSize(t, p); got != size {
			t.Fatalf("%s is %d bytes after failed appends, want the durable %d", p, got, size)
		}
	}
	if sum, err := VerifyFiles(paths); err != nil || sum.Records < last.Seq+1 || sum.Records > last.Seq+3 {
		t.Fatalf("while full: %+v, %v; last acknowledged seq %d", sum, err, last.Seq)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	e := mustAppend(t, l, rec)
	if e.Seq <= last.Seq {
		t.Fatalf("seq %d after recovery, last before was %d", e.Seq, last.Seq)
	}
	closed = true
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if paths, err = SegmentPaths(path); err != nil {
		t.Fatal(err)
	}
	sum, err := VerifyFiles(paths, WithVerifierKey(s.VerifierKey()))
	if err != nil {
		t.Fatal(err)
	}
	if sum.Unsealed != 0 || sum.Records < e.Seq+1 {
		t.Fatalf("summary %+v after recovery", sum)
	}
	p, err := ProveFiles(paths, e.Seq)
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckProof(p, s.VerifierKey()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "level=ERROR") {
		t.Fatalf("the failure was not logged loudly: %s", logs.String())
	}
}
