//go:build linux

package vmtests

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	colmetricpb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"

	"github.com/wirken/wirken/hostagent"
)

// loadIP:443 is the load tests' upstream for loadHost; the test's upstream resolver is pointed
// there.
const loadIP = "127.0.0.7"

// loadConns is how many TLS connections TestLoad10k holds open at once: 10,000, or
// WIRKEN_LOAD_CONNS.
var loadConns = envInt("WIRKEN_LOAD_CONNS", 10000)

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

const (
	// loadDialers is how many of them are being opened at a time: the proxy's listen backlog
	// (somaxconn, 4096 by default) must not overflow while the daemon accepts, or the kernel
	// drops SYNs and the client waits out a retransmission.
	loadDialers = 256
	// loadSettle is how long the daemon has to give back what the connections held once they
	// are closed.
	loadSettle = 60 * time.Second
	// After the 10,000 connections close: the daemon's descriptors and goroutines come back
	// to within these of the baseline taken before them (the baseline already has idle
	// upstream connections and its listeners; a few more pooled upstream connections may
	// still be idle, and a few timers and the pool's per-connection goroutines with them).
	loadFDSlack        = 64
	loadGoroutineSlack = 128
)

// loadUpstream is the HTTPS upstream of the load tests: it counts connections and requests,
// and requests that arrived without the injected credential.
type loadUpstream struct {
	ln       *countingListener
	requests atomic.Int64 // every request, on every path
	noCred   atomic.Int64 // requests whose Authorization was not the vault secret
	streams  atomic.Int64 // streamed responses sent to the end
}

func startLoadUpstream(t *testing.T, cert tls.Certificate, wantAuth string) *loadUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", loadIP+":443")
	if err != nil {
		t.Fatalf("load upstream on %s:443: %v", loadIP, err)
	}
	u := &loadUpstream{ln: &countingListener{Listener: ln}}
	mux := http.NewServeMux()
	mux.HandleFunc("/echo/stream", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for range streamChunks {
			if _, err := io.WriteString(w, streamChunk); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			time.Sleep(streamPause)
		}
		u.streams.Add(1)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"path": r.URL.Path, "model": "echo-1",
			"usage": map[string]int{"input_tokens": 3, "output_tokens": 5}})
	})
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			u.requests.Add(1)
			if r.Header.Get("Authorization") != wantAuth {
				u.noCred.Add(1)
			}
			mux.ServeHTTP(w, r)
		}),
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}},
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          nil,
	}
	go srv.ServeTLS(u.ln, "", "")
	t.Cleanup(func() { srv.Close() })
	return u
}

// discardOTLP is an OTLP/HTTP endpoint that accepts and drops everything: the daemon exports
// as it would in production, and the test keeps nothing of a long run in memory.
func discardOTLP(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/traces", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		reply(w, &coltracepb.ExportTraceServiceResponse{})
	})
	mux.HandleFunc("POST /v1/metrics", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		reply(w, &colmetricpb.ExportMetricsServiceResponse{})
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

// ensureFileLimit raises this process's open files limit (soft and hard, as root) to want, so
// that the daemon and the agent, which inherit it, can hold the test's connections, and
// returns the limit. Without CAP_SYS_RESOURCE (some containers) the hard limit stays where it
// is, which must then be at least need. The limit is set back at the end of the test.
func ensureFileLimit(t *testing.T, want, need uint64) uint64 {
	t.Helper()
	var orig syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &orig); err != nil {
		t.Fatal(err)
	}
	lim := syscall.Rlimit{Cur: max(orig.Max, want), Max: max(orig.Max, want)}
	// syscall.Setrlimit (not x/sys/unix): the Go runtime then passes this limit on to children
	// rather than the one the process started with.
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		lim = syscall.Rlimit{Cur: orig.Max, Max: orig.Max}
		if err2 := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err2 != nil || orig.Max < need {
			t.Fatalf("raising the open files limit to %d: %v; the hard limit %d is below the %d this test needs", want, err, orig.Max, need)
		}
		t.Logf("cannot raise the hard open files limit to %d (%v); running with %d", want, err, orig.Max)
	}
	t.Cleanup(func() { syscall.Setrlimit(syscall.RLIMIT_NOFILE, &orig) })
	return lim.Max
}

