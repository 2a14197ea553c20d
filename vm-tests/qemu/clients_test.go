//go:build linux

package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// hostTool returns the path of a program make deps installs; it skips without it, except
// under CI=true, where a skip would hide a failure.
func hostTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not installed (make deps installs it), and CI=true forbids skipping", name)
		}
		t.Skipf("%s is not installed; make deps installs it", name)
	}
	return p
}

func TestParseLdd(t *testing.T) {
	out := "\tlinux-vdso.so.1 (0x00007ffd)\n" +
		"\tlibcurl.so.4 => /lib/x86_64-linux-gnu/libcurl.so.4 (0x00007f0b)\n" +
		"\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0c)\n" +
		"\t/lib64/ld-linux-x86-64.so.2 (0x00007f0d)\n"
	got, err := parseLdd(out)
	want := []string{"/lib/x86_64-linux-gnu/libcurl.so.4", "/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"}
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("parseLdd = %q, %v; want %q", got, err, want)
	}
	if _, err := parseLdd(out + "\tlibgone.so.1 => not found\n"); err == nil || !strings.Contains(err.Error(), "libgone.so.1") {
		t.Fatalf("a missing library: err = %v; want one naming libgone.so.1", err)
	}
}

// TestStageClients stages the host's curl and checks that it comes with its
// loader and libc, and that a program the host lacks is refused.
func TestStageClients(t *testing.T) {
	hostTool(t, "curl")
	a := newArchive()
	if err := stageClients(context.Background(), a, []string{"curl"}); err != nil {
		t.Fatal(err)
	}
	var loader, libc bool
	for name, e := range a.entries {
		loader = loader || strings.HasPrefix(name, "lib64/ld-linux") && e.source != ""
		libc = libc || strings.HasSuffix(name, "/libc.so.6") && e.source != ""
	}
	if _, ok := a.entries["usr/bin/curl"]; !ok || !loader || !libc {
		t.Fatalf("staged curl=%v loader=%v libc=%v; want all three", ok, loader, libc)
	}
	if _, ok := a.entries["etc/nsswitch.conf"]; !ok {
		t.Error("no /etc/nsswitch.conf for the clients")
	}
	if err := stageClients(context.Background(), newArchive(), []string{"no-such-program-wirken"}); err == nil {
		t.Error("a program missing on the host was accepted")
	}
	script := filepath.Join(t.TempDir(), "wirken-script-client")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho hi\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", filepath.Dir(script)+":"+os.Getenv("PATH"))
	if err := stageClients(context.Background(), newArchive(), []string{filepath.Base(script)}); err == nil || !strings.Contains(err.Error(), "script") {
		t.Errorf("a script client: err = %v; want a refusal saying it is a script", err)
	}
	if err := stageClients(context.Background(), newArchive(), []string{"usr/bin/curl"}); err == nil {
		t.Error("a relative path was accepted as a program name")
	}
	if e := a.entries["bin/curl"]; e.mode != sIFLNK|0o777 || string(e.data) != "/usr/bin/curl" {
		t.Errorf("bin/curl = %+v; want a link to /usr/bin/curl", e)
	}
}

// TestStageClientsTree stages a directory tree: its files keep their modes, its links stay
// links, and a shared object in it brings the libraries it loads.
func TestStageClientsTree(t *testing.T) {
	curl := hostTool(t, "curl")
	libs, err := sharedLibs(context.Background(), curl)
	if err != nil {
		t.Fatal(err)
	}
	var libcurl string
	for _, l := range libs {
		if strings.Contains(filepath.Base(l), "libcurl") {
			libcurl = l
		}
	}
	if libcurl == "" {
		t.Fatalf("curl loads no libcurl: %q", libs)
	}
	so, err := os.ReadFile(libcurl)
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "lib-dynload"), 0o755)
	if err := os.WriteFile(filepath.Join(root, "lib-dynload", "_mod.so"), so, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "os.py"), []byte("# stdlib\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("os.py", filepath.Join(root, "alias.py")); err != nil {
		t.Fatal(err)
	}
	a := newArchive()
	if err := stageClients(context.Background(), a, []string{root}); err != nil {
		t.Fatal(err)
	}
	name := strings.TrimPrefix(root, "/")
	if e := a.entries[name+"/os.py"]; e.mode != sIFREG|0o640 {
		t.Errorf("os.py mode %o; want %o", e.mode, sIFREG|0o640)
	}
	if e := a.entries[name+"/alias.py"]; e.mode != sIFLNK|0o777 || string(e.data) != "os.py" {
		t.Errorf("alias.py = %+v; want a link to os.py", e)
	}
	var libc bool
	for n := range a.entries {
		libc = libc || strings.HasSuffix(n, "/libc.so.6")
	}
	if _, ok := a.entries[name+"/lib-dynload/_mod.so"]; !ok || !libc {
		t.Errorf("the .so staged=%v, with libc=%v; want both", ok, libc)
	}
	if err := stageClients(context.Background(), newArchive(), []string{filepath.Join(root, "missing")}); err == nil {
		t.Error("a missing absolute path was accepted")
	}
}

// TestSharedLibsStatic: the Go toolchain's own binary is static, so it needs no libraries.
func TestSharedLibsStatic(t *testing.T) {
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		t.Skipf("no %s: %v", goBin, err)
	}
	libs, err := sharedLibs(context.Background(), goBin)
	if err != nil || len(libs) != 0 {
		t.Fatalf("sharedLibs(%s) = %q, %v; want none", goBin, libs, err)
	}
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("no curl")
	}
	if libs, err := sharedLibs(context.Background(), curl); err != nil || len(libs) == 0 {
		t.Fatalf("sharedLibs(curl) = %q, %v; want its libraries", libs, err)
	}
}
