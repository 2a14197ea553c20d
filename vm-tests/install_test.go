//go:build linux

package vmtests

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// installEnv is a wirken installed into a temporary root (DESTDIR) with a prefix inside it, so
// the unit names a binary that exists and systemd-analyze can check it on this host.
type installEnv struct {
	t       *testing.T
	root    string
	bin     string // the installed binary
	config  string // the installed wirken.toml
	cgroup  string
	pinDir  string
	daemon  *exec.Cmd
	exited  chan error
	logs    *lockedBuffer
	agentCh chan result
}

func (ie *installEnv) run(stdin *strings.Reader, bin string, args ...string) result {
	ie.t.Helper()
	return runWirken(ie.t, bin, ie.config, stdin, args...)
}

func (ie *installEnv) stopDaemon() {
	if ie.daemon == nil {
		return
	}
	ie.daemon.Process.Signal(syscall.SIGTERM)
	select {
	case <-ie.exited:
	case <-time.After(20 * time.Second):
		ie.daemon.Process.Kill()
		<-ie.exited
	}
	ie.daemon = nil
}

func (ie *installEnv) cleanup() {
	ie.stopDaemon()
	removeCgroupTree(ie.t, ie.cgroup)
	os.RemoveAll(ie.pinDir)
	os.RemoveAll(ie.root)
}

// unitCapabilities reads CapabilityBoundingSet from a unit, as setpriv names them.
func unitCapabilities(t *testing.T, unit string) []string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^CapabilityBoundingSet=(.*)$`).FindStringSubmatch(unit)
	if m == nil {
		t.Fatal("the unit has no CapabilityBoundingSet")
	}
	var caps []string
	for _, c := range strings.Fields(m[1]) {
		caps = append(caps, strings.ToLower(strings.TrimPrefix(c, "CAP_")))
	}
	return caps
}

// TestInstallLifecycle installs into a temporary root, checks the layout and the unit, runs
// the installed daemon with exactly the unit's capability bounding set and no_new_privs, runs
// an agent, asks for status, reloads, and uninstalls (refused while an agent runs, then with
// --force, then --purge), checking that the kernel and the file system are clean.
func TestInstallLifecycle(t *testing.T) {
	requireRoot(t)
	for _, tool := range []string{"systemd-analyze", "setpriv", "curl", "update-ca-certificates"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is required (make deps installs it): %v", tool, err)
		}
	}
	uniq := randHex(t, 4)
	root, err := os.MkdirTemp("", "wirken-install-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(root, 0o755)
	ie := &installEnv{t: t, root: root, config: filepath.Join(root, "etc/wirken/wirken.toml"),
		cgroup: filepath.Join(cgroup2Mount(t), "wirken-inst-"+uniq), pinDir: "/sys/fs/bpf/wirken-inst-" + uniq,
		logs: &lockedBuffer{}}
	t.Cleanup(ie.cleanup)
	prefix := filepath.Join(root, "usr/local")
	ie.bin = filepath.Join(prefix, "bin/wirken")

	upCA := newTestCA(t)
	api := startUpstream(t, "127.0.0.2:443", upCA.leaf(t, "api.example.test"))
	canary := "WKCANARY-" + randHex(t, 16)
	// The host's resolver as far as the installed daemon knows: agents resolve through wirken.
	dnsUp := startDNSUpstream(t, map[string]string{"api.example.test": "127.0.0.2"})

	promAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	// An operator's wirken.toml exists before install: it must be kept. Its relative paths keep
	// state, socket and audit log inside the install root.
	if err := os.MkdirAll(filepath.Dir(ie.config), 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(root, "etc/wirken/upstream-ca.pem"), upCA.pem)
	myConfig := []byte(fmt.Sprintf(`policy = "policy.toml"
