//go:build linux

package vmtests

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wirken/wirken/audit"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
)

// wirkenBin is built once by TestMain from this checkout.
var wirkenBin string

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == agentClientArg {
		os.Exit(agentClient(os.Args[2:])) // re-executed as an agent (protocols_test.go)
	}
	if len(os.Args) > 2 && os.Args[1] == escapeAgentArg {
		os.Exit(escapeAgent(os.Args[2:]))
	}
	if len(os.Args) > 2 && os.Args[1] == faultAgentArg {
		os.Exit(faultAgent(os.Args[2:])) // faults_test.go
	}
	if len(os.Args) > 1 && os.Args[1] == loadAgentArg {
		os.Exit(loadAgent(os.Args[2:])) // load_test.go
	}
	dir, err := os.MkdirTemp("", "wirken-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	wirkenBin = filepath.Join(dir, "wirken")
	if err := provideWirken(wirkenBin); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Chmod(dir, 0o755)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// provideWirken puts the wirken binary at dst: a copy of $WIRKEN_E2E_BIN when set (the qemu
// runner sets it: the VM has no Go toolchain), else a static build of this checkout.
func provideWirken(dst string) error {
	if src := os.Getenv("WIRKEN_E2E_BIN"); src != "" {
		data, err := os.ReadFile(src)
		if err != nil {
			return fmt.Errorf("copying WIRKEN_E2E_BIN: %w", err)
		}
		if err := os.WriteFile(dst, data, 0o755); err != nil {
			return fmt.Errorf("copying WIRKEN_E2E_BIN: %w", err)
		}
		return nil
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	build := exec.Command(goBin, "build", "-o", dst, "../cmd/wirken")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("building wirken: %v\n%s", err, out)
	}
	return nil
}

// upstream is an HTTPS server on a loopback address that records what it received.
type upstream struct {
	ln   *countingListener
	mu   sync.Mutex
	auth []string // Authorization headers seen, in order
	qs   []string // raw query strings seen, in order
	path []string // paths seen, in order
}

func (u *upstream) seen() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.auth...)
}

func startUpstream(t *testing.T, addr string, cert tls.Certificate) *upstream {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("upstream on %s (is something else using it?): %v", addr, err)
	}
	u := &upstream{ln: &countingListener{Listener: ln}}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			u.mu.Lock()
			u.auth = append(u.auth, r.Header.Get("Authorization"))
			u.qs = append(u.qs, r.URL.RawQuery)
			u.path = append(u.path, r.URL.Path)
			u.mu.Unlock()
			w.Header().Set("Content-Type", "application/json")
			// Shaped like an LLM API answer, with the usage fields wirken reads.
			json.NewEncoder(w).Encode(map[string]any{"path": r.URL.Path, "host": r.Host, "method": r.Method,
				"model": "echo-1", "usage": map[string]int{"input_tokens": 3, "output_tokens": 5}})
		}),
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}},
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          nil,
	}
	go srv.Serve(tls.NewListener(u.ln, srv.TLSConfig))
	t.Cleanup(func() { srv.Close() })
	return u
}

// env is one daemon with its own cgroup tree, pin dir, port, state and upstreams.
type env struct {
	t            *testing.T
	dir          string
	config       string
	cgroup       string // <cgroup2>/<root>
	pinDir       string
	canary       string
	daemon       *exec.Cmd
	logs         *lockedBuffer
	api          *upstream    // api.example.test on 127.0.0.2:443, has a rule and a credential
	other        *upstream    // evil.example.test on 127.0.0.3:443, has no rule
	dnsUp        *dnsUpstream // the upstream resolver: api.example.test and evil.example.test
	proxyPort    int
	dnsPort      int
	upCA         *testCA
	otlp         *otlpReceiver // nil when exporting elsewhere
	otlpEndpoint string
	auditPath    string
	daemonMu     sync.Mutex
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func cgroup2Mount(t *testing.T) string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		left, right, ok := strings.Cut(s.Text(), " - ")
		if ok && strings.HasPrefix(right, "cgroup2 ") {
			return strings.Fields(left)[4]
		}
	}
	t.Fatal("no cgroup2 mount")
	return ""
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// newEnv starts a daemon whose spans and metrics go to a local OTLP receiver.
func newEnv(t *testing.T) *env {
	t.Helper()
	return newEnvWith(t, envOptions{})
}

