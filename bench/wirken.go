package main

// wirken under test: its configurations (the ablation's steps), its daemon's restarts, start-up
// timing, and the eBPF statistics of its connect4 program.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/wirken/wirken/demo/zone"
	"github.com/wirken/wirken/hostagent"
)

// variant is one configuration of the daemon.
type variant struct {
	name       string
	credential bool // the rule injects the vault's credential
	diskAudit  bool // the audit log on the disk (else tmpfs, where fsync is free)
	otel       bool // spans and metrics exported over OTLP/HTTP to the bench's receiver
}

// variants are the ablation's steps in order; "full" is the wirken path everywhere else.
var variants = []variant{
	{name: "policy"},
	{name: "+vault", credential: true},
	{name: "+audit-fsync", credential: true, diskAudit: true},
	{name: "full", credential: true, diskAudit: true, otel: true},
}

func variantNamed(name string) (variant, error) {
	for _, v := range variants {
		if v.name == name {
			return v, nil
		}
	}
	return variant{}, fmt.Errorf("no configuration %q", name)
}

// renderPolicy is the policy of v: the agent may GET and POST under the upstream's /v1/.
func renderPolicy(v variant) string {
	cred, rule := "", ""
	if v.credential {
		cred = fmt.Sprintf("credentials.llm = { secret = \"llm-key\", hosts = [%q], header = \"Authorization\", format = \"Bearer {secret}\" }\n", host)
		rule = `, credential = "llm"`
	}
	return fmt.Sprintf("version = 1\nagents.%[1]s = { user = \"nobody\" }\n%[3]srules = [{ name = \"bench-llm\", agent = %[1]q, hosts = [%[2]q], ports = [443], "+
		"methods = [\"GET\", \"POST\"], paths = [\"/v1/\"]%[4]s }]\n", agent, host, cred, rule)
}

// renderConfig is the daemon's config of v: its own state, cgroup tree, pin dir and resolver
// upstream; the audit log on tmpfs (shm) unless v puts it on the disk.
func renderConfig(v variant, policyFile, cgroup, pinDir, dnsAddr, shm string) string {
	audit := ""
	if !v.diskAudit {
		audit = fmt.Sprintf("audit = { log = %q }\n", filepath.Join(shm, "audit.jsonl"))
	}
	return fmt.Sprintf(`policy = %q
state_dir = "state"
control_socket = "state/control.sock"
proxy = { port = 15001, upstream_ca_files = ["upca.pem"] }
cgroup = { root = %q }
bpf = { pin_dir = %q }
dns = { upstreams = [%q] }
log = { format = "json", level = "warn" }
%s`, policyFile, cgroup, pinDir, dnsAddr, audit)
}

// daemonEnv is the daemon's environment for v: OTLP to the bench's receiver, or no export.
func daemonEnv(v variant) []string {
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "OTEL_") {
			env = append(env, e)
		}
	}
	if v.otel {
		return append(env, "OTEL_EXPORTER_OTLP_ENDPOINT=http://"+otlpAddr, "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf")
	}
	return append(env, "OTEL_TRACES_EXPORTER=none", "OTEL_METRICS_EXPORTER=none")
}

// prepareWirken writes the configs of every variant, a vault with the credential and a CA.
func (b *bench) prepareWirken() error {
	var err error
	if b.dns, err = zone.Start(map[string]string{host: upAddr}); err != nil {
		return err
	}
	if err := os.MkdirAll(b.shm, 0o700); err != nil {
		return err
	}
	for _, v := range variants {
		pol := "policy-" + strings.TrimPrefix(v.name, "+") + ".toml"
		files := map[string]string{pol: renderPolicy(v), "wirken-" + strings.TrimPrefix(v.name, "+") + ".toml": renderConfig(v, pol, b.cgroup, b.pinDir, b.dns.Addr, b.shm)}
		for name, data := range files {
			if err := os.WriteFile(filepath.Join(b.dir, name), []byte(data), 0o644); err != nil {
				return err
			}
		}
	}
	b.config = b.configFile("full")
	for _, args := range [][]string{{"vault", "init"}, {"ca", "init"}} {
		if _, err := b.wirken("", args...); err != nil {
			return err
		}
	}
	secret := make([]byte, 16)
	rand.Read(secret)
	_, err = b.wirken("sk-bench-"+hex.EncodeToString(secret)+"\n", "vault", "put", "--host", host, "llm-key")
	return err
}