// withSoftFileLimit runs f with this process's soft open files limit lowered to soft, as a
// shell's `ulimit -Sn` would leave it for a daemon started there.
func withSoftFileLimit(t *testing.T, soft uint64, f func()) {
	t.Helper()
	var cur syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &cur); err != nil {
		t.Fatal(err)
	}
	low := syscall.Rlimit{Cur: min(soft, cur.Max), Max: cur.Max}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	defer syscall.Setrlimit(syscall.RLIMIT_NOFILE, &cur)
	f()
}

// procFileLimit reads a process's open files limit from /proc.
func procFileLimit(t *testing.T, pid int) (soft, hard string) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "Max open files") {
			f := strings.Fields(strings.TrimPrefix(l, "Max open files"))
			if len(f) >= 2 {
				return f[0], f[1]
			}
		}
	}
	t.Fatalf("no open files limit in /proc/%d/limits", pid)
	return "", ""
}

// sample is the daemon's use of resources at one moment.
type sample struct {
	at         time.Duration
	fds        int   // entries in /proc/PID/fd
	goroutines int   // from the control socket's status
	rssKB      int64 // VmRSS
	conns      int   // agent connections open, from status
}

func (e *env) daemonPID() int {
	e.daemonMu.Lock()
	defer e.daemonMu.Unlock()
	return e.daemon.Process.Pid
}

// sample measures the daemon.
func (e *env) sample(t *testing.T, since time.Time) sample {
	t.Helper()
	s, err := e.trySample(since)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (e *env) trySample(since time.Time) (sample, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := e.status(ctx)
	if err != nil {
		return sample{}, err
	}
	pid := e.daemonPID()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return sample{}, err
	}
	if st.OpenFiles <= 0 || st.Goroutines <= 0 {
		return sample{}, fmt.Errorf("status reports %d open files and %d goroutines; want both", st.OpenFiles, st.Goroutines)
	}
	rss, err := procRSS(pid)
	if err != nil {
		return sample{}, err
	}
	return sample{at: time.Since(since), fds: len(ents), goroutines: st.Goroutines, rssKB: rss, conns: st.Connections}, nil
}

// status asks the daemon's control socket for its status over a connection of its own,
// closed after the answer: a kept-alive connection would stay open in the daemon (its control
// server has no idle timeout) and be counted as a descriptor and a goroutine the load leaked.
func (e *env) status(ctx context.Context) (hostagent.Status, error) {
	sock := filepath.Join(e.dir, "control.sock")
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://wirken/v1/status", nil)
	if err != nil {
		return hostagent.Status{}, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return hostagent.Status{}, fmt.Errorf("daemon status: %w", err)
	}
	defer resp.Body.Close()
	var st hostagent.Status
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("daemon status: %s", resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return st, fmt.Errorf("daemon status: %w", err)
	}
	return st, nil
}

// procRSS reads a process's VmRSS in KiB.
func procRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			return strconv.ParseInt(f[1], 10, 64)
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

func (s sample) String() string {
	return fmt.Sprintf("fds %d, goroutines %d, RSS %.1f MB, agent connections %d", s.fds, s.goroutines, float64(s.rssKB)/1024, s.conns)
}

// loadAgentCmd starts the load generator as agent demo; its stdin and stdout are pipes.
func (e *env) loadAgentCmd(t *testing.T, ctx context.Context, args ...string) (*exec.Cmd, io.WriteCloser, *bufio.Reader) {
	t.Helper()
	cmd := exec.CommandContext(ctx, wirkenBin, append([]string{"exec", "--agent", "demo", "--", escapeBinary(t), loadAgentArg}, args...)...)
	cmd.Env = append(os.Environ(), "WIRKEN_CONFIG="+e.config)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); cmd.Process.Kill(); cmd.Wait() })
	return cmd, stdin, bufio.NewReader(stdout)
}

// recordCount counts the audit log's records of one type.
func (e *env) recordCount(typ string) int {
	return len(e.records(typ))
}

