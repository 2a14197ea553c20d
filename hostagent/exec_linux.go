package hostagent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// caEnv are the variables common runtimes read for their trust store; exec points them all at
// the bundle of system roots plus the wirken CA.
var caEnv = []string{"SSL_CERT_FILE", "CURL_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS"}

// ExecSpec says what to launch as which agent.
type ExecSpec struct {
	Agent string
	User  string // overrides the policy's user for the agent; "" keeps it
	Argv  []string
}

// Exec starts spec.Argv inside the agent's cgroup from its first instruction (clone3 with
// CLONE_INTO_CGROUP), waits for it and returns its exit code. It refuses to start anything the
// daemon has not registered, so an agent never runs unsteered.
func Exec(ctx context.Context, c *Client, spec ExecSpec) (int, error) {
	if len(spec.Argv) == 0 {
		return 0, errors.New("no command to run")
	}
	info, err := c.Agent(ctx, spec.Agent)
	if err != nil {
		return 0, err
	}
	fd, err := unix.Open(info.Cgroup, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("opening agent cgroup %s: %w", info.Cgroup, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, fmt.Errorf("checking agent cgroup %s: %w", info.Cgroup, err)
	}
	if st.Ino != info.CgroupID {
		return 0, fmt.Errorf("agent cgroup %s changed under us (id %d, daemon registered %d)", info.Cgroup, st.Ino, info.CgroupID)
	}

	cmd := exec.CommandContext(ctx, spec.Argv[0], spec.Argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = agentEnv(os.Environ(), info)
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
	who := spec.User
	if who == "" {
		who = info.User
	}
	if who != "" {
		cred, home, err := lookupUser(who)
		if err != nil {
			return 0, err
		}
		cmd.SysProcAttr.Credential = cred
		cmd.Env = setEnv(cmd.Env, "HOME", home)
		cmd.Env = setEnv(cmd.Env, "USER", who)
		cmd.Env = setEnv(cmd.Env, "LOGNAME", who)
	}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("starting %s in agent %s: %w", spec.Argv[0], spec.Agent, err)
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
	defer signal.Stop(sigs)
	go func() {
		for s := range sigs {
			_ = cmd.Process.Signal(s)
		}
	}()
	err = cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()), nil
		}
		return ee.ExitCode(), nil
	}
	if err != nil {
		return 0, fmt.Errorf("running %s: %w", spec.Argv[0], err)
	}
	return 0, nil
}

// agentEnv is the caller's environment with the trust variables pointed at the wirken bundle.
func agentEnv(env []string, info AgentInfo) []string {
	for _, k := range caEnv {
		env = setEnv(env, k, info.CABundle)
	}
	return setEnv(env, "WIRKEN_AGENT", info.Name)
}

func setEnv(env []string, key, val string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if k, _, _ := strings.Cut(kv, "="); k != key {
			out = append(out, kv)
		}
	}
	return append(out, key+"="+val)
}

func lookupUser(name string) (*syscall.Credential, string, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return nil, "", fmt.Errorf("looking up agent user: %w", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, "", fmt.Errorf("agent user %s: uid %q: %w", name, u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, "", fmt.Errorf("agent user %s: gid %q: %w", name, u.Gid, err)
	}
	// Only the primary group: the agent gets no supplementary groups (docker, adm, ...).
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, u.HomeDir, nil
}