state_dir = "../../var/lib/wirken"
control_socket = "../../run/wirken/control.sock"
[proxy]
port = %d
upstream_ca_files = ["upstream-ca.pem"]
[audit]
checkpoint_interval = 0.2
[cgroup]
root = %q
[bpf]
pin_dir = %q
[metrics]
prometheus = %q
[dns]
port = %d
upstreams = [%q]
`, freePort(t), filepath.Base(ie.cgroup), ie.pinDir, promAddr, freePort(t), dnsUp.addr))
	write(t, ie.config, myConfig)

	t.Run("install lays out the host and keeps existing configuration", func(t *testing.T) {
		r := ie.run(nil, wirkenBin, "install", "--root", root, "--prefix", prefix).mustSucceed(t)
		if !strings.Contains(r.stdout, "kept "+ie.config) || !strings.Contains(r.stdout, "created "+filepath.Join(root, "etc/wirken/policy.toml")) {
			t.Fatalf("install said:\n%s", r.stdout)
		}
		if got, _ := os.ReadFile(ie.config); !bytes.Equal(got, myConfig) {
			t.Fatal("install overwrote the existing wirken.toml")
		}
		for path, mode := range map[string]os.FileMode{
			ie.bin: 0o755, filepath.Join(root, "etc/wirken"): 0o755 | os.ModeDir,
			filepath.Join(root, "etc/wirken/policy.toml"): 0o644, filepath.Join(root, "var/lib/wirken"): 0o711 | os.ModeDir,
			filepath.Join(root, "var/lib"): 0o755 | os.ModeDir, filepath.Join(root, "etc/systemd/system/wirken.service"): 0o644,
		} {
			st, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode()&(os.ModeDir|os.ModePerm) != mode {
				t.Errorf("%s: mode %v, want %v", path, st.Mode(), mode)
			}
		}
		want, _ := os.ReadFile(wirkenBin)
		got, _ := os.ReadFile(ie.bin)
		if sha256.Sum256(want) != sha256.Sum256(got) {
			t.Fatal("the installed binary is not the one that ran install")
		}
		again := ie.run(nil, wirkenBin, "install", "--root", root, "--prefix", prefix).mustSucceed(t)
		if strings.Count(again.stdout, "kept ") != 2 || !strings.Contains(again.stdout, "up to date") {
			t.Fatalf("a second install should keep both configs and the unit:\n%s", again.stdout)
		}
	})

	unitPath := filepath.Join(root, "etc/systemd/system/wirken.service")
	unitText, err := os.ReadFile(unitPath)
	if err != nil {
		t.Fatal(err)
	}
	unit := string(unitText)

	t.Run("the unit is hardened and systemd accepts it", func(t *testing.T) {
		for _, want := range []string{"ExecStart=" + ie.bin + " run", "Delegate=yes", "ProtectSystem=strict",
			"ProtectHome=yes", "PrivateTmp=yes", "NoNewPrivileges=yes", "Restart=on-failure", "ReadWritePaths="} {
			if !strings.Contains(unit, "\n"+want) {
				t.Errorf("the unit lacks %q", want)
			}
		}
		caps := unitCapabilities(t, unit)
		for _, c := range caps {
			if c == "sys_ptrace" || c == "sys_module" || c == "setuid" || c == "chown" {
				t.Errorf("the unit grants %s, which the daemon does not need", c)
			}
		}
		out, err := exec.Command("systemd-analyze", "verify", unitPath).CombinedOutput()
		if err != nil || len(bytes.TrimSpace(out)) != 0 {
			t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
		}
		// The check can fail: a broken setting is reported.
		bad := filepath.Join(root, "bad.service")
		write(t, bad, []byte(strings.Replace(unit, "Delegate=yes", "Delegate=maybe", 1)))
		if out, _ := exec.Command("systemd-analyze", "verify", bad).CombinedOutput(); !strings.Contains(string(out), "maybe") {
			t.Fatalf("systemd-analyze did not flag a bad unit: %s", out)
		}
	})

	t.Run("the installed daemon runs with the unit's capabilities only", func(t *testing.T) {
		// What ExecStartPre does on a first start.
		ie.run(nil, ie.bin, "vault", "init", "--if-missing").mustSucceed(t)
		ie.run(nil, ie.bin, "ca", "init", "--if-missing").mustSucceed(t)
		ie.run(strings.NewReader(canary+"\n"), ie.bin, "vault", "put", "--host", "api.example.test", "demo").mustSucceed(t)

		caps := unitCapabilities(t, unit)
		bounding := "-all,+" + strings.Join(caps, ",+")
		cmd := exec.Command("setpriv", "--bounding-set", bounding, "--inh-caps", "-all", "--no-new-privs", "--", ie.bin, "run")
		cmd.Env = append(os.Environ(), "WIRKEN_CONFIG="+ie.config)
		cmd.Stdout, cmd.Stderr = ie.logs, ie.logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		ie.daemon, ie.exited = cmd, make(chan error, 1)
		go func() { ie.exited <- cmd.Wait() }()
		deadline := time.Now().Add(20 * time.Second)
		for ie.run(nil, ie.bin, "status").code != 0 {
			select {
			case err := <-ie.exited:
				ie.daemon = nil
				t.Fatalf("daemon exited during start-up with bounding set %s: %v\n%s", bounding, err, ie.logs)
			case <-time.After(100 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				t.Fatalf("daemon not ready after 20s\n%s", ie.logs)
			}
		}
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
		if err != nil {
			t.Fatal(err)
		}
		// setpriv execs the daemon in place: this is the daemon's own status.
		if !strings.Contains(string(status), "NoNewPrivs:\t1") {
			t.Errorf("daemon runs without no_new_privs:\n%s", status)
		}
		if m := regexp.MustCompile(`CapBnd:\s+([0-9a-f]+)`).FindStringSubmatch(string(status)); m == nil || m[1] == "000001ffffffffff" {
			t.Errorf("daemon's bounding set is not reduced: %v", m)
		}
	})
	if ie.daemon == nil {
		t.FailNow()
	}

	t.Run("an agent runs, and status shows it", func(t *testing.T) {
		r := ie.run(nil, ie.bin, append([]string{"exec", "--agent", "demo", "--"}, curlArgs("api.example.test", "127.0.0.2", "/v1", "--fail")...)...).mustSucceed(t)
		if seen := api.seen(); len(seen) != 1 || seen[0] != "Bearer "+canary {
			t.Fatalf("upstream saw %q (curl said %q)", seen, r.stdout)
		}
		// --user overrides the policy's user, and the agent still runs unprivileged.
		who := ie.run(nil, ie.bin, "exec", "--agent", "demo", "--user", "daemon", "--", "sh", "-c", "id -un; grep -E '^(CapEff|NoNewPrivs)' /proc/self/status").mustSucceed(t)
		if !strings.HasPrefix(who.stdout, "daemon\n") || !strings.Contains(who.stdout, "CapEff:\t0000000000000000") || !strings.Contains(who.stdout, "NoNewPrivs:\t1") {
			t.Fatalf("exec --user daemon: %q; want user daemon with no capabilities and no_new_privs", who.stdout)
		}
		// A long-running agent, to be seen by status and met by uninstall.
		ie.agentCh = make(chan result, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, ie.bin, "exec", "--agent", "demo", "--", "sleep", "100")
			cmd.Env = append(os.Environ(), "WIRKEN_CONFIG="+ie.config)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			err := cmd.Run()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			}
			ie.agentCh <- result{code: code, stdout: out.String()}
		}()
		var st struct {
			PID             int    `json:"pid"`
			PolicyDigest    string `json:"policy_digest"`
			VaultGeneration uint64 `json:"vault_generation"`
			Agents          []struct {
				Name      string `json:"name"`
				Processes []int  `json:"processes"`
				Counts    struct {
					Requests int64 `json:"requests"`
				} `json:"counts"`
			} `json:"agents"`
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			r := ie.run(nil, ie.bin, "status", "--json").mustSucceed(t)
			if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
				t.Fatalf("status --json: %v\n%s", err, r.stdout)
			}
			if len(st.Agents) == 1 && len(st.Agents[0].Processes) > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("status never showed the sleeping agent: %s", r.stdout)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if st.PID != ie.daemon.Process.Pid || st.PolicyDigest == "" || st.VaultGeneration == 0 || st.Agents[0].Name != "demo" || st.Agents[0].Counts.Requests != 1 {
			t.Fatalf("status = %+v; want the daemon's pid, a policy digest, a vault generation and demo's one request", st)
		}
		table := ie.run(nil, ie.bin, "agents").mustSucceed(t)
		if !regexp.MustCompile(`(?m)^demo\s+nobody\s+1 \(\d+\)\s+1\s+0\s+`).MatchString(table.stdout) {
			t.Fatalf("wirken agents:\n%s", table.stdout)
		}
		// The same counters, scraped as Prometheus would.
		resp, err := http.Get("http://" + promAddr + "/metrics")
		if err != nil {
			t.Fatalf("scraping Prometheus metrics: %v", err)
		}
		scrape, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !regexp.MustCompile(`(?m)^wirken_requests_total\{[^}]*wirken_agent="demo"[^}]*\} 1$`).Match(scrape) {
			t.Fatalf("no wirken_requests_total for demo in the scrape:\n%s", scrape)
		}
		if bytes.Contains(scrape, []byte(canary)) {
			t.Fatal("the secret is in the Prometheus metrics")
		}
		// An agent holding a connection open is counted as a live connection.
		held := make(chan result, 1)
		go func() {
			held <- runWirken(t, ie.bin, ie.config, nil, "exec", "--agent", "demo", "--", "/usr/bin/python3", "-c",
				"import socket, time; s = socket.create_connection(('api.example.test', 443)); time.sleep(3)")
		}()
		var conns struct {
			Connections int `json:"connections"`
		}
		for deadline := time.Now().Add(5 * time.Second); conns.Connections == 0; {
			json.Unmarshal([]byte(ie.run(nil, ie.bin, "status", "--json").mustSucceed(t).stdout), &conns)
			if time.Now().After(deadline) {
				t.Fatal("status never counted the agent's open connection")
			}
			time.Sleep(50 * time.Millisecond)
		}
		if r := <-held; r.code != 0 {
			t.Fatalf("the agent holding a connection: exit %d %s", r.code, r.stderr)
		}
		text := ie.run(nil, ie.bin, "status").mustSucceed(t)
		if !strings.Contains(text.stdout, "vault:        generation") || !strings.Contains(text.stdout, "demo") ||
			!regexp.MustCompile(`start-up: +[0-9.]+ ms \(policy [0-9.]+, audit-scan .*, ebpf [0-9.]+, agents [0-9.]+, proxy [0-9.]+\)`).MatchString(text.stdout) {
			t.Fatalf("wirken status:\n%s", text.stdout)
		}
	})

	t.Run("the control socket answers root only", func(t *testing.T) {
		sock := filepath.Join(root, "run/wirken/control.sock")
		asNobody := func() result {
			cmd := exec.Command("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--", ie.bin, "status", "--config", ie.config)
			return run(t, nil, cmd)
		}
		if r := asNobody(); r.code == 0 || !strings.Contains(r.stderr, "permission denied") {
			t.Fatalf("status as nobody through the 0700 directory: exit %d %q", r.code, r.stderr)
		}
		// Even with the file modes opened up, the peer's uid is checked.
		for _, d := range []string{filepath.Join(root, "run"), filepath.Dir(sock)} {
			os.Chmod(d, 0o755)
			defer os.Chmod(d, 0o700)
		}
		os.Chmod(sock, 0o666)
		defer os.Chmod(sock, 0o600)
		if r := asNobody(); r.code == 0 || !strings.Contains(r.stderr, "for root only") {
			t.Fatalf("status as nobody with the socket opened up: exit %d %q; want the peer-credential refusal", r.code, r.stderr)
		}
	})

	t.Run("reload picks up a new agent", func(t *testing.T) {
		pol := filepath.Join(root, "etc/wirken/policy.toml")
		old, _ := os.ReadFile(pol)
		write(t, pol, append(old, "\n[agents.second]\nuser = \"nobody\"\n"...))
		r := ie.run(nil, ie.bin, "reload").mustSucceed(t)
		if !strings.Contains(r.stdout, "2 agents") {
			t.Fatalf("reload said %q", r.stdout)
		}
		var st struct {
			PolicyLoads uint64 `json:"policy_loads"`
			Agents      []any  `json:"agents"`
		}
		if err := json.Unmarshal([]byte(ie.run(nil, ie.bin, "status", "--json").mustSucceed(t).stdout), &st); err != nil || st.PolicyLoads != 2 || len(st.Agents) != 2 {
			t.Fatalf("status after reload: %+v (%v); want policy load 2 and two agents", st, err)
		}
		if _, err := os.Stat(filepath.Join(ie.cgroup, "agents", "second")); err != nil {
			t.Fatalf("the new agent's cgroup: %v", err)
		}
	})

	t.Run("ca show and ca install into the root's trust store", func(t *testing.T) {
		r := ie.run(nil, ie.bin, "ca", "show").mustSucceed(t)
		blk, _ := pem.Decode([]byte(r.stdout[strings.Index(r.stdout, "-----BEGIN"):]))
		if blk == nil {
			t.Fatalf("ca show printed no PEM:\n%s", r.stdout)
		}
		cert, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(cert.Raw)
		if !strings.Contains(strings.ReplaceAll(r.stdout, ":", ""), fmt.Sprintf("%X", sum)) || !strings.Contains(r.stdout, "not after:   "+cert.NotAfter.UTC().Format("2006-01-02")) {
			t.Fatalf("ca show lacks the SHA-256 fingerprint or the expiry:\n%s", r.stdout)
		}
		if strings.Contains(r.stdout, "PRIVATE KEY") {
			t.Fatal("ca show printed the CA key")
		}
		// Another local CA, so the store is not empty once wirken's is gone.
		other := filepath.Join(root, "usr/local/share/ca-certificates/test-upstream.crt")
		os.MkdirAll(filepath.Dir(other), 0o755)
		write(t, other, upCA.pem)
		ie.run(nil, ie.bin, "ca", "install", "--root", root).mustSucceed(t)
		anchor, err := os.ReadFile(filepath.Join(root, "usr/local/share/ca-certificates/wirken.crt"))
		if err != nil || !bytes.Contains(anchor, bytes.TrimSpace(pem.EncodeToMemory(blk))) {
			t.Fatalf("trust anchor: %v", err)
		}
		store, err := os.ReadFile(filepath.Join(root, "etc/ssl/certs/ca-certificates.crt"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(store, bytes.TrimSpace(pem.EncodeToMemory(blk))) {
			t.Fatal("update-ca-certificates did not put the wirken CA into the bundle")
		}
	})

	t.Run("uninstall refuses while the daemon or an agent runs", func(t *testing.T) {
		r := ie.run(nil, wirkenBin, "uninstall", "--root", root, "--prefix", prefix)
		if r.code == 0 || !strings.Contains(r.stderr, "daemon is running") {
			t.Fatalf("uninstall with the daemon running: exit %d %q", r.code, r.stderr)
		}
		ie.stopDaemon()
		r = ie.run(nil, wirkenBin, "uninstall", "--root", root, "--prefix", prefix)
		if r.code == 0 || !strings.Contains(r.stderr, "demo (1 processes)") || !strings.Contains(r.stderr, "--force") {
			t.Fatalf("uninstall with an agent running: exit %d %q", r.code, r.stderr)
		}
		if _, err := os.Stat(ie.pinDir); err != nil {
			t.Fatalf("a refused uninstall removed the pins: %v", err)
		}
	})

	t.Run("uninstall --force cleans the kernel and keeps the data", func(t *testing.T) {
		r := ie.run(nil, wirkenBin, "uninstall", "--root", root, "--prefix", prefix, "--force").mustSucceed(t)
		select {
		case a := <-ie.agentCh:
			if a.code == 0 {
				t.Errorf("the sleeping agent exited 0; want it killed")
			}
		case <-time.After(10 * time.Second):
			t.Error("the sleeping agent still runs after uninstall --force")
		}
		for _, gone := range []string{ie.pinDir, ie.cgroup, ie.bin, unitPath, filepath.Join(root, "usr/local/share/ca-certificates/wirken.crt")} {
			if _, err := os.Stat(gone); err == nil {
				t.Errorf("%s is still there after uninstall", gone)
			}
		}
		store, _ := os.ReadFile(filepath.Join(root, "etc/ssl/certs/ca-certificates.crt"))
		if !bytes.Contains(store, bytes.TrimSpace(upCA.pem)) || bytes.Count(store, []byte("BEGIN CERTIFICATE")) != 1 {
			t.Errorf("the root's trust store should hold only the other local CA now:\n%s", store)
		}
		state := filepath.Join(root, "var/lib/wirken")
		for _, kept := range []string{ie.config, filepath.Join(state, "vault.wkv"), filepath.Join(state, "vault.key"), filepath.Join(state, "ca.pem"), filepath.Join(state, "ca-key.pem"), filepath.Join(state, "audit.jsonl")} {
			if _, err := os.Stat(kept); err != nil {
				t.Errorf("uninstall without --purge removed %s", kept)
			}
		}
		if !strings.Contains(r.stdout, "kept (remove with --purge)") {
			t.Errorf("uninstall did not say what it kept:\n%s", r.stdout)
		}
		// The audit log outlives the install and still verifies.
		v := ie.run(nil, wirkenBin, "audit", "verify")
		if v.code != 0 || !strings.Contains(v.stdout, "ok") {
			t.Fatalf("audit verify after uninstall: %d %q %q", v.code, v.stdout, v.stderr)
		}
	})

	t.Run("uninstall --purge removes configuration and state", func(t *testing.T) {
		ie.run(nil, wirkenBin, "uninstall", "--root", root, "--prefix", prefix, "--purge").mustSucceed(t)
		for _, gone := range []string{filepath.Join(root, "etc/wirken"), filepath.Join(root, "var/lib/wirken")} {
			if _, err := os.Stat(gone); err == nil {
				t.Errorf("%s is still there after --purge", gone)
			}
		}
		if !strings.Contains(ie.logs.String(), "wirken is running") {
			t.Fatal("the daemon log is empty; the checks above proved nothing about it")
		}
		if strings.Contains(ie.logs.String(), canary) {
			t.Fatal("the secret appears in the daemon log")
		}
	})
}
