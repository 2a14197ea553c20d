package main

import (
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"

	"github.com/wirken/wirken/hostagent"
)

func fig(kv ...float64) map[string]float64 {
	keys := []string{"rps", "p50_ms", "cpu_us_per_req"}
	m := map[string]float64{}
	for i, v := range kv {
		m[keys[i]] = v
	}
	return m
}

func TestBracketRejection(t *testing.T) {
	ts := []trial{
		{n: 1, before: fig(1000), after: fig(950)},  // 5% apart: kept
		{n: 2, before: fig(1000), after: fig(890)},  // 11% apart: dropped
		{n: 3, before: fig(800), after: fig(1000)},  // 20% apart (of the larger): dropped
		{n: 4, before: fig(1000), after: fig(1000)}, // kept
	}
	ok, dropped := accept(ts, "rps", maxSpread)
	if len(ok) != 2 || ok[0].n != 1 || ok[1].n != 4 {
		t.Errorf("accepted %+v, want trials 1 and 4", ok)
	}
	if len(dropped) != 2 || dropped[0].n != 2 || dropped[1].n != 3 {
		t.Errorf("dropped %+v, want trials 2 and 3", dropped)
	}
	if s := spread(trial{before: fig(0), after: fig(0)}, "rps"); s != 0 {
		t.Errorf("spread of two zeros = %v, want 0", s)
	}
}

func TestColumnAgainstDirectAndPeers(t *testing.T) {
	ts := []trial{
		{before: fig(1000, 0.2), after: fig(1000, 0.4), paths: map[string]map[string]float64{
			"wirken": fig(500, 0.5, 100), "nginx-rp": fig(800, 0.35, 50)}, errs: map[string]string{}},
		{before: fig(2000, 0.1), after: fig(2000, 0.1), paths: map[string]map[string]float64{
			"wirken": fig(500, 1.1, 90), "nginx-rp": fig(1000, 0.2, 30)}, errs: map[string]string{}},
		// wirken failed this one: it has no figure and must not count as zero.
		{before: fig(1000, 0.3), after: fig(1000, 0.3), paths: map[string]map[string]float64{
			"wirken": nil, "nginx-rp": fig(900, 0.3, 40)}, errs: map[string]string{"wirken": "timeout"}},
	}
	eq := func(name string, got, want []float64) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s: got %v, want %v", name, got, want)
		}
		for i := range got {
			if math.Abs(got[i]-want[i]) > 1e-9 {
				t.Errorf("%s: got %v, want %v", name, got, want)
			}
		}
	}
	eq("ratio", column(ts, "wirken", metric{key: "rps", vs: ratioToDirect}), []float64{0.5, 0.25})
	eq("added", column(ts, "wirken", metric{key: "p50_ms", vs: minusDirect}), []float64{0.2, 1.0})
	eq("vs nginx", column(ts, "wirken", metric{key: "cpu_us_per_req", vs: ratioToPath, ref: "nginx-rp"}), []float64{2, 3})
	eq("as is", column(ts, "nginx-rp", metric{key: "rps"}), []float64{800, 1000, 900})
	eq("direct", column(ts, "direct", metric{key: "rps"}), []float64{1000, 2000, 1000})
	eq("missing key", column(ts, "wirken", metric{key: "kb_per_conn"}), nil)
	eq("direct lacks it", column(ts, "direct", metric{key: "kb_per_conn"}), nil)
}

func TestStatsAndPercentile(t *testing.T) {
	m, lo, hi := stats([]float64{5, 1, 3})
	if m != 3 || lo != 1 || hi != 5 {
		t.Errorf("stats odd = %v %v %v", m, lo, hi)
	}
	if m, _, _ := stats([]float64{4, 1, 3, 2}); m != 2.5 {
		t.Errorf("stats even median = %v, want 2.5", m)
	}
	if m, _, _ := stats(nil); !math.IsNaN(m) {
		t.Errorf("stats of none = %v, want NaN", m)
	}
	xs := make([]float64, 100)
	for i := range xs {
		xs[i] = float64(100 - i) // 100..1, unsorted
	}
	for _, c := range []struct{ p, want float64 }{{50, 50}, {99, 99}, {100, 100}, {1, 1}, {0, 1}} {
		if got := percentile(xs, c.p); got != c.want {
			t.Errorf("percentile %v = %v, want %v", c.p, got, c.want)
		}
	}
	if got := percentile([]float64{7}, 99); got != 7 {
		t.Errorf("percentile of one = %v", got)
	}
	if !math.IsNaN(percentile(nil, 50)) {
		t.Error("percentile of none is not NaN")
	}
}

