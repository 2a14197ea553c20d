package vmtests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestRunDetach: `wirken run --detach` removes the pinned programs and wirken's cgroups when it
// stops, but not while an agent still has processes: those would then reach the network
// unsteered, so the programs stay pinned and the agent stays fail-closed.
func TestRunDetach(t *testing.T) {
	e := newEnv(t) // started without --detach
	e.stopDaemon()
	e.startDaemon("--detach")
	agent := exec.Command(wirkenBin, "exec", "--config", e.config, "--agent", "demo", "--", "sleep", "60")
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	defer agent.Process.Kill()
	agents := filepath.Join(e.cgroup, "agents", "demo", "cgroup.procs")
	waitFor(t, "the agent in its cgroup", func() bool {
		b, _ := os.ReadFile(agents)
		return len(strings.TrimSpace(string(b))) > 0
	})
	e.stopDaemon()
	if !strings.Contains(e.logs.String(), "agents still run") {
		t.Fatalf("detach with an agent running was not refused:\n%s", e.logs)
	}
	if _, err := os.Stat(e.pinDir); err != nil {
		t.Fatalf("pins removed while an agent runs: %v", err)
	}
	// The agent is still steered, and with the daemon gone it is refused.
	r := e.asAgentNoDaemon("curl", "-sS", "--max-time", "5", "http://192.0.2.1/")
	if r.code == 0 {
		t.Fatalf("an agent reached the network after a refused detach: %+v", r)
	}

	os.WriteFile(filepath.Join(e.cgroup, "agents", "cgroup.kill"), []byte("1"), 0)
	agent.Wait()
	waitFor(t, "the agent gone", func() bool {
		b, _ := os.ReadFile(agents)
		return len(strings.TrimSpace(string(b))) == 0
	})

	e.startDaemon("--detach")
	e.stopDaemon()
	if _, err := os.Stat(e.pinDir); !os.IsNotExist(err) {
		t.Fatalf("pins still at %s after detach (%v):\n%s", e.pinDir, err, e.logs)
	}
	if _, err := os.Stat(e.cgroup); !os.IsNotExist(err) {
		t.Fatalf("cgroup %s still there after detach (%v):\n%s", e.cgroup, err, e.logs)
	}
}

// TestRunDetachBoundAgent: a bound agent's cgroup (a systemd unit's) loses its programs with
// the pins too, so `wirken run --detach` refuses while it has processes, and detaches once it
// has none.
func TestRunDetachBoundAgent(t *testing.T) {
	e := newEnv(t)
	name, unit := unitCgroup(t)
	pol, err := os.ReadFile(filepath.Join(e.dir, "policy.toml"))
	if err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(e.dir, "policy.toml"), append(pol, fmt.Sprintf("\n[agents.svc]\nuser = \"nobody\"\ncgroup = \"/%s\"\n", name)...))
	e.stopDaemon()
	e.startDaemon("--detach")
	waitFor(t, "the bound links", func() bool {
		_, err := os.Stat(filepath.Join(e.pinDir, "links", "bound", "svc"))
		return err == nil
	})
	fd, err := unix.Open(unit, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	svc := exec.Command("sleep", "60")
	svc.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
	if err := svc.Start(); err != nil {
		t.Fatal(err)
	}
	defer svc.Process.Kill()
	e.stopDaemon()
	if !strings.Contains(e.logs.String(), "agents still run") || !strings.Contains(e.logs.String(), "svc (bound to") {
		t.Fatalf("detach with a bound agent running was not refused:\n%s", e.logs)
	}
	if _, err := os.Stat(filepath.Join(e.pinDir, "links", "bound", "svc")); err != nil {
		t.Fatalf("bound links removed while the bound agent runs: %v", err)
	}

	svc.Process.Kill()
	svc.Wait()
	e.startDaemon("--detach")
	e.stopDaemon()
	if _, err := os.Stat(e.pinDir); !os.IsNotExist(err) {
		t.Fatalf("pins still at %s after detach (%v):\n%s", e.pinDir, err, e.logs)
	}
}

// stopDaemon sends SIGTERM and waits until the daemon has exited.
func (e *env) stopDaemon() {
	e.t.Helper()
	e.daemonMu.Lock()
	d := e.daemon
	e.daemon = nil
	e.daemonMu.Unlock()
	if d == nil || d.Process == nil {
		e.t.Fatal("no daemon to stop")
	}
	d.Process.Signal(syscall.SIGTERM)
	waitFor(e.t, "the daemon to exit", func() bool { return d.Process.Signal(syscall.Signal(0)) != nil })
}

// asAgentNoDaemon runs argv in the demo agent's cgroup without the daemon (whose exec needs the
// control socket): as nobody, put into the cgroup by a shell before it execs.
func (e *env) asAgentNoDaemon(argv ...string) result {
	procs := filepath.Join(e.cgroup, "agents", "demo", "cgroup.procs")
	script := `echo $$ > "$0" && exec setpriv --reuid=nobody --regid=nogroup --clear-groups "$@"`
	return run(e.t, nil, exec.Command("sh", append([]string{"-c", script, procs}, argv...)...))
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