// loadEnv is a daemon started with a low soft open files limit (which it must raise to the
// hard limit), its OTLP going to an endpoint that keeps nothing, and the load upstream behind
// loadHost.
func loadEnv(t *testing.T) (*env, *loadUpstream) {
	var e *env
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	withSoftFileLimit(t, 1024, func() {
		e = newEnvWith(t, envOptions{otlpEndpoint: discardOTLP(t)})
	})
	soft, hard := procFileLimit(t, e.daemonPID())
	if soft != hard || hard != strconv.FormatUint(lim.Max, 10) {
		t.Fatalf("the daemon, started with a soft open files limit of 1024, runs with %s (hard %s); want it raised to the hard limit %d", soft, hard, lim.Max)
	}
	up := startLoadUpstream(t, e.upCA.leaf(t, loadHost), "Bearer "+e.canary)
	e.dnsUp.set(loadHost, loadIP)
	return e, up
}

// holdRun is the load generator's hold mode, running.
type holdRun struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	out    *bufio.Reader
	n      int
	opened int
}

// startHold starts the load generator's hold mode for n connections and returns once they are
// all open (each answered once) and held.
func (e *env) startHold(t *testing.T, ctx context.Context, n int) *holdRun {
	t.Helper()
	cmd, stdin, out := e.loadAgentCmd(t, ctx, "hold", strconv.Itoa(n), strconv.Itoa(loadDialers))
	h := &holdRun{cmd: cmd, stdin: stdin, out: out, n: n}
	line, err := out.ReadString('\n')
	if _, serr := fmt.Sscanf(line, "opened %d", &h.opened); err != nil || serr != nil {
		cmd.Wait()
		t.Fatalf("load agent (hold %d) did not open its connections: %q %v\ndaemon log tail:\n%s", n, line, err, tail(e.logs.String(), 30))
	}
	return h
}

// burst sends the second request on every held connection at once and returns the report.
func (h *holdRun) burst(t *testing.T) holdReport {
	t.Helper()
	io.WriteString(h.stdin, "go\n")
	line, err := h.out.ReadString('\n')
	var rep holdReport
	if err != nil || json.Unmarshal([]byte(line), &rep) != nil {
		t.Fatalf("load agent (hold %d) report %q: %v", h.n, line, err)
	}
	return rep
}

// release lets the agent close its connections and waits for it to exit.
func (h *holdRun) release(t *testing.T) {
	t.Helper()
	io.WriteString(h.stdin, "close\n")
	h.stdin.Close()
	if err := h.cmd.Wait(); err != nil {
		t.Errorf("load agent (hold %d): %v", h.n, err)
	}
}

// sampler measures the daemon every period until stopped, and keeps the highest values.
type sampler struct {
	stop chan struct{}
	done chan struct{}
	peak sample // highest of each field, each at its own moment
	n    int
}

func (e *env) startSampler(t *testing.T, since time.Time, period time.Duration) *sampler {
	s := &sampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			if x, err := e.trySample(since); err == nil {
				s.n++
				s.peak = sample{at: x.at, fds: max(s.peak.fds, x.fds), goroutines: max(s.peak.goroutines, x.goroutines),
					rssKB: max(s.peak.rssKB, x.rssKB), conns: max(s.peak.conns, x.conns)}
			}
			select {
			case <-s.stop:
				return
			case <-time.After(period):
			}
		}
	}()
	return s
}

