//go:build linux

package vmtests

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// The soak's bounds on growth. Each compares the median of the samples taken in the last fifth
// of the run with the median of those taken just after the warm-up (from 20% to 40% of the
// run): medians, so that the connections, requests and streams in flight at the moment of a
// sample (which come and go) do not count; growth between them is what the daemon keeps.
const (
	// soakFDGrowth: the load has at most a dozen agent connections open at once (one per
	// worker, two idle kept-alive ones per client) and the upstream pool a few; a leak of one
	// descriptor per thousand requests over a 5-minute soak (tens of thousands of requests)
	// is past it.
	soakFDGrowth = 32
	// soakGoroutineGrowth: each open connection costs one to three goroutines (the agent
	// side's reader, the upstream transport's read and write loops); twice the descriptors'
	// bound.
	soakGoroutineGrowth = 64
	// soakRSSGrowthPct and soakRSSGrowthMB: the heap grows to its collection goal and the
	// runtime keeps some freed pages; past a quarter more than after the warm-up (or 20 MB,
	// whichever is larger, for a daemon whose baseline is small), something is kept per
	// request.
	soakRSSGrowthPct = 25
	soakRSSGrowthMB  = 20
	// soakSampleEvery is how often the daemon is measured.
	soakSampleEvery = 2 * time.Second
)

// soakDuration is WIRKEN_SOAK, else 5 minutes under CI=true and 30 seconds otherwise.
func soakDuration(t *testing.T) time.Duration {
	t.Helper()
	if v := os.Getenv("WIRKEN_SOAK"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 10*time.Second {
			t.Fatalf("WIRKEN_SOAK=%q: want a duration of at least 10s", v)
		}
		return d
	}
	if os.Getenv("CI") == "true" {
		return 5 * time.Minute
	}
	return 30 * time.Second
}

// series is the samples of a run, in order.
type series struct {
	mu sync.Mutex
	s  []sample
}

func (s *series) add(x sample) {
	s.mu.Lock()
	s.s = append(s.s, x)
	s.mu.Unlock()
}

// window returns the samples taken from fraction from to fraction to of d.
func (s *series) window(d time.Duration, from, to float64) []sample {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []sample
	for _, x := range s.s {
		if f := float64(x.at) / float64(d); f >= from && f < to {
			out = append(out, x)
		}
	}
	return out
}

// summary is min / median / max of each measure over samples.
func summary(ss []sample) string {
	if len(ss) == 0 {
		return "no samples"
	}
	f := func(name string, get func(sample) int64, unit float64, format string) string {
		lo, hi := get(ss[0]), get(ss[0])
		for _, x := range ss {
			lo, hi = min(lo, get(x)), max(hi, get(x))
		}
		return fmt.Sprintf("%s "+format+"/"+format+"/"+format, name, float64(lo)/unit, float64(medianOf(ss, get))/unit, float64(hi)/unit)
	}
	return fmt.Sprintf("%d samples: %s; %s; %s; %s", len(ss),
		f("fds", func(x sample) int64 { return int64(x.fds) }, 1, "%.0f"),
		f("goroutines", func(x sample) int64 { return int64(x.goroutines) }, 1, "%.0f"),
		f("RSS MB", func(x sample) int64 { return x.rssKB }, 1024, "%.1f"),
		f("agent conns", func(x sample) int64 { return int64(x.conns) }, 1, "%.0f"))
}

