//go:build linux

package vmtests

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// loadAgentArg, as the test binary's first argument, makes it the load generator (TestMain):
// an agent that runs inside the agent cgroup through `wirken exec`, so every connection it
// makes is steered into the proxy by the kernel.
const loadAgentArg = "wirken-load-agent"

// loadHost is the name the load goes to; the test's upstream resolver says where it is.
const loadHost = "api.example.test"

// holdReport is what `hold` prints once every connection has had its answer.
type holdReport struct {
	Opened      int            `json:"opened"`       // TLS connections established, answered once, and held
	OK          int            `json:"ok"`           // second requests, sent at once, answered 200 with the upstream's body
	Errors      map[string]int `json:"errors"`       // failures, by phase and reason
	OpenSeconds float64        `json:"open_seconds"` // time to open all connections
	ReqSeconds  float64        `json:"req_seconds"`  // time for all requests, sent at once
	Requests    int            `json:"requests"`     // every request answered 200: first, keep-alive and burst
}

// soakReport is what `soak` prints at its end: per kind of traffic, what went as expected and
// what did not.
type soakReport struct {
	OK       map[string]int `json:"ok"`
	Errors   map[string]int `json:"errors"`
	Upstream int            `json:"upstream"` // requests that should have reached the upstream
}

// loadAgent is the load generator. Modes:
//
//	hold N DIALERS   open N TLS connections to loadHost (DIALERS at a time), each with one
//	                 request (and one every holdKeepAlive while it waits), hold them all and
//	                 print "opened N"; wait for a line on stdin, then send one more request
//	                 on each, all at once; print a holdReport; wait for a line on stdin, then
//	                 close everything and exit
//	soak DURATION    run the mixed load of TestSoak for DURATION and print a soakReport
func loadAgent(args []string) int {
	fail := func(err error) int { fmt.Fprintln(os.Stderr, "load agent:", err); return 1 }
	if len(args) == 0 {
		return fail(errors.New("no mode"))
	}
	ip, err := resolveLoadHost()
	if err != nil {
		return fail(err)
	}
	switch args[0] {
	case "hold":
		if len(args) != 3 {
			return fail(errors.New("usage: hold N DIALERS"))
		}
		n, err1 := strconv.Atoi(args[1])
		dialers, err2 := strconv.Atoi(args[2])
		if err := errors.Join(err1, err2); err != nil || n <= 0 || dialers <= 0 {
			return fail(fmt.Errorf("hold %s %s: %v", args[1], args[2], err))
		}
		return holdConns(ip, n, dialers)
	case "soak":
		if len(args) != 2 {
			return fail(errors.New("usage: soak DURATION"))
		}
		d, err := time.ParseDuration(args[1])
		if err != nil {
			return fail(err)
		}
		rep := soak(ip, d)
		if err := json.NewEncoder(os.Stdout).Encode(rep); err != nil {
			return fail(err)
		}
		return 0
	}
	return fail(fmt.Errorf("unknown mode %q", args[0]))
}

// resolveLoadHost asks the agent's resolver (steered to wirken's) where loadHost is: the proxy
// serves only names the agent resolved.
func resolveLoadHost() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	addrs, err := (&net.Resolver{PreferGo: true}).LookupHost(ctx, loadHost)
	if err != nil {
		return "", fmt.Errorf("resolving %s: %w", loadHost, err)
	}
	return addrs[0], nil
}

// errClass names an error briefly, for counting.
func errClass(phase string, err error) string {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return phase + ": timeout"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return phase + ": EOF"
	}
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		s = s[i+2:]
	}
	return phase + ": " + s
}

type tally struct {
	mu sync.Mutex
	m  map[string]int
}

func (t *tally) add(k string) {
	t.mu.Lock()
	if t.m == nil {
		t.m = map[string]int{}
	}
	t.m[k]++
	t.mu.Unlock()
}

func (t *tally) snapshot() map[string]int {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := map[string]int{}
	for k, v := range t.m {
		out[k] = v
	}
	return out
}