func (b *bench) configFile(v string) string {
	return filepath.Join(b.dir, "wirken-"+strings.TrimPrefix(v, "+")+".toml")
}

// startDaemon (re)starts the daemon in configuration name, pinned to CPU 1, and times it from
// exec to the first status its control socket answers, polled every millisecond from this
// process (b.readyMs; exec'ing `wirken status` would add that process's own start to each poll),
// keeping the daemon's own timing of its start-up steps (b.startupPhases).
func (b *bench) startDaemon(name string) error {
	if b.variant == name && b.daemon != nil {
		return nil
	}
	v, err := variantNamed(name)
	if err != nil {
		return err
	}
	b.stopDaemon()
	b.config = b.configFile(name)
	b.daemonLog.Reset()
	b.daemon = exec.Command("taskset", "-c", "1", b.bin, "run", "--config", b.config)
	b.daemon.Env = daemonEnv(v)
	b.daemon.Stdout, b.daemon.Stderr = &b.daemonLog, &b.daemonLog
	t0 := time.Now()
	if err := b.daemon.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	b.daemonGone = make(chan struct{})
	go func(cmd *exec.Cmd, gone chan struct{}) { exited <- cmd.Wait(); close(gone) }(b.daemon, b.daemonGone)
	ctl := hostagent.NewClient(filepath.Join(b.dir, "state", "control.sock"))
	for deadline := t0.Add(20 * time.Second); ; {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		st, err := ctl.Status(ctx)
		cancel()
		if err == nil {
			b.readyMs = float64(time.Since(t0).Microseconds()) / 1000
			b.startupPhases = st.Startup
			break
		}
		if time.Now().After(deadline) {
			return errors.New("the daemon did not start within 20 s")
		}
		select {
		case err := <-exited:
			b.daemon = nil
			return fmt.Errorf("the daemon exited during start-up: %v", err)
		case <-time.After(time.Millisecond):
		}
	}
	b.variant = name
	return nil
}

func (b *bench) stopDaemon() {
	if b.daemon != nil && b.daemonGone != nil {
		pid := b.daemon.Process.Pid
		halt(func(s syscall.Signal) { syscall.Kill(pid, s) }, b.daemonGone, 15*time.Second)
	}
	b.daemon, b.variant = nil, ""
}

// wirkenPath is the load client run by `wirken exec` in the agent's cgroup, calling the host by
// name with no proxy settings: its DNS and connect() are steered to the daemon.
func (b *bench) wirkenPath(setup func() error) path {
	return path{name: "wirken", pid: func() int {
		if b.daemon == nil {
			return 0
		}
		return b.daemon.Process.Pid
	}, wrap: []string{b.bin, "exec", "--config", b.configFile("full"), "--agent", agent, "--"},
		wrkURL: "https://" + host, wrkScript: filepath.Join(b.dir, "post.lua"), loadURL: "https://" + host, setup: setup}
}

// ablationPaths are wirken in each variant, restarted into it before its run.
func (b *bench) ablationPaths() []path {
	var ps []path
	for _, v := range variants {
		name := v.name
		p := b.wirkenPath(func() error {
			if err := b.startDaemon(name); err != nil {
				return err
			}
			// Wait for the first proxied answer, then a short warm-up (the upstream pool, the minted
			// certificate), not counted; on a busy machine it may complete no request.
			if _, err := b.load(b.loadArgs(b.wirkenPath(nil), "/v1/chat/completions", "-mode", "probe", "-timeout", "20s"), nil); err != nil {
				return err
			}
			b.wrk(b.wrkArgs(b.wirkenPath(nil), b.conns, 2*time.Second))
			return nil
		})
		p.name = name
		ps = append(ps, p)
	}
	return ps
}

// startup is wirken's restarts: exec to ready (status answers) and to the first proxied answer.
type startup struct {
	readyMs, firstMs, rssMB []float64
	phases                  map[string][]float64 // the daemon's start-up steps, ms per restart
	phaseOrder              []string
	auditMB                 float64 // the audit log's size at the restarts
	errs                    []string
}