func TestTargets(t *testing.T) {
	le := target{limit: 0.3}
	ge := target{limit: 12400, atLeast: true}
	if !le.met(0.3) || le.met(0.31) || le.met(math.NaN()) {
		t.Error("≤ target judged wrong")
	}
	if !ge.met(12400) || ge.met(12399) {
		t.Error("≥ target judged wrong")
	}
	r := &result{w: &workload{name: "latency", bracket: "p50_ms", metrics: []metric{
		{key: "p50_ms", label: "added p50", vs: minusDirect, target: &target{text: "p50", limit: 0.3}}}},
		paths: []string{"wirken"}}
	r.trials = []trial{{before: fig(0, 0.2), after: fig(0, 0.2), paths: map[string]map[string]float64{"wirken": fig(0, 0.4)}}}
	r.accepted = r.trials
	rows := targetRows(r)
	if len(rows) != 1 || !strings.Contains(rows[0], "met |") || strings.Contains(rows[0], "not met") {
		t.Errorf("0.2 ms added against ≤ 0.3: %q", rows)
	}
	r.trials[0].paths["wirken"] = fig(0, 0.9)
	if rows := targetRows(r); !strings.Contains(rows[0], "**not met**") {
		t.Errorf("0.7 ms added against ≤ 0.3: %q", rows)
	}
}

