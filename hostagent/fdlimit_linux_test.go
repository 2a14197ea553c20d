package hostagent

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

func TestRaiseFileLimit(t *testing.T) {
	var orig unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &orig); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Setrlimit(unix.RLIMIT_NOFILE, &orig) })
	if orig.Max < 128 {
		t.Fatalf("hard open files limit %d is too low to test with", orig.Max)
	}
	// As a daemon started from a shell with `ulimit -Sn 64`.
	low := unix.Rlimit{Cur: 64, Max: orig.Max}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	got, err := raiseFileLimit()
	if err != nil {
		t.Fatal(err)
	}
	var now unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &now); err != nil {
		t.Fatal(err)
	}
	if got != orig.Max || now.Cur != orig.Max || now.Max != orig.Max {
		t.Fatalf("after raiseFileLimit: returned %d, limit %d/%d; want soft = hard = %d", got, now.Cur, now.Max, orig.Max)
	}
	if fileLimit() != orig.Max {
		t.Fatalf("fileLimit() = %d; want %d", fileLimit(), orig.Max)
	}
}

func TestOpenFilesCounts(t *testing.T) {
	before := openFiles()
	if before <= 0 {
		t.Fatalf("openFiles() = %d; want the test's descriptors", before)
	}
	var fs []*os.File
	for range 5 {
		f, err := os.Open(os.DevNull)
		if err != nil {
			t.Fatal(err)
		}
		fs = append(fs, f)
	}
	during := openFiles()
	for _, f := range fs {
		f.Close()
	}
	if during-before != 5 {
		t.Fatalf("openFiles() went from %d to %d with 5 files opened; want +5", before, during)
	}
	if after := openFiles(); after != before {
		t.Fatalf("openFiles() = %d after closing them; want %d", after, before)
	}
}
