package mitm

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wirken/wirken/internal/fuzzseed"
	"github.com/wirken/wirken/policy"
)

// upstream starts a TLS server for api.example.test (certificate from the harness's upstream
// CA) that offers h2 when h2 is set, and steers the harness's agent to it.
func (h *harness) upstream(t testing.TB, h2 bool, fn http.HandlerFunc) *httptest.Server {
	t.Helper()
	up := httptest.NewUnstartedServer(fn)
	up.EnableHTTP2 = h2
	up.StartTLS()
	t.Cleanup(up.Close)
	leaf, err := h.upCA.Leaf("api.example.test")
	if err != nil {
		t.Fatal(err)
	}
	up.TLS.Certificates = []tls.Certificate{*leaf}
	h.steer.setDst(netip.MustParseAddrPort(up.Listener.Addr().String()))
	return up
}

// h2client is an agent client that offers h2 and http/1.1, as curl and Go do.
func (h *harness) h2client() *http.Client {
	c := h.client("api.example.test")
	tr := c.Transport.(*http.Transport)
	tr.ForceAttemptHTTP2 = true
	return c
}

func TestHTTP2NegotiatedOnEachSide(t *testing.T) {
	for _, tc := range []struct {
		name              string
		agentH2, upH2     bool
		wantAgent, wantUp int
	}{
		{"h2 agent, h2 upstream", true, true, 2, 2},
		{"h2 agent, http/1.1 upstream", true, false, 2, 1},
		{"http/1.1 agent, h2 upstream", false, true, 1, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			var upProto atomic.Int32
			var auth atomic.Value
			h.upstream(t, tc.upH2, func(w http.ResponseWriter, r *http.Request) {
				upProto.Store(int32(r.ProtoMajor))
				auth.Store(r.Header.Get("Authorization"))
				fmt.Fprint(w, "ok")
			})
			c := h.client("api.example.test")
			if tc.agentH2 {
				c = h.h2client()
			}
			resp, err := c.Get("https://api.example.test/v1/x")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(body) != "ok" {
				t.Fatalf("got %d %q", resp.StatusCode, body)
			}
			if resp.ProtoMajor != tc.wantAgent || int(upProto.Load()) != tc.wantUp {
				t.Fatalf("agent side HTTP/%d, upstream side HTTP/%d; want %d and %d", resp.ProtoMajor, upProto.Load(), tc.wantAgent, tc.wantUp)
			}
			if auth.Load() != "Bearer "+h.canary {
				t.Fatal("credential not injected")
			}
		})
	}
}

// TestHTTP2FullDuplexWithTrailers is what a gRPC bidirectional stream needs: each message the
// agent sends is answered before it sends the next, over one h2 stream, and the response
// trailers arrive.
func TestHTTP2FullDuplexWithTrailers(t *testing.T) {
	h := newHarness(t)
	var up atomic.Int32
	h.upstream(t, true, func(w http.ResponseWriter, r *http.Request) {
		up.Store(int32(r.ProtoMajor))
		w.Header().Set("Trailer", "Grpc-Status")
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		br := bufio.NewReader(r.Body)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				break
			}
			fmt.Fprintf(w, "echo %s", line)
			w.(http.Flusher).Flush()
		}
		w.Header().Set("Grpc-Status", "0")
	})
	pr, pw := io.Pipe()
	req, _ := http.NewRequest(http.MethodPost, "https://api.example.test/v1/stream", pr)
	resp, err := h.h2client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 || up.Load() != 2 {
		t.Fatalf("agent HTTP/%d upstream HTTP/%d; want h2 on both", resp.ProtoMajor, up.Load())
	}
	br := bufio.NewReader(resp.Body)
	for i := range 5 {
		fmt.Fprintf(pw, "msg %d\n", i)
		line, err := br.ReadString('\n')
		if err != nil || line != fmt.Sprintf("echo msg %d\n", i) {
			t.Fatalf("message %d: got %q %v", i, line, err)
		}
	}
	pw.Close()
	if rest, _ := io.ReadAll(br); len(rest) != 0 {
		t.Fatalf("unexpected %q", rest)
	}
	if got := resp.Trailer.Get("Grpc-Status"); got != "0" {
		t.Fatalf("trailer Grpc-Status %q; want 0", got)
	}
}

