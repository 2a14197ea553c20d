package main

// The workloads of issue 9 and the trial loop they share: each trial runs direct, every path
// (the order rotated per trial), direct again; the figures are kept per trial and aggregated by
// aggregate.go.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// path is one way from the load client to the upstream.
type path struct {
	name      string
	pid       func() int // the proxy's process whose CPU and RSS are counted (0: none)
	wrap      []string   // what the client runs under (`wirken exec ... --` for wirken)
	wrkURL    string     // wrk's URL base
	wrkScript string     // wrk's Lua script
	loadURL   string     // the load generator's URL base
	connectTo string     // the load generator dials this instead of the URL's address
	setup     func() error
}

// workload is one of the workloads: run does one load run of one path.
type workload struct {
	name, title, about string
	trials             int
	bracket            string // the figure of the two direct runs that must agree within 10%
	metrics            []metric
	run                func(p path) (map[string]float64, error)
	paths              func(all []path) []path // nil: every selected path
}

// result is what a workload's trials gave, for RESULTS.md.
type result struct {
	w        *workload
	paths    []string
	trials   []trial
	took     time.Duration
	err      string
	extra    []string // lines of text under the table
	accepted []trial
	dropped  []trial
}

const maxSpread = 0.10

// trials runs w's trials over paths, with direct runs as brackets.
func (b *bench) trials(w *workload, direct path, paths []path) *result {
	r := &result{w: w}
	for _, p := range paths {
		r.paths = append(r.paths, p.name)
	}
	t0 := time.Now()
	defer func() { r.took = time.Since(t0) }()
	fmt.Printf("== %s (%d trials, paths %s)\n", w.name, w.trials, strings.Join(r.paths, ","))
	for n := 0; n < w.trials; n++ {
		t := trial{n: n + 1, paths: map[string]map[string]float64{}, errs: map[string]string{}}
		var err error
		if t.before, err = b.measure(w, direct); err != nil {
			r.err = fmt.Sprintf("direct run of trial %d: %v", n+1, err)
			return r
		}
		k := n % max(len(paths), 1)
		for _, p := range append(slices.Clone(paths[k:]), paths[:k]...) {
			if p.setup != nil {
				if err := p.setup(); err != nil {
					r.err = fmt.Sprintf("setting up %s: %v", p.name, err)
					return r
				}
			}
			fig, err := b.measure(w, p)
			if err != nil {
				t.errs[p.name] = oneLine(err.Error(), 300)
				fmt.Printf("   %s: %s\n", p.name, t.errs[p.name])
				continue
			}
			t.paths[p.name] = fig
		}
		if t.after, err = b.measure(w, direct); err != nil {
			r.err = fmt.Sprintf("direct run of trial %d: %v", n+1, err)
			return r
		}
		fmt.Printf("   trial %d: %s\n", n+1, trialLine(t, r.paths, w.metrics))
		r.trials = append(r.trials, t)
	}
	r.accepted, r.dropped = accept(r.trials, w.bracket, maxSpread)
	return r
}

// measure is one run of w on p, with the proxy's CPU over it (cpu_ms) and its per-request and
// per-MiB forms when the run reports requests or bytes.
func (b *bench) measure(w *workload, p path) (map[string]float64, error) {
	pid := 0
	if p.pid != nil {
		pid = p.pid()
	}
	c0 := cpuTicks(pid)
	fig, err := w.run(p)
	c1 := cpuTicks(pid)
	if err != nil {
		return nil, err
	}
	if pid != 0 {
		ms := float64(c1-c0) * 1000 / clockTicks
		fig["cpu_ms"] = ms
		if n := fig["requests"]; n > 0 {
			fig["cpu_us_per_req"] = ms * 1000 / n
		}
		if n := fig["bytes"]; n > 0 {
			fig["cpu_ms_per_mib"] = ms / (n / (1 << 20))
		}
	}
	return fig, nil
}

func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// trialLine is one trial as measured, for the log and RESULTS.md.
func trialLine(t trial, paths []string, ms []metric) string {
	var keys []string
	for _, m := range ms {
		if !slices.Contains(keys, m.key) {
			keys = append(keys, m.key)
		}
	}
	f := func(fig map[string]float64) string {
		var parts []string
		for _, k := range keys {
			if v, ok := fig[k]; ok {
				parts = append(parts, fmt.Sprintf("%s %s", k, num(v)))
			}
		}
		return strings.Join(parts, ", ")
	}
	line := fmt.Sprintf("direct before: %s; ", f(t.before))
	for _, p := range paths {
		if e, ok := t.errs[p]; ok {
			line += fmt.Sprintf("%s: failed (%s); ", p, e)
		} else {
			line += fmt.Sprintf("%s: %s; ", p, f(t.paths[p]))
		}
	}
	return line + fmt.Sprintf("direct after: %s", f(t.after))
}

