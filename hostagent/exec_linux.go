package hostagent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// caEnv are the variables common runtimes read for their trust store (OpenSSL and Go, curl,
// Python requests, Node, git, the AWS SDKs and CLI, Deno, Cargo); exec points them all at the
// bundle of system roots plus the wirken CA. SSL_CERT_DIR is set apart: it names a directory.
var caEnv = []string{"SSL_CERT_FILE", "CURL_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS",
	"GIT_SSL_CAINFO", "AWS_CA_BUNDLE", "DENO_CERT", "CARGO_HTTP_CAINFO"}

// ExecSpec says what to launch as which agent.
type ExecSpec struct {
	Agent     string
	User      string // overrides the policy's user for the agent; "" keeps it
	AllowRoot bool   // let the agent run as uid 0 (it could then leave its cgroup)
	Argv      []string
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

	who := spec.User
	if who == "" {
		who = info.User
	}
	if who == "" {
		return 0, fmt.Errorf("agent %s has no user: set `user` in the policy or pass --user (agents do not run as root)", spec.Agent)
	}
	cred, home, err := lookupUser(who)
	if err != nil {
		return 0, err
	}
	if cred.Uid == 0 && !spec.AllowRoot {
		return 0, fmt.Errorf("agent %s would run as root (user %s), which could leave its cgroup and read wirken's keys; pass --allow-root if you mean it", spec.Agent, who)
	}

	cmd := exec.CommandContext(ctx, spec.Argv[0], spec.Argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = agentEnv(os.Environ(), info)
	cmd.Env = setEnv(cmd.Env, "HOME", home)
	cmd.Env = setEnv(cmd.Env, "USER", who)
	cmd.Env = setEnv(cmd.Env, "LOGNAME", who)
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd, Credential: cred}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	if err := startNoNewPrivs(cmd); err != nil {
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

// startNoNewPrivs starts cmd with no_new_privs set, so the agent can never gain privileges
// through a setuid or file-capability binary (sudo, ping). The flag is per thread and inherited
// by the child, so it is set on a locked thread that is then discarded.
func startNoNewPrivs(cmd *exec.Cmd) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with this goroutine
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			errc <- fmt.Errorf("setting no_new_privs: %w", err)
			return
		}
		errc <- cmd.Start()
	}()
	return <-errc
}

// agentEnv is the caller's environment with the trust variables pointed at the wirken bundle.
func agentEnv(env []string, info AgentInfo) []string {
	for _, k := range caEnv {
		env = setEnv(env, k, info.CABundle)
	}
	if info.CertDir != "" {
		env = setEnv(env, "SSL_CERT_DIR", info.CertDir)
	}
	for k, v := range info.Env { // placeholders, never secrets
		env = setEnv(env, k, v)
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