// holdKeepAlive is how often a held connection that waits for the burst sends a request, so
// that the proxy's idle timeout (90 s) does not close it while the others are still being
// opened (which takes longer than that on a busy or emulated machine).
const holdKeepAlive = 30 * time.Second

func holdConns(ip string, n, dialers int) int {
	var errs tally
	var requests, opened, burstOK atomic.Int64
	sem := make(chan struct{}, dialers)
	var openWG, burstWG, doneWG sync.WaitGroup
	goCh, closeCh := make(chan struct{}), make(chan struct{})
	start := time.Now()
	for range n {
		sem <- struct{}{}
		openWG.Add(1)
		doneWG.Add(1)
		go func() {
			defer doneWG.Done()
			c, ok := openConn(ip, &errs, &requests)
			<-sem
			if ok {
				opened.Add(1)
				burstWG.Add(1) // before openWG lets the burst begin
			}
			openWG.Done()
			if !ok {
				return
			}
			defer func() { <-closeCh; c.Close() }()
			defer burstWG.Done()
			for {
				select {
				case <-goCh:
					if exchange(c, &errs, "burst") {
						requests.Add(1)
						burstOK.Add(1)
					}
					return
				case <-time.After(holdKeepAlive):
					if !exchange(c, &errs, "keep-alive") {
						return
					}
					requests.Add(1)
				}
			}
		}()
	}
	openWG.Wait()
	rep := holdReport{OpenSeconds: time.Since(start).Seconds(), Opened: int(opened.Load())}
	// The test measures the daemon with all of them held, then says go.
	in := bufio.NewReader(os.Stdin)
	fmt.Printf("opened %d\n", rep.Opened)
	if _, err := in.ReadString('\n'); err != nil {
		fmt.Fprintln(os.Stderr, "load agent: waiting for go:", err)
		return 1
	}
	// Every connection is open and idle (kept alive): now one more request on each, all at
	// once.
	start = time.Now()
	close(goCh)
	burstWG.Wait()
	rep.ReqSeconds, rep.OK, rep.Errors, rep.Requests = time.Since(start).Seconds(), int(burstOK.Load()), errs.snapshot(), int(requests.Load())
	if err := json.NewEncoder(os.Stdout).Encode(rep); err != nil {
		fmt.Fprintln(os.Stderr, "load agent:", err)
		return 1
	}
	// Held until the test has measured the daemon.
	in.ReadString('\n')
	close(closeCh)
	doneWG.Wait()
	return 0
}

// openConn opens one TLS connection to ip:443 for loadHost and sends its first request at
// once: the proxy gives a new connection HeaderTimeout (30 s) to send it, as any client would.
func openConn(ip string, errs *tally, requests *atomic.Int64) (*tls.Conn, bool) {
	d := net.Dialer{Timeout: 60 * time.Second}
	raw, err := d.Dial("tcp", net.JoinHostPort(ip, "443"))
	if err != nil {
		errs.add(errClass("dial", err))
		return nil, false
	}
	c := tls.Client(raw, &tls.Config{ServerName: loadHost, NextProtos: []string{"http/1.1"}})
	c.SetDeadline(time.Now().Add(60 * time.Second))
	if err := c.Handshake(); err != nil {
		errs.add(errClass("handshake", err))
		raw.Close()
		return nil, false
	}
	if !exchange(c, errs, "first") {
		c.Close()
		return nil, false
	}
	requests.Add(1)
	return c, true
}

