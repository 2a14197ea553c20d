//go:build linux

package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The archive is checked with Debian's cpio, an independent reader of the
// newc format (make deps installs it).
func TestArchiveReadByCpio(t *testing.T) {
	bin := hostTool(t, "cpio")
	dir := t.TempDir()
	src := filepath.Join(dir, "big")
	big := bytes.Repeat([]byte("0123456789abcdef"), 4097) // not a multiple of 4 after the tail below
	big = append(big, 'x', 'y', 'z')
	if err := os.WriteFile(src, big, 0o600); err != nil {
		t.Fatal(err)
	}
	a := newArchive()
	a.file("tests/deep/dir/big.test", src, 0o755)
	a.bytes("plan.json", []byte(`[1]`), 0o644)
	a.bytes("empty", nil, 0o600)
	a.chardev("dev/console", 0o600, 5, 1)
	a.dir("proc")
	var buf bytes.Buffer
	if err := a.Write(&buf); err != nil {
		t.Fatal(err)
	}
	if buf.Len()%4 != 0 {
		t.Errorf("archive length %d is not a multiple of 4", buf.Len())
	}

	list := exec.Command(bin, "-itv", "--quiet")
	list.Stdin = bytes.NewReader(buf.Bytes())
	out, err := list.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -it: %v\n%s", err, out)
	}
	listing := string(out)
	for _, want := range []string{"tests/deep/dir/big.test", "tests/deep/dir", "tests/deep", "plan.json", "empty", "proc"} {
		if !strings.Contains(listing, " "+want+"\n") {
			t.Errorf("cpio does not list %s:\n%s", want, listing)
		}
	}
	if !strings.Contains(listing, "crw-------") || !strings.Contains(listing, "5,   1") && !strings.Contains(listing, "5, 1") {
		t.Errorf("no char device 5,1 in:\n%s", listing)
	}
	if strings.Index(listing, " tests/deep\n") > strings.Index(listing, " tests/deep/dir/big.test\n") {
		t.Errorf("a directory comes after what it holds:\n%s", listing)
	}

	extract := exec.Command(bin, "-idm", "--quiet", "--no-absolute-filenames", "--nonmatching", "dev/console")
	extract.Dir = t.TempDir()
	extract.Stdin = bytes.NewReader(buf.Bytes())
	if out, err := extract.CombinedOutput(); err != nil {
		t.Fatalf("cpio -id: %v\n%s", err, out)
	}
	got, err := os.ReadFile(filepath.Join(extract.Dir, "tests/deep/dir/big.test"))
	if err != nil || !bytes.Equal(got, big) {
		t.Errorf("extracted file differs (%d bytes, want %d): %v", len(got), len(big), err)
	}
	if st, err := os.Stat(filepath.Join(extract.Dir, "tests/deep/dir/big.test")); err != nil || st.Mode().Perm() != 0o755 {
		t.Errorf("extracted mode: %v %v", st.Mode(), err)
	}
	if got, _ := os.ReadFile(filepath.Join(extract.Dir, "plan.json")); string(got) != "[1]" {
		t.Errorf("plan.json = %q", got)
	}
}
