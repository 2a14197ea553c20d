package main

// The load generator: `wirken-bench load -mode M ...`, run by the bench as the client of one
// path (for the wirken path inside the agent's cgroup, through `wirken exec`). It prints its
// figures as one JSON object on the last line of stdout.

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

type loadgen struct {
	mode, url, connectTo, method string
	rate, conns, n               int
	dur, hold, timeout           time.Duration
	bytes                        int64
}

func loadMain(args []string) error {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	g := &loadgen{}
	fs.StringVar(&g.mode, "mode", "rate", "rate (open-loop, vegeta), conns (N connections at 1 req/s each), sse, down, up, probe, connect")
	fs.StringVar(&g.url, "url", "", "the URL to call")
	fs.StringVar(&g.connectTo, "connect-to", "", "dial this host:port instead of the URL's (SNI and Host stay the URL's)")
	fs.StringVar(&g.method, "method", "POST", "method of rate, conns and probe requests")
	fs.IntVar(&g.rate, "rate", 1000, "requests per second (rate)")
	fs.IntVar(&g.conns, "conns", 1000, "connections (conns), or the cap on vegeta's connections (rate)")
	fs.IntVar(&g.n, "n", 20000, "connect() calls (connect)")
	fs.DurationVar(&g.dur, "duration", 5*time.Second, "length of the run")
	fs.DurationVar(&g.hold, "hold", time.Second, "conns: how long the connections stay idle after `held` is printed")
	fs.DurationVar(&g.timeout, "timeout", 30*time.Second, "per-request timeout (probe: how long to keep trying)")
	fs.Int64Var(&g.bytes, "bytes", 100<<20, "up: bytes to upload")
	if err := fs.Parse(args); err != nil {
		return err
	}
	raiseNoFile()
	var res map[string]float64
	var err error
	switch g.mode {
	case "rate":
		res, err = g.attack()
	case "conns":
		res, err = g.manyConns()
	case "sse", "down":
		res, err = g.get()
	case "up":
		res, err = g.upload()
	case "probe":
		res, err = g.probe()
	case "connect":
		res, err = g.connects()
	default:
		err = fmt.Errorf("unknown mode %q", g.mode)
	}
	if err != nil {
		return err
	}
	for k, v := range res {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			delete(res, k) // no figure (e.g. no request succeeded): left out, JSON has no NaN
		}
	}
	out, err := json.Marshal(res)
	if err != nil {
		return err
	}
	fmt.Println(string(out))
	return nil
}

// raiseNoFile lifts the soft open-files limit to the hard one (1,000 connections need it).
func raiseNoFile() {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) == nil && l.Cur < l.Max {
		l.Cur = l.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}

// tlsConfig does not verify the server, as wrk does not: every path is measured alike.
func tlsConfig() *tls.Config {
	return &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}
}

// dialer dials connectTo when it is set, the address asked for otherwise.
func (g *loadgen) dialer() func(ctx context.Context, network, addr string) (net.Conn, error) {
	d := &net.Dialer{Timeout: 10 * time.Second}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if g.connectTo != "" {
			addr = g.connectTo
		}
		return d.DialContext(ctx, network, addr)
	}
}

func (g *loadgen) transport(maxConns int) *http.Transport {
	return &http.Transport{DialContext: g.dialer(), TLSClientConfig: tlsConfig(), MaxIdleConns: maxConns,
		MaxIdleConnsPerHost: maxConns, IdleConnTimeout: 5 * time.Minute, DisableCompression: true, ForceAttemptHTTP2: false}
}

func (g *loadgen) request(ctx context.Context) (*http.Request, error) {
	var r io.Reader
	if g.method == "POST" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, g.method, g.url, r)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	return req, nil
}