func (s *sampler) finish() sample {
	close(s.stop)
	<-s.done
	return s.peak
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// TestLoad10k holds 10,000 intercepted TLS connections from one agent open at once, sends a
// request on each (all at once) and checks that every one is answered, audited and carried
// the credential; that the upstream saw pooled connections, far fewer than 10,000; and that
// the daemon's descriptors and goroutines come back to the baseline once they close. The
// daemon's peak descriptors, RSS and memory per connection are logged.
//
// Decision (issue 10): there is no cap on agent connections; all 10,000 must succeed. The
// bound is the daemon's open files limit, which it raises to the hard limit at start; past it
// the proxy waits (connections queue in the kernel's backlog) instead of failing.
func TestLoad10k(t *testing.T) {
	requireRoot(t)
	// The agent holds loadConns descriptors and the daemon loadConns plus its upstream pool
	// (at most one per request in flight; the test wants at most a quarter), plus each one's
	// own few.
	ensureFileLimit(t, uint64(2*loadConns+1024), uint64(loadConns+loadConns/4+512))
	e, up := loadEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	start := time.Now()

	// Warm-up: the leaf certificate, the upstream pool and the audit writer exist before the
	// baseline is taken.
	warm := e.startHold(t, ctx, 64)
	if rep := warm.burst(t); warm.opened != 64 || rep.OK != 64 {
		t.Fatalf("warm-up: %d opened; %+v", warm.opened, rep)
	}
	warm.release(t)
	waitConns(t, e, 0, start)
	base := e.sample(t, start)
	usesBefore, upBefore, acceptedBefore := e.recordCount("credential.use"), up.requests.Load(), up.ln.accepted.Load()
	t.Logf("baseline: %s", base)

	smp := e.startSampler(t, start, time.Second)
	h := e.startHold(t, ctx, loadConns)
	held := e.sample(t, start)
	rep := h.burst(t)
	peak := smp.finish()
	t.Logf("agent: %d connections opened (each with a first request) in %.1fs; then %d requests at once answered 200 in %.1fs; errors %v",
		h.opened, rep.OpenSeconds, rep.OK, rep.ReqSeconds, rep.Errors)
	t.Logf("all %d held: %s", loadConns, held)
	t.Logf("peak (highest of %d samples, 1 s apart): %s", smp.n, peak)
	t.Logf("per held connection: %.1f KB RSS, %.2f fds, %.2f goroutines (all held, before the burst)",
		float64(held.rssKB-base.rssKB)/float64(loadConns), float64(held.fds-base.fds)/float64(loadConns), float64(held.goroutines-base.goroutines)/float64(loadConns))
	hwm, _ := e.daemonMem(t)
	t.Logf("daemon VmHWM %.1f MB", float64(hwm)/1024)
	if h.opened != loadConns || rep.OK != loadConns || len(rep.Errors) != 0 {
		t.Errorf("agent: %d of %d connections opened, %d answered 200 at once; errors %v", h.opened, loadConns, rep.OK, rep.Errors)
	}
	if held.conns != loadConns {
		t.Errorf("the daemon holds %d agent connections while the agent holds %d", held.conns, h.opened)
	}

	uses := e.recordCount("credential.use") - usesBefore
	reqs := up.requests.Load() - upBefore
	upConns := up.ln.accepted.Load() - acceptedBefore
	t.Logf("upstream: %d requests over %d new connections (and the warm-up's %d); %d credential.use records", reqs, upConns, acceptedBefore, uses)
	// Each connection's first request, the keep-alive ones of those that waited long, and the
	// burst's.
	if answered := int64(rep.Requests); reqs != answered || int64(uses) != reqs {
		t.Errorf("%d requests answered, %d reached the upstream, %d credential.use records; want all equal", answered, reqs, uses)
	}
	if n := up.noCred.Load(); n != 0 {
		t.Errorf("%d requests reached the upstream without the credential", n)
	}
	// Pooled: upstream connections are reused, fewer than the requests. Not far fewer: in a
	// burst past an HTTP/2 upstream's stream limit net/http dials a connection per waiting
	// request (at most 1,024 at a time); CI saw 2,676 for 20,000 requests here and 491 for
	// 1,000 in the VM. Respecting the stream limit instead (StrictMaxConcurrentRequests)
	// stalled the burst in the VM; bounding the burst's connections is open work.
	if total := up.ln.accepted.Load(); total == 0 || total >= reqs {
		t.Errorf("the upstream accepted %d connections for %d requests; want pooled connections (fewer than the requests)", total, reqs)
	}

	h.release(t)
	after := waitSettled(t, e, base, start)
	t.Logf("after close (%.0fs): %s", (after.at - peak.at).Seconds(), after)
	rss := waitRSS(t, e, base, held, start)
	t.Logf("RSS given back (%.0fs after close): %.1f MB", (rss.at - after.at).Seconds(), float64(rss.rssKB)/1024)

	r := e.wirken(nil, "audit", "verify")
	if r.code != 0 || !strings.Contains(r.stdout, "ok") {
		t.Fatalf("audit verify: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if strings.Contains(e.logs.String(), e.canary) || strings.Contains(e.auditLog(), e.canary) {
		t.Fatal("the secret appears in the daemon's log or the audit log")
	}
}

// waitConns waits until the daemon holds n agent connections.
func waitConns(t *testing.T, e *env, n int, since time.Time) {
	t.Helper()
	deadline := time.Now().Add(loadSettle)
	for {
		s := e.sample(t, since)
		if s.conns == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the daemon still holds %d agent connections after %s; want %d", s.conns, loadSettle, n)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitSettled waits for the daemon to close every agent connection and give back their
// descriptors and goroutines, and returns the last sample.
func waitSettled(t *testing.T, e *env, base sample, since time.Time) sample {
	t.Helper()
	deadline := time.Now().Add(loadSettle)
	for {
		s := e.sample(t, since)
		if s.conns == 0 && s.fds <= base.fds+loadFDSlack && s.goroutines <= base.goroutines+loadGoroutineSlack {
			return s
		}
		if time.Now().After(deadline) {
			t.Errorf("%s after the connections closed: %s; baseline %s (allowed: +%d fds, +%d goroutines)",
				loadSettle, s, base, loadFDSlack, loadGoroutineSlack)
			e.dumpDaemon(t)
			t.FailNow()
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// medianOf is the median of f over samples.
func medianOf(ss []sample, f func(sample) int64) int64 {
	if len(ss) == 0 {
		return 0
	}
	v := make([]int64, len(ss))
	for i, s := range ss {
		v[i] = f(s)
	}
	slices.Sort(v)
	return v[len(v)/2]
}

// loadRSSSettle is how long the daemon has to give memory back to the system once the
// connections have closed: Go frees the heap at its next collection, which an idle process
// runs at the latest after two minutes (the runtime's forced GC period), and then returns the
// pages in the background, paced (measured here: about half of 600 MB a minute after that
// collection).
const loadRSSSettle = 5 * time.Minute

// loadRSSSlackMB is the RSS above the baseline always allowed after the connections close:
// the runtime keeps freed pages up to its heap goal (twice the live heap) and then some, so a
// small load (the VM's 500 connections took 23 MB, 32 MB at their peak) need not give anything back.
const loadRSSSlackMB = 48

// waitRSS waits until the daemon's RSS has come back near the baseline: it must give back at
// least three quarters of what it took while holding the connections (or come within
// loadRSSSlackMB of the baseline). It returns the sample.
func waitRSS(t *testing.T, e *env, base, held sample, since time.Time) sample {
	t.Helper()
	bound := base.rssKB + max((held.rssKB-base.rssKB)/4, loadRSSSlackMB*1024)
	deadline := time.Now().Add(loadRSSSettle)
	for {
		s := e.sample(t, since)
		if s.rssKB <= bound {
			return s
		}
		if time.Now().After(deadline) {
			t.Errorf("RSS %.1f MB %s after the connections closed; want at most %.1f MB (baseline %.1f MB, %.1f MB while held)",
				float64(s.rssKB)/1024, loadRSSSettle, float64(bound)/1024, float64(base.rssKB)/1024, float64(held.rssKB)/1024)
			return s
		}
		time.Sleep(time.Second)
	}
}

// dumpDaemon logs the daemon's sockets and, through SIGQUIT (which ends it), the stacks of its
// goroutines, for a test that found it holding what it should not.
func (e *env) dumpDaemon(t *testing.T) {
	pid := e.daemonPID()
	if out, err := exec.Command("ss", "-tanp").Output(); err == nil {
		var mine []string
		for _, l := range strings.Split(string(out), "\n") {
			if strings.Contains(l, fmt.Sprintf("pid=%d,", pid)) {
				mine = append(mine, l)
			}
		}
		t.Logf("the daemon's TCP sockets (%d):\n%s", len(mine), strings.Join(mine[:min(len(mine), 40)], "\n"))
	}
	syscall.Kill(pid, syscall.SIGQUIT)
	time.Sleep(2 * time.Second)
	stacks := e.logs.String()
	if i := strings.Index(stacks, "SIGQUIT"); i >= 0 {
		os.WriteFile(filepath.Join(os.TempDir(), fmt.Sprintf("wirken-load-stacks-%d.txt", pid)), []byte(stacks[i:]), 0o644)
		t.Logf("goroutine stacks written to %s", filepath.Join(os.TempDir(), fmt.Sprintf("wirken-load-stacks-%d.txt", pid)))
	}
}
