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
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestRequestHost(t *testing.T) {
	tests := []struct {
		in, host, port string
		ok             bool
	}{
		{"api.example.test", "api.example.test", "", true},
		{"API.Example.TEST.", "api.example.test", "", true},
		{"api.example.test:443", "api.example.test", "443", true},
		{"[::1]:8443", "::1", "8443", true},
		{"127.0.0.1", "127.0.0.1", "", true},
		{"x@api.example.test", "", "", false},
		{"api.example.test:", "", "", false},
		{"api%2eexample%2etest", "", "", false},
		{"api.example.test:44x", "", "", false},
		{"", "", "", false},
		{"a..b", "", "", false},
		{"[fe80::1%eth0]", "", "", false},
		{"api.example.test/x", "", "", false},
	}
	for _, tt := range tests {
		host, port, ok := requestHost(tt.in)
		if ok != tt.ok || host != tt.host || port != tt.port {
			t.Errorf("requestHost(%q) = %q, %q, %v; want %q, %q, %v", tt.in, host, port, ok, tt.host, tt.port, tt.ok)
		}
	}
}

// dialTLS opens an intercepted connection to the harness as agent "demo" would.
func (h *harness) dialTLS(t *testing.T) *tls.Conn {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(h.ca.CertPEM())
	c, err := tls.Dial("tcp", h.proxyAddr, &tls.Config{ServerName: "api.example.test", RootCAs: roots})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestHostSentUpstreamIsTheCheckedName(t *testing.T) {
	h := newHarness(t)
	c := h.dialTLS(t)
	fmt.Fprint(c, "GET /v1/x HTTP/1.1\r\nHost: API.EXAMPLE.TEST.\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 4096)
	n, _ := c.Read(b)
	if !strings.Contains(string(b[:n]), "200 OK") {
		t.Fatalf("got %q", b[:n])
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.seenHost) != 1 || h.seenHost[0] != "api.example.test" {
		t.Fatalf("upstream saw Host %q; want the canonical name", h.seenHost)
	}
}

func TestOversizedHeaderClosesTheConnection(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxHeaderBytes = 64 << 10 })
	c := h.dialTLS(t)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	// 1 MiB of header, far over the cap: the proxy must stop reading and close.
	_, err := fmt.Fprintf(c, "GET /v1/x HTTP/1.1\r\nHost: api.example.test\r\nX-Big: %s\r\n\r\n", strings.Repeat("a", 1<<20))
	if err == nil {
		_, err = io.ReadAll(c)
	}
	if len(h.auth()) != 0 {
		t.Fatal("an oversized request reached the upstream")
	}
	if err != nil && strings.Contains(err.Error(), "timeout") {
		t.Fatalf("the proxy kept reading instead of closing: %v", err)
	}
}

func TestStalledConnectionsAreClosed(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.HeaderTimeout = 300 * time.Millisecond
		c.IdleTimeout = 300 * time.Millisecond
	})

	// One agent sends half a request line after the handshake, one goes idle after a request.
	half := h.dialTLS(t)
	fmt.Fprint(half, "GET /v1/x HT")
	idle := h.dialTLS(t)
	fmt.Fprint(idle, "GET /v1/x HTTP/1.1\r\nHost: api.example.test\r\n\r\n")

	for name, c := range map[string]net.Conn{"half a request": half, "idle keep-alive": idle} {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := io.ReadAll(c)
		if err != nil && strings.Contains(err.Error(), "timeout") {
			t.Errorf("%s: the proxy did not close the connection", name)
		}
	}
	// The proxy has closed (and stopped tracking) both agent connections.
	deadline := time.Now().Add(3 * time.Second)
	for h.proxy.openConns() > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := h.proxy.openConns(); n > 0 {
		t.Errorf("%d agent connections left open", n)
	}
}