// attack is an open-loop run at a fixed rate with vegeta; added latency is computed by the bench.
func (g *loadgen) attack() (map[string]float64, error) {
	// One client for the warm-up and the measured run, so the second starts with the pool warm.
	// Its transport dials g.connectTo like vegeta's -connect-to: SNI and Host stay the URL's.
	tr := g.transport(g.conns)
	tr.MaxConnsPerHost = g.conns
	client := &http.Client{Transport: tr, Timeout: g.timeout}
	attacker := func() *vegeta.Attacker {
		return vegeta.NewAttacker(vegeta.Client(client), vegeta.MaxWorkers(uint64(g.conns)))
	}
	tgt := vegeta.Target{Method: g.method, URL: g.url, Header: http.Header{"Content-Type": {"application/json"}}}
	if g.method == "POST" {
		tgt.Body = []byte(body)
	}
	// A second at the rate first, not counted: the connections it opens stay pooled, so the
	// measured run starts warm instead of queueing behind a burst of handshakes.
	for range attacker().Attack(vegeta.NewStaticTargeter(tgt), vegeta.Rate{Freq: g.rate, Per: time.Second}, time.Second, "warm-up") {
	}
	var m vegeta.Metrics
	var lat []float64
	for r := range attacker().Attack(vegeta.NewStaticTargeter(tgt), vegeta.Rate{Freq: g.rate, Per: time.Second}, g.dur, "bench") {
		m.Add(r)
		if r.Code == 200 && r.Error == "" {
			lat = append(lat, float64(r.Latency.Microseconds())/1000)
		}
	}
	m.Close()
	return map[string]float64{"requests": float64(m.Requests), "success": m.Success, "achieved_rps": m.Rate,
		"p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99), "max_ms": percentile(lat, 100)}, nil
}

// manyConns opens g.conns keep-alive connections (one request each), prints `held`, keeps them
// idle for g.hold (the bench reads the proxy's RSS then), and then sends one request a second
// on each, at random phases, for g.dur: an open loop of g.conns requests per second.
func (g *loadgen) manyConns() (map[string]float64, error) {
	clients := make([]*http.Client, g.conns)
	for i := range clients {
		clients[i] = &http.Client{Transport: g.transport(1), Timeout: g.timeout}
	}
	do := func(c *http.Client) (time.Duration, error) {
		req, err := g.request(context.Background())
		if err != nil {
			return 0, err
		}
		t0 := time.Now()
		resp, err := c.Do(req)
		if err != nil {
			return 0, err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err == nil && resp.StatusCode != 200 {
			err = fmt.Errorf("status %s", resp.Status)
		}
		return time.Since(t0), err
	}
	// Open them 50 at a time, as a pool of agents would, not 1,000 handshakes at once.
	var mu sync.Mutex
	var firstErr error
	var failed int
	sem := make(chan struct{}, 50)
	var wg sync.WaitGroup
	t0 := time.Now()
	for _, c := range clients {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if _, err := do(c); err != nil {
				mu.Lock()
				failed++
				firstErr = err
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	openS := time.Since(t0).Seconds()
	if failed > g.conns/10 {
		return nil, fmt.Errorf("%d of %d connections failed their first request: %v", failed, g.conns, firstErr)
	}
	fmt.Println("held")
	time.Sleep(g.hold)
	var lat []float64
	var errs int
	end := time.Now().Add(g.dur)
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			next := time.Now().Add(time.Duration(i) * time.Second / time.Duration(len(clients)))
			for next.Before(end) {
				time.Sleep(time.Until(next))
				d, err := do(c)
				mu.Lock()
				if err != nil {
					errs++
				} else {
					lat = append(lat, float64(d.Microseconds())/1000)
				}
				mu.Unlock()
				next = next.Add(time.Second)
			}
		}()
	}
	wg.Wait()
	return map[string]float64{"open_s": openS, "open_failed": float64(failed), "requests": float64(len(lat) + errs), "errors": float64(errs),
		"p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99)}, nil
}

// get reads the response of a GET to its end: time to the first and the last byte, bytes.
func (g *loadgen) get() (map[string]float64, error) {
	c := &http.Client{Transport: g.transport(1), Timeout: g.timeout}
	t0 := time.Now()
	resp, err := c.Get(g.url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("status %s", resp.Status)
	}
	buf := make([]byte, 64<<10)
	var first time.Duration
	var n int64
	for {
		k, err := resp.Body.Read(buf)
		if k > 0 && n == 0 {
			first = time.Since(t0)
		}
		n += int64(k)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("after %d bytes: %w", n, err)
		}
	}
	last := time.Since(t0)
	return map[string]float64{"first_byte_ms": float64(first.Microseconds()) / 1000, "last_byte_ms": float64(last.Microseconds()) / 1000,
		"bytes": float64(n), "mb_per_s": float64(n) / (1 << 20) / last.Seconds()}, nil
}

// upload POSTs g.bytes and reads the answer (the sink counts what it got).
func (g *loadgen) upload() (map[string]float64, error) {
	c := &http.Client{Transport: g.transport(1), Timeout: g.timeout}
	req, err := http.NewRequest("POST", g.url, io.LimitReader(zeros{}, g.bytes))
	if err != nil {
		return nil, err
	}
	req.ContentLength = g.bytes
	req.Header.Set("Content-Type", "application/octet-stream")
	t0 := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	d := time.Since(t0)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("status %s: %s", resp.Status, got)
	}
	var s struct{ Bytes int64 }
	if json.Unmarshal(got, &s) != nil || s.Bytes != g.bytes {
		return nil, fmt.Errorf("the upstream got %q, want %d bytes", got, g.bytes)
	}
	return map[string]float64{"bytes": float64(g.bytes), "seconds": d.Seconds(), "mb_per_s": float64(g.bytes) / (1 << 20) / d.Seconds()}, nil
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// probe tries one request every 10 ms until one answers 200 and prints when (unix ns).
func (g *loadgen) probe() (map[string]float64, error) {
	c := &http.Client{Transport: g.transport(1), Timeout: time.Second}
	var last error
	for deadline := time.Now().Add(g.timeout); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		req, err := g.request(context.Background())
		if err != nil {
			return nil, err
		}
		resp, err := c.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return map[string]float64{"ok_unix_ns": float64(time.Now().UnixNano())}, nil
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		last = err
	}
	return nil, fmt.Errorf("no answer within %s: %v", g.timeout, last)
}

// connects times g.n connect() calls to the URL's host:port (resolved once), each closed at once.
func (g *loadgen) connects() (map[string]float64, error) {
	u, err := url.Parse(g.url)
	if err != nil {
		return nil, err
	}
	port := 443
	if p := u.Port(); p != "" {
		fmt.Sscan(p, &port)
	}
	name := u.Hostname()
	if g.connectTo != "" {
		h, p, err := net.SplitHostPort(g.connectTo)
		if err != nil {
			return nil, err
		}
		name = h
		fmt.Sscan(p, &port)
	}
	// Resolved once, as an agent would (wirken's resolver answers inside the agent's cgroup).
	ips, err := net.LookupIP(name)
	if err != nil {
		return nil, err
	}
	var ip4 net.IP
	for _, ip := range ips {
		if ip.To4() != nil {
			ip4 = ip.To4()
			break
		}
	}
	if ip4 == nil {
		return nil, fmt.Errorf("%s has no IPv4 address", u.Hostname())
	}
	sa := &syscall.SockaddrInet4{Port: port, Addr: [4]byte(ip4)}
	var inConnect time.Duration
	for i := 0; i < g.n; i++ {
		fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			return nil, err
		}
		t0 := time.Now()
		err = syscall.Connect(fd, sa)
		inConnect += time.Since(t0)
		// Close with a reset: no TIME_WAIT left to exhaust the ports of later runs.
		syscall.SetsockoptLinger(fd, syscall.SOL_SOCKET, syscall.SO_LINGER, &syscall.Linger{Onoff: 1})
		syscall.Close(fd)
		if err != nil {
			return nil, fmt.Errorf("connect %d: %w", i, err)
		}
	}
	return map[string]float64{"connects": float64(g.n), "ns_per_connect": float64(inConnect.Nanoseconds()) / float64(g.n)}, nil
}