// num prints a figure with as many digits as its size needs.
func num(v float64) string {
	a := v
	if a < 0 {
		a = -a
	}
	switch {
	case a != a:
		return "—"
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 0.1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	default:
		return strconv.FormatFloat(v, 'f', 3, 64)
	}
}

// wrkArgs is the wrk command line of p.
func (b *bench) wrkArgs(p path, conns int, d time.Duration, extra ...string) []string {
	argv := append(slices.Clone(p.wrap), "taskset", "-c", "0", "wrk", "-t1", "-c"+strconv.Itoa(conns), "-d"+strconv.Itoa(int(d.Seconds()))+"s", "-s", p.wrkScript)
	argv = append(argv, extra...)
	return append(argv, p.wrkURL+"/v1/chat/completions")
}

var (
	wrkNon2xx = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
	wrkReqs   = regexp.MustCompile(`(\d+) requests in`)
	wrkRPS    = regexp.MustCompile(`Requests/sec:\s+([\d.]+)`)
	wrkSock   = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
)

// parseWrk reads wrk's summary: requests, req/s and socket errors.
func parseWrk(s string) (map[string]float64, error) {
	if m := wrkNon2xx.FindStringSubmatch(s); m != nil {
		return nil, fmt.Errorf("%s requests did not get a 2xx answer", m[1])
	}
	reqs, rps := wrkReqs.FindStringSubmatch(s), wrkRPS.FindStringSubmatch(s)
	if reqs == nil || rps == nil {
		return nil, fmt.Errorf("cannot read wrk's output: %s", oneLine(s, 400))
	}
	n, _ := strconv.ParseFloat(reqs[1], 64)
	r, _ := strconv.ParseFloat(rps[1], 64)
	if n == 0 {
		return nil, fmt.Errorf("no request completed: %s", oneLine(s, 400))
	}
	fig := map[string]float64{"requests": n, "rps": r, "sock_errs": 0}
	// wrk counts a connection the server closed under it as a read error, then reconnects.
	if m := wrkSock.FindStringSubmatch(s); m != nil {
		for _, f := range m[1:] {
			e, _ := strconv.ParseFloat(f, 64)
			fig["sock_errs"] += e
		}
	}
	return fig, nil
}

func (b *bench) wrk(argv []string) (map[string]float64, error) {
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("wrk: %v: %s", err, oneLine(string(out), 400))
	}
	if os.Getenv("BENCH_DEBUG") != "" {
		fmt.Println(string(out))
	}
	return parseWrk(string(out))
}

// loadArgs is the load generator's command line for p, calling path (with its query).
func (b *bench) loadArgs(p path, urlPath string, args ...string) []string {
	argv := append(slices.Clone(p.wrap), "taskset", "-c", "0", b.self, "load", "-url", p.loadURL+urlPath)
	if p.connectTo != "" {
		argv = append(argv, "-connect-to", p.connectTo)
	}
	return append(argv, args...)
}

// load runs the load generator; held, when not nil, is called when it prints `held`.
func (b *bench) load(argv []string, held func()) (map[string]float64, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	var last string
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if sc.Text() == "held" && held != nil {
			held()
		}
		last = sc.Text()
	}
	if err := cmd.Wait(); err != nil {
		return nil, fmt.Errorf("load generator: %v: %s", err, oneLine(stderr.String(), 400))
	}
	fig := map[string]float64{}
	if err := json.Unmarshal([]byte(last), &fig); err != nil {
		return nil, fmt.Errorf("load generator printed %q: %v", last, err)
	}
	return fig, nil
}