// TestSoak runs a mixed load through the proxy for WIRKEN_SOAK (5 minutes under CI=true):
// kept-alive requests over HTTP/1.1 and h2, a new connection per request, requests refused by
// the rule's paths, connections to a host with no rule, DNS queries for allowed and refused
// names, and streamed responses, all from one agent. It samples the daemon's descriptors,
// goroutines and RSS every soakSampleEvery and checks that, after the warm-up (the first
// 20%), none grows past its bound; that every request was answered as expected; that the
// audit log verifies and holds a credential.use (and a credential.result) for every request
// the upstream received; and that the daemon gives back what the load held once it stops.
func TestSoak(t *testing.T) {
	requireRoot(t)
	d := soakDuration(t)
	e, up := loadEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), d+10*time.Minute)
	defer cancel()
	before := e.sample(t, time.Now())

	start := time.Now()
	var ser series
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			if x, err := e.trySample(start); err == nil {
				ser.add(x)
			} else {
				t.Errorf("sampling the daemon: %v", err)
			}
			select {
			case <-stop:
				return
			case <-time.After(soakSampleEvery):
			}
		}
	}()
	cmd, stdin, out := e.loadAgentCmd(t, ctx, "soak", d.String())
	stdin.Close()
	line, err := out.ReadString('\n')
	close(stop)
	<-stopped
	if err != nil {
		cmd.Wait()
		t.Fatalf("soak agent gave no report: %v\ndaemon log tail:\n%s", err, tail(e.logs.String(), 30))
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("soak agent: %v", err)
	}
	var rep soakReport
	if err := json.Unmarshal([]byte(line), &rep); err != nil {
		t.Fatalf("soak agent report %q: %v", line, err)
	}
	t.Logf("soak of %s: answered as expected %v; upstream requests %d; errors %v", d, rep.OK, rep.Upstream, rep.Errors)
	if len(rep.Errors) != 0 {
		t.Errorf("the soak's agent saw errors: %v", rep.Errors)
	}
	for _, kind := range []string{"keepalive-h1", "keepalive-h2", "newconn", "stream", "denied-path", "denied-host", "dns"} {
		if rep.OK[kind] == 0 {
			t.Errorf("no %s traffic went as expected", kind)
		}
	}

	// Growth after the warm-up.
	warm, early, late := ser.window(d, 0, 0.2), ser.window(d, 0.2, 0.4), ser.window(d, 0.8, 1.01)
	t.Logf("before: %s", before)
	t.Logf("warm-up (0-20%%): %s", summary(warm))
	t.Logf("early (20-40%%): %s", summary(early))
	t.Logf("mid (40-80%%): %s", summary(ser.window(d, 0.4, 0.8)))
	t.Logf("late (80-100%%): %s", summary(late))
	if len(early) < 3 || len(late) < 3 {
		t.Fatalf("too few samples to compare (%d early, %d late): a longer WIRKEN_SOAK is needed", len(early), len(late))
	}
	grow := func(get func(sample) int64) int64 { return medianOf(late, get) - medianOf(early, get) }
	fds := grow(func(x sample) int64 { return int64(x.fds) })
	gor := grow(func(x sample) int64 { return int64(x.goroutines) })
	rss := grow(func(x sample) int64 { return x.rssKB })
	rssBound := max(medianOf(early, func(x sample) int64 { return x.rssKB })*soakRSSGrowthPct/100, soakRSSGrowthMB*1024)
	t.Logf("growth after the warm-up (late median - early median): fds %+d (bound %d), goroutines %+d (bound %d), RSS %+.1f MB (bound %.1f MB)",
		fds, soakFDGrowth, gor, soakGoroutineGrowth, float64(rss)/1024, float64(rssBound)/1024)
	if fds > soakFDGrowth {
		t.Errorf("the daemon's descriptors grew by %d after the warm-up; bound %d", fds, soakFDGrowth)
	}
	if gor > soakGoroutineGrowth {
		t.Errorf("the daemon's goroutines grew by %d after the warm-up; bound %d", gor, soakGoroutineGrowth)
	}
	if rss > rssBound {
		t.Errorf("the daemon's RSS grew by %.1f MB after the warm-up; bound %.1f MB", float64(rss)/1024, float64(rssBound)/1024)
	}

	// Every request the upstream received was audited, with the credential, and finished.
	reqs := up.requests.Load()
	uses, results := e.recordCount("credential.use"), e.recordCount("credential.result")
	// A result is recorded as its response ends, which the agent may see a moment earlier.
	for deadline := time.Now().Add(10 * time.Second); results < uses && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		uses, results = e.recordCount("credential.use"), e.recordCount("credential.result")
	}
	t.Logf("upstream: %d requests over %d connections (%d streams); audit: %d credential.use, %d credential.result, %d request.deny, %d conn.deny, %d dns.query, %d dns.deny",
		reqs, up.ln.accepted.Load(), up.streams.Load(), uses, results, e.recordCount("request.deny"), e.recordCount("conn.deny"),
		e.recordCount("dns.query"), e.recordCount("dns.deny"))
	if int64(uses) != reqs || int64(results) != reqs || reqs != int64(rep.Upstream) {
		t.Errorf("the upstream received %d requests, the agent counted %d answered; the audit log has %d credential.use and %d credential.result records; want all equal",
			reqs, rep.Upstream, uses, results)
	}
	if n := up.noCred.Load(); n != 0 {
		t.Errorf("%d requests reached the upstream without the credential", n)
	}
	if got := up.streams.Load(); got != int64(rep.OK["stream"]) {
		t.Errorf("the upstream finished %d streams; the agent read %d whole", got, rep.OK["stream"])
	}
	if n := e.recordCount("request.deny"); n < rep.OK["denied-path"] {
		t.Errorf("%d request.deny records for %d refused requests", n, rep.OK["denied-path"])
	}
	if n := e.recordCount("conn.deny"); n < rep.OK["denied-host"] {
		t.Errorf("%d conn.deny records for %d refused connections", n, rep.OK["denied-host"])
	}
	r := e.wirken(nil, "audit", "verify")
	if r.code != 0 || !strings.Contains(r.stdout, "ok") {
		t.Errorf("audit verify: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if strings.Contains(e.logs.String(), e.canary) || strings.Contains(e.auditLog(), e.canary) {
		t.Error("the secret appears in the daemon's log or the audit log")
	}

	// Once the load stops, what it held is given back.
	after := waitSettled(t, e, before, start)
	t.Logf("after the soak: %s", after)
}
