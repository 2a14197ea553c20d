//go:build linux

package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// fakeModule compiles a relocatable ELF object whose .modinfo section says
// depends=deps, as a kernel module's does, and saves it as dir/name.ko.
func fakeModule(t *testing.T, gcc, dir, name, deps string) {
	t.Helper()
	src := filepath.Join(t.TempDir(), name+".c")
	code := `static const char modinfo[] __attribute__((section(".modinfo"), used)) = "license=GPL\0depends=` + deps + `\0name=` + name + `";` + "\n"
	if err := os.WriteFile(src, []byte(code), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(gcc, "-c", "-o", filepath.Join(dir, name+".ko"), src).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
}

func TestStageModules(t *testing.T) {
	gcc := hostTool(t, "gcc")
	root := t.TempDir()
	net := filepath.Join(root, "kernel/drivers/net")
	lib := filepath.Join(root, "kernel/lib")
	for _, d := range []string{net, lib} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	fakeModule(t, gcc, net, "top", "mid,udp_tunnel")
	fakeModule(t, gcc, net, "mid", "udp_tunnel")
	fakeModule(t, gcc, lib, "udp-tunnel", "") // '-' in the file name, '_' in depends=
	fakeModule(t, gcc, net, "loop1", "loop2")
	fakeModule(t, gcc, net, "loop2", "loop1")
	fakeModule(t, gcc, net, "orphan", "absent")

	a := newArchive()
	if err := stageModules(a, root, []string{"top", "mid"}); err != nil {
		t.Fatal(err)
	}
	if got := string(a.entries["modules/order"].data); got != "udp-tunnel.ko\nmid.ko\ntop.ko\n" {
		t.Errorf("order = %q, want dependencies first", got)
	}
	for _, m := range []string{"top", "mid", "udp-tunnel"} {
		if e, ok := a.entries["modules/"+m+".ko"]; !ok || !strings.HasSuffix(e.source, m+".ko") {
			t.Errorf("module %s not staged: %+v", m, e)
		}
	}
	if _, ok := a.entries["modules/loop1.ko"]; ok {
		t.Error("a module nobody asked for was staged")
	}

	for _, tt := range []struct{ name, err string }{
		{"loop1", "cycle"},
		{"orphan", "module absent (needed by orphan)"},
		{"nosuch", "module nosuch (needed by -modules)"},
	} {
		if err := stageModules(newArchive(), root, []string{tt.name}); err == nil || !strings.Contains(err.Error(), tt.err) {
			t.Errorf("stageModules(%s) = %v, want an error containing %q", tt.name, err, tt.err)
		}
	}
	if err := stageModules(newArchive(), filepath.Join(root, "kernel/lib"), nil); err != nil {
		t.Errorf("no modules asked: %v", err)
	}
}
