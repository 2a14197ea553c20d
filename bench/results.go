package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

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

// cell is a median with its range, or why there is none.
func cell(xs []float64) string {
	if len(xs) == 0 {
		return "—"
	}
	m, lo, hi := stats(xs)
	if len(xs) == 1 {
		return num(m)
	}
	return fmt.Sprintf("%s [%s–%s]", num(m), num(lo), num(hi))
}

// table renders r's accepted trials (all of them, marked, when none was accepted).
func table(w *strings.Builder, r *result) {
	ts := r.accepted
	if len(ts) == 0 && len(r.trials) > 0 {
		fmt.Fprintf(w, "**No trial was accepted** (the direct runs moved more than 10%% on `%s` in every trial); the table shows all %d trials, unfiltered.\n\n", r.w.bracket, len(r.trials))
		ts = r.trials
	}
	fmt.Fprintf(w, "| path |")
	for _, m := range r.w.metrics {
		fmt.Fprintf(w, " %s |", m.label)
	}
	fmt.Fprintf(w, "\n|---|")
	for range r.w.metrics {
		fmt.Fprintf(w, "---|")
	}
	fmt.Fprintln(w)
	for _, p := range append([]string{"direct"}, r.paths...) {
		fmt.Fprintf(w, "| %s |", p)
		for _, m := range r.w.metrics {
			if p == "direct" && (m.vs == minusDirect || m.vs == ratioToPath || m.key == "cpu_us_per_req" || m.key == "cpu_ms_per_mib") {
				fmt.Fprintf(w, " — |")
				continue
			}
			fmt.Fprintf(w, " %s |", cell(column(ts, p, m)))
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w)
	for _, p := range r.paths {
		n := 0
		var last string
		for _, t := range r.trials {
			if e, ok := t.errs[p]; ok {
				n++
				last = e
			}
		}
		if n > 0 {
			fmt.Fprintf(w, "- **%s failed %d of %d runs**: %s\n", p, n, len(r.trials), last)
		}
	}
}

// targetRows are the targets that r's wirken figures answer.
func targetRows(r *result) []string {
	var rows []string
	ts, note := r.accepted, ""
	if len(ts) == 0 {
		ts, note = r.trials, ", no trial accepted: all trials unfiltered"
	}
	for _, m := range r.w.metrics {
		if m.target == nil {
			continue
		}
		xs := column(ts, "wirken", m)
		v := "no figure"
		verdict := "not measured"
		if len(xs) > 0 {
			med, _, _ := stats(xs)
			v = cell(xs)
			verdict = "**not met**"
			if m.target.met(med) {
				verdict = "met"
			}
		}
		rows = append(rows, fmt.Sprintf("| %s | %s: %s (%s%s) | %s |", m.target.text, r.w.name, m.label, v, note, verdict))
	}
	return rows
}

// write renders RESULTS.md, atomically.
func (b *bench) write(paths []path, results []*result, st *startup, took time.Duration) error {
	var w strings.Builder
	fmt.Fprintf(&w, "# Benchmark results (written by `make bench`)\n\n")
	fmt.Fprintf(&w, "- date: %s\n", time.Now().UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&w, "- commit: %s\n", b.commit)
	fmt.Fprintf(&w, "- machine: %s, %d CPUs, kernel %s\n", cpuModel(), runtime.NumCPU(), cmdOut("uname", "-r"))
	fmt.Fprintf(&w, "- tools: %s; %s; wrk %s; mitmdump %s; %s; vegeta v12.13.0 (as a library); built with %s\n", cmdOut("nginx", "-v"), cmdOut("openssl", "version"),
		strings.Split(strings.TrimPrefix(cmdOut("sh", "-c", "wrk -v 2>&1 | head -1"), "wrk "), " Copyright")[0], cmdOut("sh", "-c", "mitmdump --version 2>&1 | head -1"),
		cmdOut("sh", "-c", "squid -v | head -1"), runtime.Version())
	fmt.Fprintf(&w, "- load average (1, 5, 15 min) at the start: %s; at the end: %s (the machine is shared: other processes compete for both CPUs)\n", b.loadStart, loadavg())
	var names []string
	for _, p := range paths {
		names = append(names, p.name)
	}
	fmt.Fprintf(&w, "- run: workloads %s; paths direct,%s; %d trials of the light workloads and %d of the heavy ones, %s per timed load run; %s in all after a 2 s warm-up of each path\n",
		b.sel, strings.Join(names, ","), b.trialsN, b.heavyTrials, b.dur, took.Round(time.Second))
	fmt.Fprintf(&w, "- method: each trial runs direct, every path (order rotated per trial), direct; a trial whose two direct runs differ by more than 10%% on the workload's bracket figure is dropped; "+
		"a cell is the median over the accepted trials [min–max]. Ratios and added figures are against the mean of the same trial's two direct runs. "+
		"Client, upstream nginx (1 worker) and the bench's SSE/upload/OTLP server on CPU 0; the proxy under test on CPU 1 (taskset). "+
		"Proxy CPU is utime+stime of the proxy and its children from `/proc/<pid>/stat` (10 ms ticks) over the run. The load clients do not verify certificates (as wrk does not).\n\n")

	fmt.Fprintf(&w, "## Targets (issue 9), wirken path\n\n| target | figure | verdict |\n|---|---|---|\n")
	for _, r := range results {
		if r.w == nil || r.err != "" && len(r.trials) == 0 {
			continue
		}
		for _, row := range targetRows(r) {
			fmt.Fprintln(&w, row)
		}
	}
	if st != nil && len(st.readyMs) > 0 {
		m, _, _ := stats(st.readyMs)
		fmt.Fprintf(&w, "| start to ready ≤ 100 ms with the aead seal | startup: ready ms after the run (%s; the first start, on a fresh state: %s) | %s |\n",
			cell(st.readyMs), num(b.firstReadyMs), verdict(m <= 100))
	}
	idle := []float64{float64(b.idleRSSKB) / 1024}
	if st != nil && len(st.rssMB) > 0 {
		idle = st.rssMB
	}
	if b.idleRSSKB > 0 {
		m, _, _ := stats(idle)
		fmt.Fprintf(&w, "| idle RSS ≤ 20 MB | startup: RSS 2 s after ready, MB (%s) | %s |\n", cell(idle), verdict(m <= 20))
	}
	fmt.Fprintln(&w)

	for _, r := range results {
		fmt.Fprintf(&w, "## %s\n\n%s\n\n", r.w.title, r.w.about)
		if r.err != "" {
			fmt.Fprintf(&w, "**The workload stopped**: %s\n\n", r.err)
		}
		if len(r.trials) == 0 {
			continue
		}
		fmt.Fprintf(&w, "%d trials, %d accepted, %s.\n\n", len(r.trials), len(r.accepted), r.took.Round(time.Second))
		table(&w, r)
		if r.w.name == "ablation" && len(r.accepted)+len(r.trials) > 0 {
			ts := r.accepted
			if len(ts) == 0 {
				ts = r.trials
			}
			fmt.Fprintf(&w, "\nStep by step (median of each trial's difference, CPU-µs/request):")
			for i := 1; i < len(variants); i++ {
				var d []float64
				for _, t := range ts {
					a, b := t.paths[variants[i-1].name], t.paths[variants[i].name]
					if a != nil && b != nil {
						d = append(d, b["cpu_us_per_req"]-a["cpu_us_per_req"])
					}
				}
				fmt.Fprintf(&w, " %s %s;", variants[i].name, cell(d))
			}
			fmt.Fprintf(&w, " OTLP received by the bench's receiver over the whole run: %s.\n", otlpReceived())
		}
		fmt.Fprintf(&w, "\n<details><summary>every trial, as measured</summary>\n\n")
		for _, t := range r.trials {
			mark := ""
			if spread(t, r.w.bracket) > maxSpread {
				mark = fmt.Sprintf(" **dropped** (direct %s %s then %s)", r.w.bracket, num(t.before[r.w.bracket]), num(t.after[r.w.bracket]))
			}
			fmt.Fprintf(&w, "- trial %d%s: %s\n", t.n, mark, trialLine(t, r.paths, r.w.metrics))
		}
		fmt.Fprintf(&w, "\n</details>\n\n")
	}

	fmt.Fprintf(&w, "## Start-up\n\n")
	if st != nil && len(st.readyMs)+len(st.errs) > 0 {
		fmt.Fprintf(&w, "wirken restarted %d times (config with the aead seal, audit on disk, OTLP export): exec of `wirken run` to the first status its control socket answers (polled every 1 ms by the bench; "+
			"vault unseal, CA, policy, eBPF load and attach) **%s ms**; to the first proxied answer an agent gets (a probe started by `wirken exec` right after, retrying every 10 ms) **%s ms**; "+
			"RSS 2 s after ready **%s MB**. These restarts come after the other workloads, with an audit log of %s MB (the first start, on a fresh state, was ready after %s ms).\n",
			len(st.readyMs)+len(st.errs), cell(st.readyMs), cell(st.firstMs), cell(st.rssMB), num(st.auditMB), num(b.firstReadyMs))
		if len(st.phaseOrder) > 0 {
			var total []float64
			fmt.Fprintf(&w, "\nThe daemon's own timing of its steps (`wirken status`, start-up; ms, median [min–max] over the restarts):")
			for _, name := range st.phaseOrder {
				fmt.Fprintf(&w, " %s %s;", name, cell(st.phases[name]))
				for i, ms := range st.phases[name] {
					if i >= len(total) {
						total = append(total, 0)
					}
					total[i] += ms
				}
			}
			fmt.Fprintf(&w, " in all %s. The rest of exec to ready is the process's own start (Go's package initialisation, the config, the OTel SDK) before those steps.\n", cell(total))
		}
		for _, e := range st.errs {
			fmt.Fprintf(&w, "- failed restart: %s\n", oneLine(e, 300))
		}
	} else if b.readyMs > 0 {
		fmt.Fprintf(&w, "wirken, once (the startup workload was not selected): ready after %.0f ms; idle RSS %.1f MB.\n", b.readyMs, float64(b.idleRSSKB)/1024)
	}
	if len(b.peerReadyMs) > 0 {
		fmt.Fprintf(&w, "\nPeers, once each at the bench's start (exec to the first proxied 200, polled every 10 ms):")
		for _, p := range paths {
			if ms, ok := b.peerReadyMs[p.name]; ok {
				fmt.Fprintf(&w, " %s %s ms;", p.name, num(ms))
			}
		}
		fmt.Fprintln(&w)
	}
	fmt.Fprintf(&w, "\nNot part of this run: the profiles of the data path (`BenchmarkDataPath` with pprof labels per side) and what they led to; see the README, *Profiling the data path*.\n")

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

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "**not met**"
}