func TestTableShowsFailuresAndUnfiltered(t *testing.T) {
	r := &result{w: &workload{name: "sse", bracket: "last_byte_ms", metrics: []metric{
		{key: "last_byte_ms", label: "last", vs: minusDirect}}}, paths: []string{"wirken", "mitmdump"}}
	r.trials = []trial{{n: 1, before: map[string]float64{"last_byte_ms": 100}, after: map[string]float64{"last_byte_ms": 200},
		paths: map[string]map[string]float64{"wirken": {"last_byte_ms": 160}}, errs: map[string]string{"mitmdump": "buffered it all"}}}
	r.accepted, r.dropped = accept(r.trials, "last_byte_ms", maxSpread)
	var w strings.Builder
	table(&w, r)
	out := w.String()
	for _, want := range []string{"No trial was accepted", "| wirken | 10.0 |", "| mitmdump | — |", "mitmdump failed 1 of 1 runs**: buffered it all"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func TestParseWrk(t *testing.T) {
	out := `Running 5s test @ https://127.0.0.2/v1/chat/completions
  1 threads and 50 connections
  12345 requests in 5.00s, 4.1MB read
  Socket errors: connect 0, read 7, write 1, timeout 2
Requests/sec:   2469.00
`
	f, err := parseWrk(out)
	if err != nil {
		t.Fatal(err)
	}
	if f["requests"] != 12345 || f["rps"] != 2469 || f["sock_errs"] != 10 {
		t.Errorf("parsed %v", f)
	}
	if _, err := parseWrk(out + "  Non-2xx or 3xx responses: 3\n"); err == nil {
		t.Error("non-2xx answers were not an error")
	}
	if _, err := parseWrk("  0 requests in 1.00s, 0B read\nRequests/sec: 0.00\n"); err == nil {
		t.Error("no completed request was not an error")
	}
	if _, err := parseWrk("garbage"); err == nil {
		t.Error("garbage was not an error")
	}
}

func TestRenderedConfigs(t *testing.T) {
	for _, v := range variants {
		var pol struct {
			Credentials map[string]map[string]any
			Rules       []map[string]any
		}
		if _, err := toml.Decode(renderPolicy(v), &pol); err != nil {
			t.Fatalf("%s: policy does not parse: %v\n%s", v.name, err, renderPolicy(v))
		}
		_, hasCred := pol.Rules[0]["credential"]
		if hasCred != v.credential || (len(pol.Credentials) > 0) != v.credential {
			t.Errorf("%s: credential in the rule %v, credentials %v; want %v", v.name, hasCred, pol.Credentials, v.credential)
		}
		var cfg struct {
			Policy string
			Audit  struct{ Log string }
			Bpf    struct {
				PinDir string `toml:"pin_dir"`
			}
		}
		text := renderConfig(v, "p.toml", "cg", "/sys/fs/bpf/x", "127.0.0.1:53", "/dev/shm/y")
		if _, err := toml.Decode(text, &cfg); err != nil {
			t.Fatalf("%s: config does not parse: %v\n%s", v.name, err, text)
		}
		if cfg.Policy != "p.toml" || cfg.Bpf.PinDir != "/sys/fs/bpf/x" {
			t.Errorf("%s: config %+v", v.name, cfg)
		}
		if onShm := strings.HasPrefix(cfg.Audit.Log, "/dev/shm/y/"); onShm == v.diskAudit {
			t.Errorf("%s: audit log %q, want on disk %v", v.name, cfg.Audit.Log, v.diskAudit)
		}
		env := strings.Join(daemonEnv(v), "\n")
		if strings.Contains(env, "OTEL_EXPORTER_OTLP_ENDPOINT=http://"+otlpAddr) != v.otel {
			t.Errorf("%s: OTLP endpoint in the environment: want %v", v.name, v.otel)
		}
	}
	if v, err := variantNamed("full"); err != nil || !v.otel || !v.diskAudit || !v.credential {
		t.Errorf("full = %+v, %v", v, err)
	}
	if _, err := variantNamed("nope"); err == nil {
		t.Error("an unknown configuration was accepted")
	}
}

func TestChooseWorkloadsAndPaths(t *testing.T) {
	b := &bench{sel: "sse,connect", pathSel: "wirken,squid", trialsN: 1, heavyTrials: 1, connsTrials: 1}
	if err := b.choose(false, true); err != nil {
		t.Fatal(err)
	}
	if !b.workloadsOn["sse"] || !b.workloadsOn["connect"] || b.workloadsOn["keepalive"] || !b.pathsOn["wirken"] || b.pathsOn["squid"] {
		t.Errorf("chose %v and %v", b.workloadsOn, b.pathsOn)
	}
	for _, bad := range []*bench{{sel: "warp", pathSel: "all", trialsN: 1, heavyTrials: 1, connsTrials: 1},
		{sel: "all", pathSel: "envoy", trialsN: 1, heavyTrials: 1, connsTrials: 1}, {sel: "all", pathSel: "all", heavyTrials: 1, connsTrials: 1}} {
		if err := bad.choose(false, false); err == nil {
			t.Errorf("%q / %q / %d trials accepted", bad.sel, bad.pathSel, bad.trialsN)
		}
	}
	b = &bench{sel: "all", pathSel: "all", trialsN: 1, heavyTrials: 1, connsTrials: 1}
	b.choose(false, false)
	for _, w := range b.workloads() {
		if !b.workloadsOn[w.name] {
			t.Errorf("workload %s is not in -workloads all", w.name)
		}
	}
}

func TestStartupPhasesKeepOrder(t *testing.T) {
	st := &startup{phases: map[string][]float64{}}
	st.addPhases([]hostagent.StartupPhase{{Name: "policy", Ms: 1}, {Name: "ebpf", Ms: 40}})
	st.addPhases([]hostagent.StartupPhase{{Name: "policy", Ms: 2}, {Name: "ebpf", Ms: 60}, {Name: "proxy", Ms: 3}})
	if !slices.Equal(st.phaseOrder, []string{"policy", "ebpf", "proxy"}) {
		t.Errorf("order %v", st.phaseOrder)
	}
	if !slices.Equal(st.phases["ebpf"], []float64{40, 60}) || !slices.Equal(st.phases["proxy"], []float64{3}) {
		t.Errorf("phases %v", st.phases)
	}
}