func TestUpstreamPoolIsBounded(t *testing.T) {
	p := newPool(x509.NewCertPool(), time.Second, time.Second, 3)
	first := p.transport(poolKey{netip.MustParseAddrPort("127.0.0.1:1"), "a", true, ""})
	for i := 2; i <= 10; i++ {
		p.transport(poolKey{netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(i)), "a", true, ""})
	}
	if p.lru.Len() != 3 || len(p.m) != 3 {
		t.Fatalf("pool holds %d transports (%d keys); want 3", p.lru.Len(), len(p.m))
	}
	if again := p.transport(poolKey{netip.MustParseAddrPort("127.0.0.1:1"), "a", true, ""}); again == first {
		t.Fatal("an evicted transport came back")
	}
}

func TestShutdownWaitsForRequestsInFlight(t *testing.T) {
	h := newHarness(t)
	c := h.client("api.example.test")
	code, _, _, err := get(t, c, "https://api.example.test/v1/x", nil)
	if err != nil || code != 200 {
		t.Fatalf("%d %v", code, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	// The client keeps its connection open; Shutdown must close it when ctx ends, not hang.
	start := time.Now()
	h.proxy.Shutdown(ctx)
	if time.Since(start) > 5*time.Second {
		t.Fatal("Shutdown did not return")
	}
	if _, _, _, err := get(t, &http.Client{Timeout: time.Second, Transport: &http.Transport{DialContext: (&net.Dialer{}).DialContext}}, "http://"+h.proxyAddr+"/", nil); err == nil {
		t.Fatal("the proxy still accepts connections after Shutdown")
	}
}

// openConns is how many accepted connections the proxy still holds.
func (p *Proxy) openConns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

func TestPassthrough(t *testing.T) {
	h := newHarness(t)
	// "localhost" resolves to the upstream's address: spliced, not intercepted, so the agent
	// sees the upstream's own certificate.
	c, err := tls.Dial("tcp", h.proxyAddr, &tls.Config{ServerName: "localhost", InsecureSkipVerify: true})
	if err != nil {
		t.Fatalf("passthrough handshake: %v", err)
	}
	issuer := c.ConnectionState().PeerCertificates[0].Issuer.CommonName
	c.Close()
	if issuer != "upstream test CA" {
		t.Fatalf("passthrough connection saw a certificate from %q; want the upstream's own", issuer)
	}
	// A destination that is not an address of the name is refused: the agent may not pick
	// where a passthrough rule's bytes go. (Only /etc/hosts is consulted for "localhost".)
	h.steer.setDst(netip.MustParseAddrPort("127.0.0.2:443"))
	if c, err := tls.Dial("tcp", h.proxyAddr, &tls.Config{ServerName: "localhost", InsecureSkipVerify: true}); err == nil {
		c.Close()
		t.Fatal("passthrough to an address that is not the name's succeeded")
	}
	kinds := strings.Join(h.rec.kinds(), ",")
	if !strings.Contains(kinds, "conn.passthrough") || !strings.Contains(kinds, "conn.deny") {
		t.Fatalf("events %s; want a conn.passthrough and a conn.deny", kinds)
	}
}

// On a kept-alive connection the idle wait is long, but a header that has begun must be
// complete within the header timeout.
func TestSlowHeaderAfterIdleIsClosed(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.HeaderTimeout = 300 * time.Millisecond
		c.IdleTimeout = time.Minute
	})
	c := h.dialTLS(t)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	fmt.Fprint(c, "GET /v1/x HTTP/1.1\r\nHost: api.example.test\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("%v %v", resp, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	time.Sleep(500 * time.Millisecond) // longer than the header timeout: idle is allowed
	fmt.Fprint(c, "GET /v1/x HT")
	start := time.Now()
	_, err = io.ReadAll(br)
	if err != nil && strings.Contains(err.Error(), "timeout") {
		t.Fatal("the proxy did not close a connection whose header stalled")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("closed after %v; want about the header timeout", d)
	}
}