// envOptions change what newEnvWith sets up.
type envOptions struct {
	otlpEndpoint string // export there instead of to a local receiver the test reads
	auditDir     string // keep the audit log there instead of in the state dir
	policy       string // the policy to run instead of the default one
	proxy        string // more lines for the [proxy] table (timeouts, say)
	config       string // more tables at the end of the configuration (vault seals, say)
	// restartable picks the proxy and DNS ports below the ephemeral range (as the defaults,
	// 15001 and 15053, are), so an agent's own sockets cannot take them while the daemon is down.
	restartable bool
}

func newEnvWith(t *testing.T, opt envOptions) *env {
	t.Helper()
	endpoint := opt.otlpEndpoint
	requireRoot(t)
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatal("curl is required (make test installs it)")
	}
	uniq := randHex(t, 4)
	dir, err := os.MkdirTemp("", "wirken-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o711) // the agent user must reach the public CA bundle in state/
	e := &env{
		t:      t,
		dir:    dir,
		config: filepath.Join(dir, "wirken.toml"),
		cgroup: filepath.Join(cgroup2Mount(t), "wirken-e2e-"+uniq),
		pinDir: "/sys/fs/bpf/wirken-e2e-" + uniq,
		canary: "WKCANARY-" + randHex(t, 16),
		logs:   &lockedBuffer{},
		upCA:   newTestCA(t),
	}
	t.Cleanup(e.cleanup)

	if endpoint == "" {
		e.otlp = startOTLPReceiver(t)
		endpoint = "http://" + e.otlp.addr
	}
	e.otlpEndpoint = endpoint
	e.auditPath = filepath.Join(dir, "state", "audit.jsonl")
	if opt.auditDir != "" {
		e.auditPath = filepath.Join(opt.auditDir, "audit.jsonl")
	}
	e.api = startUpstream(t, "127.0.0.2:443", e.upCA.leaf(t, "api.example.test"))
	e.other = startUpstream(t, "127.0.0.3:443", e.upCA.leaf(t, "evil.example.test"))
	e.proxyPort, e.dnsPort = freePort(t), freePort(t)
	if opt.restartable {
		e.proxyPort, e.dnsPort = lowFreePort(t), lowFreePort(t)
	}
	e.dnsUp = startDNSUpstream(t, map[string]string{"api.example.test": "127.0.0.2", "evil.example.test": "127.0.0.3"})
	write(t, filepath.Join(dir, "upstream-ca.pem"), e.upCA.pem)
	pol := opt.policy
	if pol == "" {
		pol = `version = 1

[agents.demo]
user = "nobody"

[credentials.api]
secret = "api-key"
hosts = ["api.example.test"]
header = "Authorization"
format = "Bearer {secret}"

[[rules]]
name = "demo-api"
agent = "demo"
hosts = ["api.example.test"]
ports = [443]
paths = ["/echo"]
credential = "api"
`
	}
	write(t, filepath.Join(dir, "policy.toml"), []byte(pol))
	write(t, e.config, []byte(fmt.Sprintf(`policy = "policy.toml"
state_dir = %q
control_socket = %q
[proxy]
port = %d
upstream_ca_files = ["upstream-ca.pem"]
%s
[audit]
log = %q
checkpoint_interval = 0.2
[cgroup]
root = %q
[bpf]
pin_dir = %q
[dns]
port = %d
upstreams = [%q]
[log]
level = "debug"
format = "json"
%s
`, filepath.Join(dir, "state"), filepath.Join(dir, "control.sock"), e.proxyPort, opt.proxy, e.auditPath, filepath.Base(e.cgroup), e.pinDir,
		e.dnsPort, e.dnsUp.addr, opt.config)))

	e.wirken(nil, "vault", "init").mustSucceed(t)
	e.wirken(nil, "ca", "init").mustSucceed(t)
	e.wirken(strings.NewReader(e.canary+"\n"), "vault", "put", "--host", "api.example.test", "api-key").mustSucceed(t)
	e.startDaemon()
	return e
}

func write(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

type result struct {
	code   int
	stdout string
	stderr string
	args   []string
}

func (r result) mustSucceed(t *testing.T) result {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("%v: exit %d\nstdout: %s\nstderr: %s", r.args, r.code, r.stdout, r.stderr)
	}
	return r
}

// run runs a command to completion with a deadline and returns its exit code and output.
func run(t *testing.T, stdin *strings.Reader, cmd *exec.Cmd) result {
	t.Helper()
	var out, errb bytes.Buffer
	if stdin != nil {
		cmd.Stdin = stdin
	}
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String(), args: cmd.Args}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("%v: %v", cmd.Args, err)
	}
	return r
}