func (b *bench) startupRuns(paths []path) *startup {
	st := &startup{phases: map[string][]float64{}}
	if !b.pathsOn["wirken"] {
		return st
	}
	fmt.Printf("== startup (%d restarts)\n", b.trialsN)
	files, _ := filepath.Glob(filepath.Join(b.dir, "state", "audit*"))
	for _, f := range files {
		if fi, err := os.Stat(f); err == nil {
			st.auditMB += float64(fi.Size()) / (1 << 20)
		}
	}
	for i := 0; i < b.trialsN; i++ {
		b.stopDaemon()
		t0 := time.Now()
		if err := b.startDaemon("full"); err != nil {
			st.errs = append(st.errs, err.Error())
			continue
		}
		st.readyMs = append(st.readyMs, b.readyMs)
		st.addPhases(b.startupPhases)
		// The first answer an agent gets: a probe started by `wirken exec` as soon as it is ready.
		fig, err := b.load(b.loadArgs(b.wirkenPath(nil), "/v1/chat/completions", "-mode", "probe", "-timeout", "20s"), nil)
		if err != nil {
			st.errs = append(st.errs, err.Error())
			continue
		}
		st.firstMs = append(st.firstMs, (fig["ok_unix_ns"]-float64(t0.UnixNano()))/1e6)
		time.Sleep(2 * time.Second)
		st.rssMB = append(st.rssMB, float64(rssKB(b.daemon.Process.Pid))/1024)
		fmt.Printf("   restart %d: ready %.0f ms, first proxied answer %.0f ms\n", i+1, b.readyMs, st.firstMs[len(st.firstMs)-1])
	}
	return st
}

// connectDirect is the connect workload's bracket: the same calls outside the agent's cgroup,
// to the upstream's address.
func (b *bench) connectDirect() path {
	return path{name: "direct", loadURL: "https://" + host, connectTo: upAddr + ":443"}
}

// connectRun times connect() calls through p and, for wirken, reads the connect4 program's
// statistics over the run.
func (b *bench) connectRun(p path) (map[string]float64, error) {
	var prog *ebpf.Program
	if p.name != "direct" {
		l, err := link.LoadPinnedLink(filepath.Join(b.pinDir, "links", "connect4"), nil)
		if err != nil {
			return nil, fmt.Errorf("opening the pinned connect4 link: %w", err)
		}
		defer l.Close()
		info, err := l.Info()
		if err != nil {
			return nil, fmt.Errorf("reading the connect4 link: %w", err)
		}
		if prog, err = ebpf.NewProgramFromID(info.Program); err != nil {
			return nil, fmt.Errorf("opening the connect4 program: %w", err)
		}
		defer prog.Close()
	}
	stat := func() (time.Duration, uint64) {
		if prog == nil {
			return 0, 0
		}
		st, err := prog.Stats()
		if err != nil {
			return 0, 0
		}
		return st.Runtime, st.RunCount
	}
	rt0, rc0 := stat()
	fig, err := b.load(b.loadArgs(p, "/", "-mode", "connect", "-n", "5000"), nil)
	rt1, rc1 := stat()
	if err != nil {
		return nil, err
	}
	if prog != nil {
		if rc1 == rc0 {
			return nil, errors.New("the connect4 program did not run (are BPF statistics on?)")
		}
		fig["bpf_runs"] = float64(rc1 - rc0)
		fig["bpf_ns_per_run"] = float64((rt1 - rt0).Nanoseconds()) / float64(rc1-rc0)
	}
	return fig, nil
}

// withBPFStats turns the kernel's BPF run-time statistics on for f (BPF_ENABLE_STATS: they
// stay on while the returned descriptor is open, and go back to the sysctl's setting after).
func (b *bench) withBPFStats(f func() *result) *result {
	c, err := ebpf.EnableStats(unix.BPF_STATS_RUN_TIME)
	if err != nil {
		return &result{err: fmt.Sprintf("enabling BPF statistics: %v", err)}
	}
	defer c.Close()
	return f()
}

// otlpReceived asks the bench's receiver what wirken exported.
func otlpReceived() string {
	c, err := httpGet("http://" + otlpAddr + "/stats")
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	return strings.TrimSpace(c)
}

func copyFile(from, to string, mode os.FileMode) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// writeBlob writes n bytes of random data (so no layer can compress it).
func writeBlob(file string, n int64) error {
	f, err := os.OpenFile(file, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.CopyN(f, rand.Reader, n); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

var fileGlob = filepath.Glob

func httpGet(url string) (string, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	return string(raw), err
}

// addPhases keeps one restart's start-up steps, and the steps' order.
func (st *startup) addPhases(phases []hostagent.StartupPhase) {
	for _, p := range phases {
		if _, ok := st.phases[p.Name]; !ok {
			st.phaseOrder = append(st.phaseOrder, p.Name)
		}
		st.phases[p.Name] = append(st.phases[p.Name], p.Ms)
	}
}