// TestSSEIsNotBuffered: the upstream sends the next event only once the agent has received the
// previous one, so a proxy that held events back would stall the stream.
func TestSSEIsNotBuffered(t *testing.T) {
	for _, agentH2 := range []bool{false, true} {
		t.Run(fmt.Sprintf("agent h2=%v", agentH2), func(t *testing.T) {
			h := newHarness(t)
			ack := make(chan struct{})
			var stalled atomic.Int32
			h.upstream(t, true, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/event-stream")
				for i := range 5 {
					fmt.Fprintf(w, "data: %d\n\n", i)
					w.(http.Flusher).Flush()
					select {
					case <-ack:
					case <-time.After(5 * time.Second):
						stalled.Store(int32(i) + 1)
						return
					}
				}
			})
			c := h.client("api.example.test")
			if agentH2 {
				c = h.h2client()
			}
			resp, err := c.Get("https://api.example.test/v1/events")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			br := bufio.NewReader(resp.Body)
			for i := range 5 {
				line, err := br.ReadString('\n')
				if err != nil || line != fmt.Sprintf("data: %d\n", i) {
					t.Fatalf("event %d: %q %v", i, line, err)
				}
				br.ReadString('\n')
				if s := stalled.Load(); s != 0 {
					t.Fatalf("event %d was held back by the proxy until the upstream gave up", s-1)
				}
				ack <- struct{}{}
			}
		})
	}
}