func (e *env) wirken(stdin *strings.Reader, args ...string) result {
	e.t.Helper()
	return runWirken(e.t, wirkenBin, e.config, stdin, args...)
}

// runWirken runs a wirken binary with a configuration, to completion or a minute.
func runWirken(t *testing.T, bin, config string, stdin *strings.Reader, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "WIRKEN_CONFIG="+config)
	return run(t, stdin, cmd)
}

// asAgent runs argv as agent demo through `wirken exec`.
func (e *env) asAgent(argv ...string) result {
	e.t.Helper()
	return e.wirken(nil, append([]string{"exec", "--agent", "demo", "--"}, argv...)...)
}

func (e *env) startDaemon(extra ...string) {
	t := e.t
	cmd := exec.Command(wirkenBin, append([]string{"run", "--config", e.config}, extra...)...)
	cmd.Stdout, cmd.Stderr = e.logs, e.logs
	cmd.Env = append(os.Environ(),
		"OTEL_EXPORTER_OTLP_ENDPOINT="+e.otlpEndpoint,
		"OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
		"OTEL_BSP_SCHEDULE_DELAY=100",
		"OTEL_METRIC_EXPORT_INTERVAL=300")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	e.daemonMu.Lock()
	e.daemon = cmd
	e.daemonMu.Unlock()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if r := e.wirken(nil, "status"); r.code == 0 {
			return
		}
		select {
		case err := <-exited:
			t.Fatalf("daemon exited during start-up: %v\n%s", err, e.logs)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon not ready after 20s\n%s", e.logs)
		}
	}
}

func (e *env) killDaemon() {
	e.daemonMu.Lock()
	defer e.daemonMu.Unlock()
	if e.daemon != nil && e.daemon.Process != nil {
		e.daemon.Process.Signal(syscall.SIGKILL)
		for i := 0; i < 100; i++ {
			if e.daemon.Process.Signal(syscall.Signal(0)) != nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		e.daemon = nil
	}
}

// cleanup removes everything the test made, even after a failure: the daemon, every process
// left in its cgroups, the cgroups, the pinned programs and maps, and the temp dir.
func (e *env) cleanup() {
	if e.t.Failed() {
		e.t.Logf("the daemon's log:\n%s", e.logs.String())
	}
	e.killDaemon()
	removeCgroupTree(e.t, e.cgroup)
	if err := os.RemoveAll(e.pinDir); err != nil {
		e.t.Logf("cleanup: removing pins %s: %v", e.pinDir, err)
	}
	os.RemoveAll(e.dir)
}

// auditLog is the whole audit log: its closed segments, oldest first, then the active file (a
// long test, the soak, writes more than one segment).
func (e *env) auditLog() string {
	paths, err := audit.SegmentPaths(e.auditPath)
	if err != nil {
		e.t.Fatal(err)
	}
	if len(paths) == 0 {
		e.t.Fatalf("no audit log at %s", e.auditPath)
	}
	var b strings.Builder
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			e.t.Fatal(err)
		}
		b.Write(data)
	}
	return b.String()
}

// records returns the audit records of one type.
func (e *env) records(typ string) []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(e.auditLog()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			e.t.Fatalf("audit line %q: %v", line, err)
		}
		if m["type"] == typ {
			out = append(out, m)
		}
	}
	return out
}

// curlArgs is curl for an agent: it resolves host through wirken's resolver (the agent's
// DNS is steered there), which the proxy requires. ip is where the test's upstream resolver
// says host is, for the reader.
func curlArgs(host, ip, path string, extra ...string) []string {
	return append([]string{"curl", "-sS", "--max-time", "20", "https://" + host + path}, extra...)
}

// curlResolveArgs is curl told host's address (no DNS): for a process that is not steered,
// or an agent that must reach the proxy with a name it never resolved.
func curlResolveArgs(host, ip, path string, extra ...string) []string {
	return append([]string{"curl", "-sS", "--max-time", "20", "--resolve", host + ":443:" + ip, "https://" + host + path}, extra...)
}