// exchange sends one GET /echo on c and reads the answer, which must be the upstream's 200.
func exchange(c *tls.Conn, errs *tally, phase string) bool {
	c.SetDeadline(time.Now().Add(5 * time.Minute))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, "GET /echo HTTP/1.1\r\nHost: "+loadHost+"\r\nUser-Agent: wirken-load\r\n\r\n"); err != nil {
		errs.add(errClass(phase+" write", err))
		return false
	}
	// Nothing is pipelined, so nothing is lost with the reader.
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		errs.add(errClass(phase+" read", err))
		return false
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	switch {
	case err != nil:
		errs.add(errClass(phase+" body", err))
	case resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"path":"/echo"`):
		errs.add(fmt.Sprintf("%s answer: status %d", phase, resp.StatusCode))
	default:
		return true
	}
	return false
}

// soak runs the mixed load until d has passed: keep-alive requests over HTTP/1.1 and h2, a
// new connection per request, requests refused by the rule's paths, connections to a host
// with no rule, DNS queries (allowed and refused names), and streamed responses.
func soak(ip string, d time.Duration) soakReport {
	var ok, errs tally
	var upstream atomic.Int64
	deadline := time.Now().Add(d)
	dial := func(ctx context.Context, network, _ string) (net.Conn, error) {
		var dd net.Dialer
		return dd.DialContext(ctx, network, net.JoinHostPort(ip, "443"))
	}
	client := func(h2, keepAlive bool) *http.Client {
		return &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{
			DialContext: dial, ForceAttemptHTTP2: h2, DisableKeepAlives: !keepAlive, MaxIdleConnsPerHost: 2,
			TLSClientConfig: &tls.Config{ServerName: loadHost},
		}}
	}
	get := func(kind string, c *http.Client, path string, want int, upstreamGets bool) {
		resp, err := c.Get("https://" + loadHost + path)
		if err != nil {
			errs.add(kind + ": " + errClass("get", err))
			return
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		switch {
		case err != nil:
			errs.add(kind + ": " + errClass("body", err))
		case resp.StatusCode != want:
			errs.add(fmt.Sprintf("%s: status %d", kind, resp.StatusCode))
		case kind == "stream" && n != streamChunks*int64(len(streamChunk)):
			errs.add(fmt.Sprintf("stream: %d bytes", n))
		default:
			ok.add(kind)
		}
		if upstreamGets && err == nil && resp.StatusCode == want {
			upstream.Add(1)
		}
	}
	h1KeepAlive, h2KeepAlive, newConn := client(false, true), client(true, true), client(false, false)
	workers := []struct {
		kind  string
		pause time.Duration
		run   func()
	}{
		{"keepalive-h1", 10 * time.Millisecond, func() { get("keepalive-h1", h1KeepAlive, "/echo", 200, true) }},
		{"keepalive-h2", 10 * time.Millisecond, func() { get("keepalive-h2", h2KeepAlive, "/echo", 200, true) }},
		{"newconn", 30 * time.Millisecond, func() { get("newconn", newConn, "/echo", 200, true) }},
		{"stream", 0, func() { get("stream", h1KeepAlive, "/echo/stream", 200, true) }},
		{"denied-path", 50 * time.Millisecond, func() { get("denied-path", h1KeepAlive, "/admin", 403, false) }},
		{"denied-host", 100 * time.Millisecond, func() {
			// 127.0.0.3 has no rule: the proxy refuses the connection before any TLS.
			c, err := tls.DialWithDialer(&net.Dialer{Timeout: 20 * time.Second}, "tcp", "127.0.0.3:443", &tls.Config{ServerName: "evil.example.test"})
			if err == nil {
				c.Close()
				errs.add("denied-host: connected")
				return
			}
			ok.add("denied-host")
		}},
		{"dns", 20 * time.Millisecond, func() {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			r := &net.Resolver{PreferGo: true}
			if addrs, err := r.LookupHost(ctx, loadHost); err != nil || len(addrs) == 0 || addrs[0] != ip {
				errs.add(fmt.Sprintf("dns: %v %v", addrs, err))
				return
			}
			if _, err := r.LookupHost(ctx, "not-in-policy.example.test"); err == nil {
				errs.add("dns: a name with no rule resolved")
				return
			}
			ok.add("dns")
		}},
	}
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				w.run()
				time.Sleep(w.pause)
			}
		}()
	}
	wg.Wait()
	for _, c := range []*http.Client{h1KeepAlive, h2KeepAlive, newConn} {
		c.CloseIdleConnections()
	}
	return soakReport{OK: ok.snapshot(), Errors: errs.snapshot(), Upstream: int(upstream.Load())}
}

// The streamed answer: streamChunks chunks of streamChunk, each flushed after a pause.
const (
	streamChunks = 20
	streamPause  = 50 * time.Millisecond
)

var streamChunk = "data: " + strings.Repeat("x", 58) + "\n\n"