// workloads is every workload, in the order they run; sel and the bench's options pick some.
func (b *bench) workloads() []*workload {
	light, heavy := b.trialsN, b.heavyTrials
	cpuReq := metric{key: "cpu_us_per_req", label: "proxy CPU-µs/request"}
	cpuVsNginx := metric{key: "cpu_us_per_req", label: "CPU ÷ nginx-rp", vs: ratioToPath, ref: "nginx-rp",
		target: &target{text: "wirken CPU per request ≤ 2× nginx (all features on)", limit: 2}}
	rpsRatio := metric{key: "rps", label: "req/s ÷ direct", vs: ratioToDirect}
	added50 := metric{key: "p50_ms", label: "added p50 ms", vs: minusDirect, target: &target{text: "added p50 ≤ 0.3 ms at 1,000 req/s", limit: 0.3}}
	added99 := metric{key: "p99_ms", label: "added p99 ms", vs: minusDirect, target: &target{text: "added p99 ≤ 1 ms at 1,000 req/s", limit: 1}}
	return []*workload{
		{name: "keepalive", title: "W1: small JSON POST shaped like an LLM call, keep-alive (closed loop: saturation)", trials: light, bracket: "rps",
			about: fmt.Sprintf("`POST /v1/chat/completions`, %d-byte JSON body, %d-byte JSON answer; wrk, 1 thread, %d keep-alive connections, closed loop, for %s. "+
				"The req/s of a closed loop is the saturation rate of the whole box (client, proxy and upstream share its 2 CPUs).", len(body), len(answer), b.conns, b.dur),
			metrics: []metric{{key: "rps", label: "req/s (saturation)", target: &target{text: "≥ 12,400 req/s on these 2 cores", limit: 12400, atLeast: true}},
				rpsRatio, cpuReq, cpuVsNginx, {key: "sock_errs", label: "client socket errors"}},
			run: func(p path) (map[string]float64, error) { return b.wrk(b.wrkArgs(p, b.conns, b.dur)) }},
		{name: "newconn", title: "W2: a new TLS connection per request", trials: light, bracket: "rps",
			about: fmt.Sprintf("The W1 POST with `Connection: close`: every request makes a new TCP connection and a full TLS 1.3 handshake with the path. wrk, 16 connections, closed loop, %s. "+
				"Direct is not an upper bound here (its handshakes cost the upstream's CPU, the proxies take them on the other CPU); CPU per request is the figure.", b.dur),
			metrics: []metric{{key: "rps", label: "req/s"}, rpsRatio, cpuReq, {key: "cpu_us_per_req", label: "CPU ÷ nginx-rp", vs: ratioToPath, ref: "nginx-rp"}, {key: "sock_errs", label: "client socket errors"}},
			run: func(p path) (map[string]float64, error) {
				return b.wrk(b.wrkArgs(p, 16, b.dur, "-H", "Connection: close"))
			}},
		{name: "latency", title: "W3: added latency at a fixed 1,000 req/s (open loop, vegeta)", trials: light, bracket: "p50_ms",
			about: fmt.Sprintf("The W1 POST at a constant 1,000 req/s for %s (vegeta as a library in `wirken-bench load -mode rate`, keep-alive, at most 200 connections, 10 s timeout); "+
				"latency of the successful requests; added = path − mean of the two direct runs of the trial.", b.dur),
			metrics: []metric{added50, added99, {key: "p50_ms", label: "p50 ms"}, {key: "p99_ms", label: "p99 ms"}, {key: "success", label: "success ratio"}, {key: "achieved_rps", label: "achieved req/s"}, cpuReq},
			run: func(p path) (map[string]float64, error) {
				return b.load(b.loadArgs(p, "/v1/chat/completions", "-mode", "rate", "-rate", "1000", "-conns", "200", "-timeout", "10s", "-duration", b.dur.String()), nil)
			}},
		{name: "conns1000", title: "W4: 1,000 concurrent keep-alive connections", trials: b.connsTrials, bracket: "p50_ms",
			about: fmt.Sprintf("The load generator opens 1,000 keep-alive connections (50 at a time, one POST each), holds them idle for 1 s (the proxy's RSS is read then), "+
				"then sends one POST a second on each at spread phases for %s (1,000 req/s open loop). KB per connection = (RSS at 1,000 − RSS just before) ÷ 1,000.", b.dur),
			metrics: []metric{{key: "rss_idle_mb", label: "RSS before, MB"}, {key: "rss_1000_mb", label: "RSS at 1,000 conns, MB"},
				{key: "kb_per_conn", label: "KB per connection", target: &target{text: "≤ 50 KB per idle keep-alive connection", limit: 50}},
				{key: "open_s", label: "s to open 1,000"}, added50, added99, {key: "errors", label: "failed requests"}, cpuReq},
			run: func(p path) (map[string]float64, error) {
				pid := 0
				if p.pid != nil {
					pid = p.pid()
				}
				idle, at := rssTreeKB(pid), 0
				fig, err := b.load(b.loadArgs(p, "/v1/chat/completions", "-mode", "conns", "-conns", "1000", "-hold", "1s", "-timeout", "10s", "-duration", b.dur.String()),
					func() { at = rssTreeKB(pid) })
				if err == nil && pid != 0 {
					fig["rss_idle_mb"], fig["rss_1000_mb"], fig["kb_per_conn"] = float64(idle)/1024, float64(at)/1024, float64(at-idle)/1000
				}
				return fig, err
			}},
		{name: "sse", title: "W5: SSE, 1 MiB over 10 s", trials: heavy, bracket: "last_byte_ms",
			about: "`GET /v1/stream`: 200 events of ~5 KiB, the first at once and then every 50 ms, from the bench's own server behind the upstream nginx (`proxy_buffering off`). " +
				"One stream per run; time to first and last byte from the request.",
			metrics: []metric{{key: "first_byte_ms", label: "first byte, added ms", vs: minusDirect, target: &target{text: "SSE first byte ≤ 5 ms later than direct", limit: 5}},
				{key: "first_byte_ms", label: "first byte ms"}, {key: "last_byte_ms", label: "last byte, added ms", vs: minusDirect}, {key: "last_byte_ms", label: "last byte ms"}, {key: "bytes", label: "bytes"}},
			run: func(p path) (map[string]float64, error) {
				return b.load(b.loadArgs(p, "/v1/stream?bytes=1048576&events=200&seconds=10", "-mode", "sse", "-timeout", "60s"), nil)
			}},
		{name: "download", title: "W6a: 100 MB download", trials: heavy, bracket: "mb_per_s",
			about:   "`GET /v1/download`: a 100 MiB file nginx serves; one request per run.",
			metrics: []metric{{key: "mb_per_s", label: "MiB/s"}, {key: "mb_per_s", label: "MiB/s ÷ direct", vs: ratioToDirect}, {key: "cpu_ms_per_mib", label: "proxy CPU-ms/MiB"}, {key: "first_byte_ms", label: "first byte ms"}},
			run: func(p path) (map[string]float64, error) {
				return b.load(b.loadArgs(p, "/v1/download", "-mode", "down", "-timeout", "60s"), nil)
			}},
		{name: "upload", title: "W6b: 100 MB upload", trials: heavy, bracket: "mb_per_s",
			about:   "`POST /v1/upload` with 100 MiB (Content-Length), streamed by nginx (`proxy_request_buffering off`) to the bench's server, which counts it and answers the count; 60 s timeout.",
			metrics: []metric{{key: "mb_per_s", label: "MiB/s"}, {key: "mb_per_s", label: "MiB/s ÷ direct", vs: ratioToDirect}, {key: "cpu_ms_per_mib", label: "proxy CPU-ms/MiB"}},
			run: func(p path) (map[string]float64, error) {
				return b.load(b.loadArgs(p, "/v1/upload", "-mode", "up", "-bytes", strconv.Itoa(100<<20), "-timeout", "60s"), nil)
			}},
		{name: "ablation", title: "W7: wirken feature ablation (W1 load)", trials: light, bracket: "rps",
			about: fmt.Sprintf("W1 (wrk, %d connections, %s) against wirken restarted in each configuration before its run: **policy**: the rule injects no credential, the audit log on tmpfs "+
				"(`/dev/shm`, where fsync costs nothing; wirken has no switch to turn auditing off, by design); **+vault**: the rule injects the credential from the vault; "+
				"**+audit-fsync**: the audit log on the disk (ext4), fsync'd (group commit) before each request goes upstream; **+otel**: spans and metrics exported over OTLP/HTTP "+
				"to the bench's receiver on loopback (the configuration of the `wirken` path elsewhere).", b.conns, b.dur),
			metrics: []metric{{key: "cpu_us_per_req", label: "proxy CPU-µs/request"}, {key: "rps", label: "req/s"}, rpsRatio},
			run:     func(p path) (map[string]float64, error) { return b.wrk(b.wrkArgs(p, b.conns, b.dur)) },
			paths:   func([]path) []path { return b.ablationPaths() }},
		{name: "connect", title: "W8: connect() overhead of the eBPF redirect", trials: light, bracket: "ns_per_connect",
			about: "5,000 `connect()` calls (each closed at once with a reset) to api.bench.local:443 from inside the agent's cgroup (the connect4 program rewrites them to wirken's " +
				"listener) and from outside to the upstream's address; per call, in the load generator. And the connect4 program itself: `run_time_ns ÷ run_cnt` from the kernel's BPF " +
				"statistics (turned on for the workload with `BPF_ENABLE_STATS`, the counters `kernel.bpf_stats_enabled` turns on, and off after; their own clock reads make it an upper bound).",
			metrics: []metric{{key: "ns_per_connect", label: "connect() ns, added", vs: minusDirect}, {key: "ns_per_connect", label: "connect() ns"},
				{key: "bpf_ns_per_run", label: "connect4 program ns per run", target: &target{text: "eBPF connect() overhead ≤ 5 µs (program run time)", limit: 5000}}, {key: "bpf_runs", label: "program runs"}},
			run:   b.connectRun,
			paths: func(all []path) []path { return onlyWirken(all) }},
	}
}

func onlyWirken(all []path) []path {
	var ps []path
	for _, p := range all {
		if p.name == "wirken" {
			ps = append(ps, p)
		}
	}
	return ps
}

// rssTreeKB is the RSS of pid and its descendants, in KB.
func rssTreeKB(pid int) int {
	if pid == 0 {
		return 0
	}
	total := rssKB(pid)
	tasks, _ := fileGlob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, t := range tasks {
		raw, _ := os.ReadFile(t)
		for _, c := range strings.Fields(string(raw)) {
			if cp, err := strconv.Atoi(c); err == nil {
				total += rssTreeKB(cp)
			}
		}
	}
	return total
}
