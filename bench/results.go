package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

// stats is the median of xs and its range.
func stats(xs []float64) (med, lo, hi float64) {
	if len(xs) == 0 {
		return 0, 0, 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	med = s[n/2]
	if n%2 == 0 {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	return med, s[0], s[n-1]
}

func cmdOut(argv ...string) string {
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
}

func loadavg() string {
	raw, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(raw))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func cpuModel() string {
	raw, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(raw), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

// write renders RESULTS.md from the accepted trials, atomically.
func (b *bench) write(paths []path, res map[string][]sample, ratios, cpuVsNginx map[string][]float64, dropped []string, took time.Duration) error {
	var w strings.Builder
	accepted := len(res["direct"])
	fmt.Fprintf(&w, "# Benchmark results (written by `make bench`)\n\n")
	fmt.Fprintf(&w, "- date: %s\n", time.Now().UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&w, "- commit: %s\n", b.commit)
	fmt.Fprintf(&w, "- machine: %s, %d CPUs, kernel %s\n", cpuModel(), runtime.NumCPU(), cmdOut("uname", "-r"))
	fmt.Fprintf(&w, "- tools: %s; %s; wrk %s; mitmdump %s; built with %s\n", cmdOut("nginx", "-v"), cmdOut("openssl", "version"),
		strings.Split(strings.TrimPrefix(cmdOut("sh", "-c", "wrk -v 2>&1 | head -1"), "wrk "), " Copyright")[0], cmdOut("sh", "-c", "mitmdump --version 2>&1 | head -1"), runtime.Version())
	fmt.Fprintf(&w, "- load average (1, 5, 15 min) at the start: %s; at the end: %s (the machine is shared: other processes compete for both CPUs)\n", b.loadStart, loadavg())
	fmt.Fprintf(&w, "- run: %d trials of %s per load run (%d accepted, %d dropped by the 10%% direct-bracket rule), %s in all, after a 2 s warm-up of each path\n",
		b.trials, b.dur, accepted, len(dropped), took.Round(time.Second))
	for _, d := range dropped {
		fmt.Fprintf(&w, "  - dropped: %s\n", d)
	}
	fmt.Fprintf(&w, "\n## W1: small JSON POST shaped like an LLM call, keep-alive\n\n")
	fmt.Fprintf(&w, "`POST /v1/chat/completions` with a %d-byte JSON body; the upstream (nginx, 1 worker, TLS 1.3, ECDSA P-256, CPU 0) answers %d bytes of JSON. "+
		"Load: wrk, 1 thread, %d keep-alive connections, closed loop, CPU 0. Proxies on CPU 1. Each trial: direct, every path (order rotated per trial), direct. "+
		"Every path injects an `Authorization` header upstream.\n\n", len(body), len(answer), b.conns)
	if accepted == 0 {
		fmt.Fprintf(&w, "**No trial was accepted**: the direct brackets moved more than 10%% in every trial (a busy machine). Run again, or with more trials.\n\n")
	}
	fmt.Fprintf(&w, "| path | throughput ÷ direct, median [min–max] | proxy CPU-µs per request, median [min–max] | CPU ÷ nginx-rp, median [min–max] | req/s, median |\n|---|---|---|---|---|\n")
	m, _, _ := stats(rps(res["direct"]))
	fmt.Fprintf(&w, "| direct | 1.00 | — | — | %.0f (mean of the two brackets) |\n", m)
	for _, p := range paths {
		r, rl, rh := stats(ratios[p.name])
		c, cl, ch := stats(cpu(res[p.name]))
		n, nl, nh := stats(cpuVsNginx[p.name])
		q, _, _ := stats(rps(res[p.name]))
		fmt.Fprintf(&w, "| %s | %.2f [%.2f–%.2f] | %.1f [%.1f–%.1f] | %.2f [%.2f–%.2f] | %.0f |\n", p.name, r, rl, rh, c, cl, ch, n, nl, nh, q)
	}
	fmt.Fprintf(&w, "\nPaths: **direct**: wrk to the upstream. **wirken**: wrk run by `wirken exec` in the agent's cgroup against `https://%s/`; "+
		"the agent's DNS and connect are steered by wirken's eBPF programs to its resolver and proxy, which checks the policy, injects the credential from the vault "+
		"(aead seal), writes the audit record and forwards (the daemon's defaults: audit on, no OTel exporter). **nginx-rp**: nginx 1 worker as a TLS reverse proxy "+
		"(terminate, re-encrypt, keep-alive pool to the upstream). **mitmdump**: `mitmdump --mode reverse:` (terminate, inspect, re-encrypt); it is a reverse proxy here, "+
		"not its CONNECT/transparent mode. **squid**: Squid ssl-bump in intercept mode (an iptables REDIRECT in the bench's namespace sends the client's "+
		"connections to 127.0.0.3:443 to Squid, which peeks, bumps with its own CA and re-encrypts to the upstream, verifying its chain; only the name check "+
		"is waived since the client names an IP address).\n\n", host)
	fmt.Fprintf(&w, "Every trial, as measured:\n\n")
	for _, l := range b.raw {
		fmt.Fprintf(&w, "- %s\n", l)
	}
	fmt.Fprintf(&w, "\nA path with client socket errors had connections closed under the client (wrk reconnects, with a new TLS handshake): "+
		"its figures are then not keep-alive figures.\n")
	fmt.Fprintf(&w, "\nCPU is utime+stime from `/proc/<pid>/stat` (and the proxy's child processes) over each load run, ÷ requests; 10 ms ticks.\n")
	fmt.Fprintf(&w, "Throughput with a closed-loop client on a shared CPU is bounded by the client and upstream; the CPU per request is the figure that carries over.\n\n")
	fmt.Fprintf(&w, "## wirken start-up and idle\n\n")
	fmt.Fprintf(&w, "- start to ready (exec of `wirken run` to the first answered `wirken status`, polled every 5 ms; includes vault unseal with aead, CA load, policy, eBPF load and attach): %.0f ms\n", b.readyMs)
	fmt.Fprintf(&w, "- idle RSS 2 s after ready: %.1f MB\n", float64(b.idleRSSKB)/1024)
	fmt.Fprintf(&w, "\n## Not measured yet (issue 9)\n\n")
	fmt.Fprintf(&w, "a new TLS connection per request; 1,000 concurrent connections; SSE; 100 MB up/download; open-loop latency (vegeta); "+
		"saturation rps of the proxy alone; RSS at 1,000 connections; the feature ablation (policy, vault, audit fsync, OTel); eBPF connect() overhead; profiles (see README).\n")
	tmp, err := os.CreateTemp(filepath.Dir(b.out), ".results-*")
	if err != nil {
		return err
	}
	if _, err := tmp.WriteString(w.String()); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	os.Chmod(tmp.Name(), 0o644)
	fmt.Print(w.String())
	return os.Rename(tmp.Name(), b.out)
}

func rps(s []sample) []float64 {
	var r []float64
	for _, x := range s {
		r = append(r, x.rps)
	}
	return r
}

func cpu(s []sample) []float64 {
	var r []float64
	for _, x := range s {
		r = append(r, x.cpuUsPerReq)
	}
	return r
}
