//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64 || wasm)

package bpf

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// probeParent returns the cgroup2 mount point the probes may use.
func probeParent(t *testing.T) string {
	t.Helper()
	requirePrivileged(t)
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	mnt, err := parseCgroup2Mount(f)
	if err != nil {
		t.Fatalf("no cgroup2 mount: %v", err)
	}
	return mnt.MountPoint
}

// leftovers lists the scratch cgroups and bpffs mounts a probe might leave.
func leftovers(t *testing.T, parent string) []string {
	t.Helper()
	cgs, err := filepath.Glob(filepath.Join(parent, "wirken-probe-*"))
	if err != nil {
		t.Fatal(err)
	}
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(mi), "\n") {
		if strings.Contains(line, "wirken-probe-bpffs-") {
			cgs = append(cgs, line)
		}
	}
	return cgs
}

func TestProbeAllHooks(t *testing.T) {
	parent := probeParent(t)
	before := leftovers(t, parent)
	r := Probe(ProbeOptions{CgroupParent: parent})
	if r.BPFFS.Err != nil || !strings.Contains(r.BPFFS.Detail, "a map and a link pinned") {
		t.Errorf("bpffs: %v (%s)", r.BPFFS.Err, r.BPFFS.Detail)
	}
	if len(r.Hooks) != len(Hooks()) || len(r.Hooks) != len(hookTypes) {
		t.Fatalf("%d hook results for %d hooks (%d types)", len(r.Hooks), len(Hooks()), len(hookTypes))
	}
	for i, h := range r.Hooks {
		if h.Name != Hooks()[i].Name {
			t.Errorf("result %d is %q, want %q", i, h.Name, Hooks()[i].Name)
		}
		if h.Err != nil {
			t.Errorf("hook %s: %v", h.Name, h.Err)
		}
	}
	sawPrograms := false
	for _, f := range r.Features {
		if f.Err != nil {
			t.Errorf("%s: %v", f.Name, f.Err)
		}
		if f.Name == "wirken programs" {
			sawPrograms = true
			if !strings.Contains(f.Detail, "programs and") {
				t.Errorf("wirken programs detail: %q", f.Detail)
			}
		}
	}
	if !sawPrograms {
		t.Error("the steering object was not probed")
	}
	if after := leftovers(t, parent); len(after) != len(before) {
		t.Errorf("probe left scratch objects behind: %q (before: %q)", after, before)
	}
}

// A bpffs that cannot be mounted is reported as a failure (not as a kernel
// lacking it), and the hooks are still probed.
func TestProbeBPFFSUnmountable(t *testing.T) {
	parent := probeParent(t)
	notADir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notADir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	r := Probe(ProbeOptions{CgroupParent: parent, BPFFSDir: notADir})
	if r.BPFFS.Err == nil || errors.Is(r.BPFFS.Err, ErrMissing) || !strings.Contains(r.BPFFS.Err.Error(), notADir) {
		t.Errorf("bpffs on a regular file: err = %v, want a failure naming %s", r.BPFFS.Err, notADir)
	}
	for _, h := range r.Hooks {
		if h.Err != nil {
			t.Errorf("hook %s: %v", h.Name, h.Err)
		}
	}
	if _, err := os.Stat(notADir); err != nil {
		t.Errorf("the given mount point was touched: %v", err)
	}
}

// Without a cgroup2 directory every hook is a failure naming the cause.
func TestProbeNoCgroup(t *testing.T) {
	requirePrivileged(t)
	dir := t.TempDir()
	r := Probe(ProbeOptions{CgroupParent: dir})
	for _, h := range r.Hooks {
		if h.Err == nil || !strings.Contains(h.Err.Error(), "not on a cgroup2 file system") {
			t.Errorf("hook %s in a non-cgroup directory: err = %v", h.Name, h.Err)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("probe wrote into %s: %v", dir, ents)
	}
}