func TestWebSocketThroughProxy(t *testing.T) {
	h := newHarness(t)
	var auth atomic.Value
	h.upstream(t, true, func(w http.ResponseWriter, r *http.Request) {
		auth.Store(r.Header.Get("Authorization"))
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		// Echo each text frame back, as a byte stream.
		nc := websocket.NetConn(r.Context(), c, websocket.MessageText)
		defer nc.Close()
		io.Copy(nc, nc)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "wss://api.example.test/v1/ws", &websocket.DialOptions{
		HTTPClient: h.client("api.example.test"),
		HTTPHeader: http.Header{"Authorization": {"Bearer agent-dummy"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	for i := range 3 {
		msg := fmt.Sprintf("frame %d", i)
		if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		_, got, err := c.Read(ctx)
		if err != nil || string(got) != msg {
			t.Fatalf("got %q %v", got, err)
		}
	}
	c.Close(websocket.StatusNormalClosure, "")
	if auth.Load() != "Bearer "+h.canary {
		t.Fatalf("upgrade request carried %q upstream; want the injected credential", auth.Load())
	}
}

func TestRedirectsAreReturnedNotFollowed(t *testing.T) {
	h := newHarness(t)
	var hits atomic.Int32
	h.upstream(t, true, func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		http.Redirect(w, r, "https://elsewhere.example.test/steal", http.StatusFound)
	})
	c := h.client("api.example.test")
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := c.Get("https://api.example.test/v1/x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "https://elsewhere.example.test/steal" || hits.Load() != 1 {
		t.Fatalf("got %d Location %q after %d upstream requests", resp.StatusCode, resp.Header.Get("Location"), hits.Load())
	}
}

func TestHopByHopAndConnectionClose(t *testing.T) {
	h := newHarness(t)
	var mu sync.Mutex
	conns := map[string]bool{} // upstream connections, by the proxy's address on them
	var asked atomic.Int32     // upstream requests that asked to close their connection
	var seen atomic.Value
	h.upstream(t, false, func(w http.ResponseWriter, r *http.Request) {
		seen.Store(r.Header.Clone())
		mu.Lock()
		conns[r.RemoteAddr] = true
		mu.Unlock()
		if r.Close {
			asked.Add(1)
		}
		fmt.Fprint(w, "ok")
	})
	// Four agent connections, each asking to close after its one request.
	const agents = 4
	for range agents {
		c := h.dialTLS(t)
		fmt.Fprint(c, "GET /v1/x HTTP/1.1\r\nHost: api.example.test\r\nConnection: close, X-Private\r\nX-Private: 1\r\nKeep-Alive: timeout=5\r\nProxy-Authorization: Basic eDp5\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%v %v", resp, err)
		}
		resp.Body.Close()
	}
	mu.Lock()
	n := len(conns)
	mu.Unlock()
	// The transport hands a connection back to its pool just after the body ends, so a quick
	// next request may still open a second one; a propagated close would open one each.
	if asked.Load() != 0 || n >= agents {
		t.Fatalf("%d upstream requests asked to close; the upstream saw %d connections for %d agent connections that each sent Connection: close", asked.Load(), n, agents)
	}
	hdr := seen.Load().(http.Header)
	for _, k := range []string{"X-Private", "Keep-Alive", "Proxy-Authorization", "Connection"} {
		if hdr.Get(k) != "" {
			t.Errorf("hop-by-hop header %s reached the upstream", k)
		}
	}
}

// rawExchange sends one raw request on a new intercepted connection and returns the response.
func (h *harness) rawExchange(t *testing.T, raw string) (*http.Response, string) {
	t.Helper()
	c := h.dialTLS(t)
	fmt.Fprint(c, raw)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

func TestOtherHostsAndLoopsAreRefused(t *testing.T) {
	h := newHarness(t)
	for _, tc := range []struct {
		name, raw string
		status    int
	}{
		{"absolute-form to another host", "GET https://evil.example.test/v1/x HTTP/1.1\r\nHost: api.example.test\r\n\r\n", 403},
		{"CONNECT to another host", "CONNECT evil.example.test:443 HTTP/1.1\r\nHost: evil.example.test:443\r\n\r\n", 403},
		{"CONNECT to the same host", "CONNECT api.example.test:443 HTTP/1.1\r\nHost: api.example.test:443\r\n\r\n", 403},
		{"request that already went through wirken", "GET /v1/x HTTP/1.1\r\nHost: api.example.test\r\nVia: " + h.proxy.via + "\r\n\r\n", 508},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(h.auth())
			resp, body := h.rawExchange(t, tc.raw)
			if resp.StatusCode != tc.status || !strings.HasPrefix(body, "wirken: ") {
				t.Fatalf("got %d %q; want %d", resp.StatusCode, body, tc.status)
			}
			if len(h.auth()) != before {
				t.Fatal("the request reached the upstream")
			}
		})
	}
	if !strings.Contains(strings.Join(h.rec.kinds(), ","), "request.deny") {
		t.Fatal("refusals not recorded")
	}
	if strings.Contains(fmt.Sprintf("%+v", h.rec.events), h.canary) {
		t.Fatal("secret in audit events")
	}

	t.Run("destination is wirken's own listener", func(t *testing.T) {
		h.steer.setDst(netip.MustParseAddrPort(h.proxyAddr))
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(h.ca.CertPEM())
		if c, err := tls.Dial("tcp", h.proxyAddr, &tls.Config{ServerName: "api.example.test", RootCAs: roots}); err == nil {
			c.Close()
			t.Fatal("a connection steered to the proxy itself was served")
		}
		h.rec.mu.Lock()
		last := h.rec.events[len(h.rec.events)-1]
		h.rec.mu.Unlock()
		if last.Kind != "conn.deny" || !strings.Contains(last.Reason, "loop") {
			t.Fatalf("last event %+v; want a conn.deny for a loop", last)
		}
	})

	// A passthrough rule naming loopback does not make wirken's own listeners (the proxy's,
	// the resolver's) reachable: the loop check comes first.
	t.Run("own listeners despite a loopback passthrough rule", func(t *testing.T) {
		resolverAt := netip.MustParseAddrPort("127.0.0.1:1")
		lh := newHarness(t, func(c *Config) {
			c.Policy = &ipPolicy{fakePolicy: *c.Policy.(*fakePolicy), addr: "127.0.0.1"}
			c.Own = []netip.AddrPort{resolverAt}
		})
		for _, dst := range []netip.AddrPort{netip.MustParseAddrPort(lh.proxyAddr), resolverAt} {
			lh.steer.setDst(dst)
			if c, err := net.Dial("tcp", lh.proxyAddr); err == nil { // or reset at once
				c.SetDeadline(time.Now().Add(3 * time.Second))
				if n, err := c.Read(make([]byte, 1)); err == nil {
					t.Fatalf("%s: a connection to wirken's own listener was served (%d bytes)", dst, n)
				}
				c.Close()
			}
			lh.rec.mu.Lock()
			last := lh.rec.events[len(lh.rec.events)-1]
			lh.rec.mu.Unlock()
			if last.Kind != "conn.deny" || !strings.Contains(last.Reason, "loop") || last.Dst != dst {
				t.Fatalf("%s: last event %+v; want a conn.deny for a loop", dst, last)
			}
		}
	})
}

func TestStatusOf(t *testing.T) {
	for err, want := range map[error]int{
		fmt.Errorf("rule r1: %w", ErrLimited): 429,
		ErrAuditUnavailable:                   503,
		fmt.Errorf("x: %w", ErrUpstream):      502,
		ErrBadRequest:                         400,
		ErrLoop:                               508,
		fmt.Errorf("path not allowed"):        403,
	} {
		if got := statusOf(err); got != want {
			t.Errorf("statusOf(%v) = %d; want %d", err, got, want)
		}
	}
}

func TestConflictingFramingIsRefused(t *testing.T) {
	h := newHarness(t)
	c := h.dialTLS(t)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	// Requests with bodies framed both ways keep the scan in step on a kept-alive connection.
	for _, raw := range []string{
		"POST /v1/a HTTP/1.1\r\nHost: api.example.test\r\nContent-Length: 5\r\n\r\nhello",
		"POST /v1/b HTTP/1.1\r\nHost: api.example.test\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n",
		"GET /v1/c HTTP/1.1\r\nHost: api.example.test\r\n\r\n",
		// An upgrade that is refused: the connection goes on, and so does the scan.
		"GET /admin HTTP/1.1\r\nHost: api.example.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
	} {
		fmt.Fprint(c, raw)
		resp, err := http.ReadResponse(br, nil)
		if want := map[bool]int{true: 403, false: 200}[strings.Contains(raw, "/admin")]; err != nil || resp.StatusCode != want {
			t.Fatalf("%q: %v %v", raw[:12], resp, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	before := len(h.auth())
	fmt.Fprint(c, "POST /v1/d HTTP/1.1\r\nHost: api.example.test\r\nContent-Length: 30\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /v1/smuggled HTTP/1.1\r\nHost: api.example.test\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 400 || !strings.Contains(string(body), "Content-Length and Transfer-Encoding") || !resp.Close {
		t.Fatalf("got %d %q close=%v; want 400 and the connection closed", resp.StatusCode, body, resp.Close)
	}
	if len(h.auth()) != before {
		t.Fatal("the ambiguous request (or what it smuggled) reached the upstream")
	}
	// The request it hides is recorded as unserved when the connection closes (unserved.go).
	h.rec.mu.Lock()
	defer h.rec.mu.Unlock()
	for _, ev := range h.rec.events {
		if ev.Kind == "request.deny" && ev.Path == "/v1/d" {
			return
		}
	}
	t.Fatalf("events %+v; want the refusal of /v1/d", h.rec.events)
}

func TestFramingScanPipelined(t *testing.T) {
	in := "POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc" +
		"\r\nPOST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n1\r\nx\r\n0\r\n\r\n" +
		"GET /c HTTP/1.1\r\nHost: x\r\n\r\n"
	// Fed in every split, the scan finds the same three requests, the second ambiguous.
	for cut := range len(in) {
		fc := &framingConn{}
		fc.scan([]byte(in[:cut]))
		fc.scan([]byte(in[cut:]))
		got := []bool{fc.next(), fc.next(), fc.next()}
		if fmt.Sprint(got) != "[false true false]" || len(fc.conflict) != 0 || fc.state != fsHeader {
			t.Fatalf("cut %d: %v (left %v, state %d)", cut, got, fc.conflict, fc.state)
		}
	}
}

func TestUpstreamTLSSessionsAreResumed(t *testing.T) {
	h := newHarness(t)
	var resumed []bool
	var mu sync.Mutex
	h.upstream(t, true, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		resumed = append(resumed, r.TLS.DidResume)
		mu.Unlock()
	})
	c := h.client("api.example.test")
	for range 2 {
		if code, _, _, err := get(t, c, "https://api.example.test/v1/x", nil); err != nil || code != 200 {
			t.Fatalf("%d %v", code, err)
		}
		h.proxy.CloseIdle() // the next request needs a new upstream connection
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(resumed) != "[false true]" {
		t.Fatalf("upstream handshakes resumed: %v; want the second one resumed", resumed)
	}
}

func TestPlainHTTPIsBoundToTheDestination(t *testing.T) {
	h := newHarness(t)
	var hits atomic.Int32
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		fmt.Fprintf(w, "plain %s auth=%q", r.URL.Path, r.Header.Get("Authorization"))
	}))
	t.Cleanup(up.Close)
	dst := netip.MustParseAddrPort(up.Listener.Addr().String())
	h.steer.setDst(dst)
	port := fmt.Sprint(dst.Port())
	exchange := func(raw string) (int, string) {
		t.Helper()
		c, err := net.Dial("tcp", h.proxyAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprint(c, raw)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	// localhost is an address of the destination (127.0.0.1): served, with no credential.
	if code, body := exchange("GET /plain/x HTTP/1.1\r\nHost: localhost:" + port + "\r\n\r\n"); code != 200 || body != `plain /plain/x auth=""` {
		t.Fatalf("got %d %q", code, body)
	}
	// The credentialed host over plain HTTP, and a name the destination is not an address of,
	// are refused before anything is sent.
	for _, raw := range []string{
		"GET /v1/x HTTP/1.1\r\nHost: api.example.test:" + port + "\r\n\r\n",
		"GET /plain/x HTTP/1.1\r\nHost: localhost:1\r\n\r\n",
	} {
		if code, body := exchange(raw); code != 403 || !strings.HasPrefix(body, "wirken: ") {
			t.Fatalf("%q: got %d %q", raw, code, body)
		}
	}
	// localhost toward an address that is not localhost's.
	h.steer.setDst(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), dst.Port()))
	if code, body := exchange("GET /plain/x HTTP/1.1\r\nHost: localhost:" + port + "\r\n\r\n"); code != 403 || !strings.Contains(body, "not an address of localhost") {
		t.Fatalf("Host bound to another address: got %d %q", code, body)
	}
	if hits.Load() != 1 {
		t.Fatalf("the upstream got %d requests; want only the allowed one", hits.Load())
	}
	h.rec.mu.Lock()
	defer h.rec.mu.Unlock()
	if u := h.rec.events[0].URL; u != "http://localhost:"+port+"/plain/x" {
		t.Fatalf("audited URL %q; want the plain http one", u)
	}
}

// ipPolicy adds a passthrough rule for one address to the fake policy.
type ipPolicy struct {
	fakePolicy
	addr string
}

func (p *ipPolicy) Decide(agent, host string, port uint16) policy.Decision {
	if host == p.addr {
		return policy.Decision{Mode: policy.Passthrough, Rule: "raw"}
	}
	return p.fakePolicy.Decide(agent, host, port)
}

func TestOtherTCPOnlyByPassthroughRule(t *testing.T) {
	// A server that speaks first, as SMTP or MySQL do, then echoes.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() { // one connection: only the one with a rule gets here
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		fmt.Fprint(c, "220 ready\n")
		io.Copy(c, c)
	}()
	dst := netip.MustParseAddrPort(ln.Addr().String())
	talk := func(h *harness) (string, error) {
		h.steer.setDst(dst)
		c, err := net.Dial("tcp", h.proxyAddr)
		if err != nil {
			return "", err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(3 * time.Second))
		br := bufio.NewReader(c)
		banner, err := br.ReadString('\n')
		if err != nil {
			return "", err
		}
		fmt.Fprint(c, "PING\n")
		echo, err := br.ReadString('\n')
		return banner + echo, err
	}

	with := newHarness(t, func(c *Config) { c.Policy = &ipPolicy{fakePolicy: *c.Policy.(*fakePolicy), addr: "127.0.0.1"} })
	if got, err := talk(with); err != nil || got != "220 ready\nPING\n" {
		t.Fatalf("with a passthrough rule for the address: %q %v", got, err)
	}
	with.rec.mu.Lock()
	spliced := slices.ContainsFunc(with.rec.events, func(e Event) bool {
		return e.Kind == "conn.passthrough" && e.Dst == dst && e.Rule == "raw"
	})
	with.rec.mu.Unlock()
	if !spliced {
		t.Fatalf("events %v; want a conn.passthrough to the loopback service %s", with.rec.kinds(), dst)
	}

	without := newHarness(t, func(c *Config) { c.PeekTimeout = 300 * time.Millisecond })
	if got, err := talk(without); err == nil {
		t.Fatalf("without a rule the connection was served: %q", got)
	}
	if k := without.rec.kinds(); len(k) == 0 || k[len(k)-1] != "conn.deny" {
		t.Fatalf("events %v; want a conn.deny", k)
	}
}

// FuzzFramingScan: however the bytes are split across reads, the scan finds the same
// requests and ends in the same state, and it never holds more than one bounded line.
func FuzzFramingScan(f *testing.F) {
	seeds := fuzzseed.New(f)
	seeds.Add([]byte("POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\n\r\n"), 7)
	seeds.Add([]byte("POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n1;e\r\nx\r\n0\r\nT: 1\r\n\r\n"), 30)
	seeds.Add([]byte("GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n\x81\x05hello"), 12)
	f.Fuzz(func(t *testing.T, data []byte, cut int) {
		if cut < 0 || cut > len(data) {
			cut = len(data) / 2
		}
		whole, split := &framingConn{}, &framingConn{}
		whole.scan(data)
		split.scan(data[:cut])
		split.scan(data[cut:])
		if fmt.Sprint(whole.conflict) != fmt.Sprint(split.conflict) || whole.state != split.state || whole.n != split.n {
			t.Fatalf("one read: %v state %d n %d; split at %d: %v state %d n %d",
				whole.conflict, whole.state, whole.n, cut, split.conflict, split.state, split.n)
		}
		if len(whole.line) > maxFramingLine {
			t.Fatalf("holds a %d-byte line", len(whole.line))
		}
	})
}

// A short first message that is neither TLS nor HTTP is refused at once, not after the peek
// timeout (which here is longer than the test waits).
func TestShortFirstMessageIsNotHeld(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.PeekTimeout = time.Minute })
	c, err := net.Dial("tcp", h.proxyAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprint(c, "PING\n")
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = c.Read(make([]byte, 1))
	if err == nil || strings.Contains(err.Error(), "timeout") {
		t.Fatalf("read after a short non-HTTP message: %v; want the connection refused", err)
	}
}

