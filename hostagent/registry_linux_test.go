package hostagent

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wirken/wirken/bpf"
	"github.com/wirken/wirken/policy"
	"golang.org/x/sys/unix"
)

// regEnv is a loaded steering with its own cgroups and pins, for the registry.
type regEnv struct {
	reg   *registry
	steer *bpf.Steering
	dir   string // <own>/agents
	unit  string // a cgroup outside wirken's tree, as a systemd unit's
	rel   string // unit relative to the cgroup2 mount
	own   string // wirken's cgroup root
	pin   string // the pin directory
	mount string // the cgroup2 mount point
}

func newRegEnv(t *testing.T) *regEnv {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root (eBPF, cgroups), and CI=true forbids skipping it")
		}
		t.Skip("needs root (eBPF, cgroups)")
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	m, err := cgroup2Mount(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 6)
	rand.Read(b)
	suffix := hex.EncodeToString(b)
	own := filepath.Join(m.point, "wirken-regtest-"+suffix)
	e := &regEnv{dir: filepath.Join(own, "agents"), rel: "/wirken-regunit-" + suffix}
	e.unit = filepath.Join(m.point, e.rel)
	pin := "/sys/fs/bpf/wirken-regtest-" + suffix
	e.own, e.pin, e.mount = own, pin, m.point
	for _, d := range []string{own, e.dir, e.unit} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		if e.steer != nil {
			e.steer.Close()
		}
		if err := bpf.Remove(pin); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		os.WriteFile(filepath.Join(e.unit, "cgroup.kill"), []byte("1"), 0)
		ents, _ := os.ReadDir(e.dir)
		for _, d := range ents {
			unix.Rmdir(filepath.Join(e.dir, d.Name()))
		}
		for _, d := range []string{e.dir, own, e.unit} {
			if err := unix.Rmdir(d); err != nil && !errors.Is(err, unix.ENOENT) {
				t.Errorf("cleanup: %s: %v", d, err)
			}
		}
	})
	level, err := cgroupLevel(m.point, m.root, filepath.Join(e.dir, "x"))
	if err != nil {
		t.Fatal(err)
	}
	e.steer, err = bpf.Load(bpf.Config{AgentsCgroup: e.dir, AgentLevel: level, PinDir: pin, ProxyPort: 40123})
	if err != nil {
		t.Fatal(err)
	}
	e.reg = &registry{mount: m.point, mountRoot: m.root, byID: map[uint64]string{}, byName: map[string]agentCgroup{}}
	return e
}

func (e *regEnv) sync(t *testing.T, agents ...policy.Agent) {
	t.Helper()
	if err := e.reg.sync(agents, e.dir, e.steer, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatalf("sync: %v", err)
	}
}

func (e *regEnv) registered(t *testing.T, id uint64) bool {
	t.Helper()
	ok, err := e.steer.Registered(id)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

// TestRegistryDropsOldBoundIDs: a bound unit restarted (same path, new id) and an agent
// switched from bound to unbound leave no old id in the kernel's agents map.
func TestRegistryDropsOldBoundIDs(t *testing.T) {
	e := newRegEnv(t)
	bound := policy.Agent{Name: "svc", Cgroup: e.rel}
	e.sync(t, bound)
	id1 := e.reg.byName["svc"].id
	if id1 == 0 || !e.registered(t, id1) {
		t.Fatalf("bound agent not registered (id %d)", id1)
	}
	// The unit restarts: a new cgroup at the same path.
	if err := unix.Rmdir(e.unit); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(e.unit, 0o755); err != nil {
		t.Fatal(err)
	}
	e.sync(t, bound)
	id2 := e.reg.byName["svc"].id
	if id2 == id1 || !e.registered(t, id2) {
		t.Fatalf("re-bound id %d (old %d) not registered", id2, id1)
	}
	if e.registered(t, id1) {
		t.Errorf("the restarted unit's old id %d is still registered", id1)
	}
	// Bound to unbound.
	e.sync(t, policy.Agent{Name: "svc"})
	if e.registered(t, id2) {
		t.Errorf("the bound id %d is still registered after the agent became unbound", id2)
	}
	if id3 := e.reg.byName["svc"].id; !e.registered(t, id3) {
		t.Errorf("agents/svc (id %d) not registered", id3)
	}
}

// TestRegistryMissingBoundCgroup: a stopped unit (missing cgroup) does not fail the sync of the
// other agents; the agent is bound when its cgroup appears.
func TestRegistryMissingBoundCgroup(t *testing.T) {
	e := newRegEnv(t)
	if err := unix.Rmdir(e.unit); err != nil {
		t.Fatal(err)
	}
	e.sync(t, policy.Agent{Name: "svc", Cgroup: e.rel}, policy.Agent{Name: "other"})
	other, ok := e.reg.lookup("other")
	if !ok || !e.registered(t, other.id) {
		t.Fatalf("the other agent was not registered: %+v", other)
	}
	if got := e.reg.staleBound(); len(got) != 0 {
		t.Fatalf("staleBound with the unit stopped = %v, want none", got)
	}
	if err := os.Mkdir(e.unit, 0o755); err != nil {
		t.Fatal(err)
	}
	if got := e.reg.staleBound(); len(got) != 1 || got[0] != "svc" {
		t.Fatalf("staleBound once the unit is back = %v, want [svc]", got)
	}
	e.sync(t, policy.Agent{Name: "svc", Cgroup: e.rel}, policy.Agent{Name: "other"})
	svc, _ := e.reg.lookup("svc")
	if svc.id == 0 || !e.registered(t, svc.id) {
		t.Fatalf("svc not bound once its cgroup appeared: %+v", svc)
	}
}

// TestDetachRefusesWhileBoundAgentRuns: uninstall and `run --detach` remove the pins, which
// detaches the programs from bound agents' cgroups too: they refuse while a bound cgroup has
// processes, and with force kill them.
func TestDetachRefusesWhileBoundAgentRuns(t *testing.T) {
	e := newRegEnv(t)
	e.sync(t, policy.Agent{Name: "svc", Cgroup: e.rel})
	bound, err := bpf.BoundCgroups(e.pin, e.mount)
	if err != nil {
		t.Fatal(err)
	}
	if len(bound) != 1 || bound["svc"] != e.unit {
		t.Fatalf("BoundCgroups = %v, want svc: %s", bound, e.unit)
	}
	fd, err := unix.Open(e.unit, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	cmd := exec.Command("sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer cmd.Process.Kill()

	var out strings.Builder
	err = emptyCgroups(e.own, bound, false, &out)
	if err == nil || !strings.Contains(err.Error(), "svc (bound to "+e.unit) {
		t.Fatalf("emptyCgroups with a bound agent running = %v; want a refusal naming svc", err)
	}
	if err := emptyCgroups(e.own, bound, true, &out); err != nil {
		t.Fatalf("emptyCgroups with force: %v", err)
	}
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatal("the bound agent's process was not killed")
	}
	if !strings.Contains(out.String(), "killed") {
		t.Fatalf("output %q does not say what was killed", out.String())
	}
}