// TestWalkingSkeleton is the foundation's promise, end to end through the real eBPF path.
func TestWalkingSkeleton(t *testing.T) {
	e := newEnv(t)

	t.Run("agent gets its credential injected", func(t *testing.T) {
		r := e.asAgent(curlArgs("api.example.test", "127.0.0.2", "/echo?q=1", "--fail-with-body")...).mustSucceed(t)
		var body map[string]any
		if err := json.Unmarshal([]byte(r.stdout), &body); err != nil || body["path"] != "/echo" {
			t.Fatalf("curl got %q (%v); want the echo upstream's JSON", r.stdout, err)
		}
		seen := e.api.seen()
		if len(seen) != 1 || seen[0] != "Bearer "+e.canary {
			t.Fatalf("upstream saw Authorization %q; want the vault secret as a bearer token", seen)
		}
		for _, a := range r.args {
			if strings.Contains(a, e.canary) {
				t.Fatal("the secret was in curl's arguments")
			}
		}
		recs := e.records("credential.use")
		if len(recs) != 1 || recs[0]["agent"] != "demo" || recs[0]["credential"] != "api" || recs[0]["host"] != "api.example.test" || recs[0]["cred_ver"] != float64(1) {
			t.Fatalf("credential.use records = %v", recs)
		}
		// The result record is queued when the response has been sent, not waited for.
		waitFor(t, "the credential.result record", func() bool { return len(e.records("credential.result")) > 0 })
		res := e.records("credential.result")
		if len(res) != 1 || res[0]["status"] != float64(200) || res[0]["model"] != "echo-1" || res[0]["tokens_in"] != float64(3) || res[0]["tokens_out"] != float64(5) {
			t.Fatalf("credential.result records = %v; want status 200 with the model and token usage", res)
		}
	})

	t.Run("agent environment holds no secret", func(t *testing.T) {
		r := e.asAgent("env").mustSucceed(t)
		if strings.Contains(r.stdout, e.canary) {
			t.Fatal("the secret is in the agent's environment")
		}
		bundle := filepath.Join(e.dir, "state", "ca-bundle.pem")
		for _, v := range []string{"SSL_CERT_FILE", "CURL_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS",
			"GIT_SSL_CAINFO", "AWS_CA_BUNDLE", "DENO_CERT", "CARGO_HTTP_CAINFO"} {
			if !strings.Contains(r.stdout, v+"="+bundle+"\n") {
				t.Errorf("agent environment lacks %s=%s", v, bundle)
			}
		}
		if !strings.Contains(r.stdout, "SSL_CERT_DIR="+filepath.Join(e.dir, "state", "certs")+"\n") {
			t.Error("agent environment lacks SSL_CERT_DIR")
		}
		id := e.asAgent("id", "-u").mustSucceed(t)
		if strings.TrimSpace(id.stdout) == "0" {
			t.Error("agent runs as root; the policy says nobody")
		}
		st := e.asAgent("grep", "NoNewPrivs", "/proc/self/status").mustSucceed(t)
		if !strings.Contains(st.stdout, "NoNewPrivs:\t1") {
			t.Errorf("agent can gain privileges (setuid binaries work): %q", st.stdout)
		}
		root := e.wirken(nil, "exec", "--agent", "demo", "--user", "root", "--", "id")
		if root.code == 0 || !strings.Contains(root.stderr, "--allow-root") {
			t.Errorf("an agent was started as root without --allow-root: exit %d %q", root.code, root.stderr)
		}
	})

	t.Run("path outside the rule is refused with a reason", func(t *testing.T) {
		before := len(e.api.seen())
		r := e.asAgent(curlArgs("api.example.test", "127.0.0.2", "/admin", "-i")...)
		if !strings.Contains(r.stdout, "403") || !strings.Contains(r.stdout, "wirken: ") {
			t.Fatalf("want a 403 with a wirken: reason, got exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		if got := len(e.api.seen()); got != before {
			t.Fatalf("the upstream received %d requests; want none", got-before)
		}
		if strings.Contains(r.stdout+r.stderr, e.canary) {
			t.Fatal("the secret appears in wirken's error response")
		}
		if len(e.records("request.deny")) == 0 {
			t.Fatal("no request.deny audit record")
		}
	})

	t.Run("host with no rule is refused", func(t *testing.T) {
		r := e.asAgent(curlResolveArgs("evil.example.test", "127.0.0.3", "/steal")...)
		if r.code == 0 {
			t.Fatalf("curl to a host with no rule succeeded: %s", r.stdout)
		}
		if n := e.other.ln.accepted.Load(); n != 0 {
			t.Fatalf("the other upstream accepted %d connections; want 0", n)
		}
		deny := e.records("conn.deny")
		if len(deny) == 0 || deny[len(deny)-1]["host"] != "evil.example.test" {
			t.Fatalf("conn.deny records = %v", deny)
		}
	})

	t.Run("process outside the agent cgroup is not steered", func(t *testing.T) {
		// The test process itself is outside wirken's tree: it reaches the upstream directly
		// and sees the upstream's own certificate.
		c, err := tls.Dial("tcp", "127.0.0.2:443", &tls.Config{ServerName: "api.example.test", RootCAs: e.upCA.pool()})
		if err != nil {
			t.Fatalf("direct TLS to the upstream: %v", err)
		}
		issuer := c.ConnectionState().PeerCertificates[0].Issuer.CommonName
		c.Close()
		if issuer != "wirken e2e upstream CA" {
			t.Fatalf("direct connection saw a certificate issued by %q", issuer)
		}
		before := len(e.api.seen())
		caFile := filepath.Join(e.dir, "upstream-ca.pem")
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		args := curlResolveArgs("api.example.test", "127.0.0.2", "/echo", "--cacert", caFile, "--fail")
		run(t, nil, exec.CommandContext(ctx, args[0], args[1:]...)).mustSucceed(t)
		seen := e.api.seen()
		if len(seen) != before+1 || seen[len(seen)-1] != "" {
			t.Fatalf("unsteered curl: upstream saw Authorization %q; want none injected", seen[before:])
		}
	})

	t.Run("audit log verifies, proves a record, and detects tampering", func(t *testing.T) {
		use := e.records("credential.use")
		if len(use) == 0 {
			t.Fatal("no credential.use record")
		}
		seq := strconv.FormatInt(int64(use[0]["seq"].(float64)), 10)
		// Checkpoints come every 0.2 s here; wait for one that seals the request's record.
		saved := filepath.Join(e.dir, "saved-checkpoint")
		deadline := time.Now().Add(10 * time.Second)
		var proof result
		for {
			proof = e.wirken(nil, "audit", "prove", "--seq", seq)
			if proof.code == 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		proof.mustSucceed(t)
		write(t, filepath.Join(e.dir, "proof"), []byte(proof.stdout))
		e.wirken(nil, "audit", "prove", "--check", filepath.Join(e.dir, "proof")).mustSucceed(t)

		r := e.wirken(nil, "audit", "verify", "--save-checkpoint", saved).mustSucceed(t)
		if !strings.Contains(r.stdout, "ok") || strings.Contains(r.stderr, "no verifier key") {
			t.Fatalf("audit verify said %q %q", r.stdout, r.stderr)
		}
		tail := e.wirken(nil, "audit", "tail", "-n", "100").mustSucceed(t)
		if !strings.Contains(tail.stdout, "credential.use") || !strings.Contains(tail.stdout, `agent="demo"`) {
			t.Fatalf("audit tail shows %q", tail.stdout)
		}

		log := []byte(e.auditLog())
		i := bytes.Index(log, []byte(`"credential.use"`))
		if i < 0 {
			t.Fatal("no credential.use record")
		}
		flipped := append([]byte(nil), log...)
		flipped[i+3] ^= 0x01
		bad := filepath.Join(e.dir, "tampered.jsonl")
		write(t, bad, flipped)
		r = e.wirken(nil, "audit", "verify", "--log", bad)
		// A changed record shows where the chain breaks: at it, or at the next one's prev.
		next := strconv.FormatInt(int64(use[0]["seq"].(float64))+1, 10)
		if r.code != 1 || !strings.Contains(r.stderr, "TAMPERED") ||
			!(strings.Contains(r.stderr, "(seq "+seq+")") || strings.Contains(r.stderr, "(seq "+next+"): prev")) {
			t.Fatalf("tampered log: exit %d, stderr %q; want exit 1 naming seq %s", r.code, r.stderr, seq)
		}

		// A log cut back to before the saved checkpoint is a rollback, even though what is
		// left is internally consistent.
		lines := bytes.SplitAfter(log, []byte("\n"))
		short := bytes.Join(lines[:2], nil)
		rolled := filepath.Join(e.dir, "rolled-back.jsonl")
		write(t, rolled, short)
		e.wirken(nil, "audit", "verify", "--log", rolled).mustSucceed(t)
		r = e.wirken(nil, "audit", "verify", "--log", rolled, "--trusted-checkpoint", saved)
		if r.code != 1 || !strings.Contains(r.stderr, "TAMPERED") {
			t.Fatalf("rolled-back log against a trusted checkpoint: exit %d, stderr %q; want exit 1", r.code, r.stderr)
		}
	})

	t.Run("spans and metrics arrive over OTLP with the audit seq and no secret", func(t *testing.T) {
		use := e.records("credential.use")
		if len(use) == 0 {
			t.Fatal("no credential.use record")
		}
		seq := strconv.FormatInt(int64(use[0]["seq"].(float64)), 10)
		var got map[string]string
		e.otlp.waitFor(t, "the credential.use span", func(spans []*tracepb.Span, _ map[string]bool) bool {
			for _, s := range spans {
				if a := spanAttrs(s); a["wirken.audit.seq"] == seq {
					got = a
					return true
				}
			}
			return false
		})
		for k, want := range map[string]string{
			"wirken.agent": "demo", "wirken.credential": "api", "wirken.rule": "demo-api", "wirken.credential.version": "1",
			"http.request.method": "GET", "server.address": "api.example.test",
			"url.full": "https://api.example.test/echo", "http.response.status_code": "200",
			"gen_ai.response.model": "echo-1", "gen_ai.usage.input_tokens": "3", "gen_ai.usage.output_tokens": "5",
		} {
			if got[k] != want {
				t.Errorf("span attribute %s = %q, want %q", k, got[k], want)
			}
		}
		if got["wirken.audit.leaf_hash"] == "" {
			t.Error("span has no audit leaf hash")
		}
		e.otlp.waitFor(t, "a denial span", func(spans []*tracepb.Span, _ map[string]bool) bool {
			for _, s := range spans {
				if spanAttrs(s)["wirken.decision"] == "deny" {
					return true
				}
			}
			return false
		})
		e.otlp.waitFor(t, "the request metrics", func(_ []*tracepb.Span, m map[string]bool) bool {
			return m["wirken.requests"] && m["wirken.audit.lag"] && m["wirken.denials"]
		})
		e.otlp.mu.Lock()
		raw := string(e.otlp.raw)
		e.otlp.mu.Unlock()
		if strings.Contains(raw, e.canary) {
			t.Fatal("the secret was exported over OTLP")
		}
	})

	t.Run("a bad policy is refused and the last good one keeps serving", func(t *testing.T) {
		polFile := filepath.Join(e.dir, "policy.toml")
		good, err := os.ReadFile(polFile)
		if err != nil {
			t.Fatal(err)
		}
		write(t, polFile, append(append([]byte(nil), good...), "\n[[rules]]\nname = \"x\"\nagent = \"nobody-here\"\nhosts = [\"a.test\"]\n"...))
		defer write(t, polFile, good)
		r := e.wirken(nil, "reload")
		if r.code == 0 || !strings.Contains(r.stderr, "policy.toml:") || !strings.Contains(r.stderr, "rules[1].agent") {
			t.Fatalf("reload of a bad policy: exit %d, stderr %q; want a refusal naming file, line and field", r.code, r.stderr)
		}
		e.asAgent(curlArgs("api.example.test", "127.0.0.2", "/echo", "--fail")...).mustSucceed(t)
		var rejected bool
		for _, rec := range e.records("policy.load") {
			rejected = rejected || rec["decision"] == "reject"
		}
		if !rejected {
			t.Fatal("the refused reload is not in the audit log")
		}
	})

	t.Run("daemon killed: agents fail closed", func(t *testing.T) {
		before := len(e.api.seen())
		e.killDaemon()
		// Launch straight into the agent cgroup (wirken exec would refuse without a daemon).
		fd, err := syscall.Open(filepath.Join(e.cgroup, "agents", "demo"), syscall.O_RDONLY|syscall.O_DIRECTORY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer syscall.Close(fd)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		args := curlResolveArgs("api.example.test", "127.0.0.2", "/echo", "-k")
		cmd := exec.CommandContext(ctx, args[0], args[1:]...)
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
		r := run(t, nil, cmd)
		if r.code == 0 {
			t.Fatalf("agent reached the network with the daemon dead: %s", r.stdout)
		}
		if !strings.Contains(r.stderr, "refused") && !strings.Contains(r.stderr, "Couldn't connect") {
			t.Errorf("curl error %q; want connection refused", r.stderr)
		}
		if got := len(e.api.seen()); got != before {
			t.Fatalf("upstream received %d requests with the daemon dead", got-before)
		}
	})

	t.Run("the canary secret never leaks", func(t *testing.T) {
		for name, text := range map[string]string{"daemon log": e.logs.String(), "audit log": e.auditLog()} {
			if strings.Contains(text, e.canary) {
				t.Errorf("the secret appears in the %s", name)
			}
			if len(text) == 0 {
				t.Errorf("the %s is empty; the check would prove nothing", name)
			}
		}
	})
}
