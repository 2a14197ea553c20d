package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wirken/wirken/bpf"
)

func requireRootCLI(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("wirken doctor needs root, and CI=true forbids skipping")
	}
	t.Skip("wirken doctor needs root")
}

// The real probes on this kernel: every check passes.
func TestCLIDoctor(t *testing.T) {
	requireRootCLI(t)
	code, out, errOut := cli(t, "", "doctor")
	if code != 0 {
		t.Fatalf("doctor exit %d\n%s\n%s", code, out, errOut)
	}
	if !strings.Contains(out, "verdict: ok") {
		t.Errorf("no ok verdict:\n%s", out)
	}
	for _, h := range bpf.Hooks() {
		found := false
		for _, l := range strings.Split(out, "\n") {
			f := strings.Fields(l)
			if len(f) >= 3 && f[0] == "hook" && f[1] == h.Name {
				found = f[2] == "ok"
			}
		}
		if !found {
			t.Errorf("hook %s not ok:\n%s", h.Name, out)
		}
	}

	code, out, errOut = cli(t, "", "doctor", "--json")
	if code != 0 {
		t.Fatalf("doctor --json exit %d: %s", code, errOut)
	}
	var d struct {
		OK     bool
		Checks []struct{ Check, Status string }
	}
	if err := json.Unmarshal([]byte(out), &d); err != nil {
		t.Fatalf("doctor --json: %v\n%s", err, out)
	}
	if !d.OK || len(d.Checks) < len(bpf.Hooks())+5 {
		t.Errorf("doctor --json: %+v", d)
	}
}

// A scratch cgroup that cannot be made (the directory is not on cgroup2)
// makes every hook fail: exit 1 and a clear message on stderr.
func TestCLIDoctorFails(t *testing.T) {
	requireRootCLI(t)
	code, out, errOut := cli(t, "", "doctor", "--cgroup", t.TempDir())
	if code != 1 {
		t.Fatalf("doctor exit %d, want 1\n%s\n%s", code, out, errOut)
	}
	if !strings.Contains(errOut, "wirken: error: doctor: this host cannot run wirken: required checks not ok: hook connect4") {
		t.Errorf("stderr: %q", errOut)
	}
	if !strings.Contains(out, "not on a cgroup2 file system") || !strings.Contains(out, "verdict: FAILED") {
		t.Errorf("table:\n%s", out)
	}
}

// A bpffs that cannot be mounted (here: the mount point is a regular file)
// fails the doctor and says so; the hooks are still probed and pass.
func TestCLIDoctorBPFFSUnmountable(t *testing.T) {
	requireRootCLI(t)
	file := filepath.Join(t.TempDir(), "not-a-dir")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := cli(t, "", "doctor", "--bpffs-dir", file)
	if code != 1 {
		t.Fatalf("doctor exit %d, want 1\n%s\n%s", code, out, errOut)
	}
	if !strings.Contains(errOut, "required checks not ok: bpffs mount\n") {
		t.Errorf("stderr: %q", errOut)
	}
	if !strings.Contains(out, "mounting bpffs at "+file) {
		t.Errorf("table does not say why:\n%s", out)
	}
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) >= 3 && f[0] == "hook" && f[2] != "ok" {
			t.Errorf("hook row not ok: %q", l)
		}
	}
}