// A CONNECT the agent sends on an h2 stream is refused and recorded like any request, and
// the h2 connection goes on serving.
func TestHTTP2ConnectIsRefused(t *testing.T) {
	h := newHarness(t)
	h.upstream(t, true, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") })
	c := h.h2client()
	req, _ := http.NewRequest(http.MethodConnect, "https://api.example.test", nil)
	req.Host = "evil.example.test:443"
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusForbidden || !strings.HasPrefix(string(body), "wirken: ") {
		t.Fatalf("CONNECT over HTTP/%d: %d %q; want 403 from wirken", resp.ProtoMajor, resp.StatusCode, body)
	}
	if k := h.rec.kinds(); len(k) == 0 || k[len(k)-1] != "request.deny" {
		t.Fatalf("events %v; want the CONNECT recorded as a request.deny", k)
	}
	if code, _, body, err := get(t, c, "https://api.example.test/v1/x", nil); err != nil || code != 200 || body != "ok" {
		t.Fatalf("after the refused CONNECT: %d %q %v", code, body, err)
	}
}

// Only WebSocket upgrades are relayed; another Upgrade offer (h2c) reaches the upstream as a
// plain request, so the connection never switches to a protocol nothing relays.
func TestOnlyWebSocketUpgradesAreOffered(t *testing.T) {
	h := newHarness(t)
	var upgrade atomic.Value
	h.upstream(t, false, func(w http.ResponseWriter, r *http.Request) {
		upgrade.Store(r.Header.Get("Upgrade") + "|" + r.Header.Get("Connection"))
		fmt.Fprint(w, "plain")
	})
	resp, body := h.rawExchange(t, "GET /v1/x HTTP/1.1\r\nHost: api.example.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n")
	if resp.StatusCode != 200 || body != "plain" {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	if got, _ := upgrade.Load().(string); got != "|" {
		t.Fatalf("the upstream saw Upgrade|Connection %q; want neither", got)
	}
}

// fakeAddresses answers lookups from a map and records the names asked.
type fakeAddresses struct {
	mu    sync.Mutex
	addrs map[string][]netip.Addr
	asked []string
}

func (f *fakeAddresses) LookupNetIP(_ context.Context, host string) ([]netip.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked = append(f.asked, host)
	if a, ok := f.addrs[host]; ok {
		return a, nil
	}
	return nil, fmt.Errorf("no such host %s", host)
}

// With Config.Addresses, the proxy asks it (the daemon's resolver upstreams), not the system
// resolver, whether the destination is an address of the plain-HTTP Host.
func TestPlainHTTPLooksUpThroughAddresses(t *testing.T) {
	look := &fakeAddresses{addrs: map[string][]netip.Addr{"localhost": {netip.MustParseAddr("127.0.0.2")}}}
	h := newHarness(t, func(c *Config) { c.Addresses = look })
	var hits atomic.Int32
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	t.Cleanup(up.Close)
	dst := netip.MustParseAddrPort(up.Listener.Addr().String()) // 127.0.0.1, localhost by /etc/hosts
	h.steer.setDst(dst)
	c, err := net.Dial("tcp", h.proxyAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET /plain/x HTTP/1.1\r\nHost: localhost:%d\r\n\r\n", dst.Port())
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 403 || !strings.Contains(string(b), "not an address of localhost") || hits.Load() != 0 {
		t.Fatalf("got %d %q, upstream hits %d; want a 403: the lookup says localhost is 127.0.0.2", resp.StatusCode, b, hits.Load())
	}
	look.mu.Lock()
	defer look.mu.Unlock()
	if len(look.asked) != 1 || look.asked[0] != "localhost" {
		t.Fatalf("Addresses was asked %v; want localhost once", look.asked)
	}
}
