package mitm

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wirken/wirken/internal/fuzzseed"
	"github.com/wirken/wirken/policy"
)

// fakeSteering pretends every accepted connection was steered from dst by agent.
type fakeSteering struct {
	agent string
	mu    sync.Mutex
	dst   netip.AddrPort
	miss  atomic.Bool
}

func (f *fakeSteering) Origin(client, local netip.AddrPort) (Origin, error) {
	if f.miss.Load() {
		return Origin{}, errors.New("no entry")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return Origin{Agent: f.agent, Dst: f.dst, PID: 42, UID: 1000}, nil
}

func (f *fakeSteering) setDst(d netip.AddrPort) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dst = d
}

// fakePolicy intercepts api.example.test for agent "demo" with credential "api" on /v1/, and
// passes nothing else.
type fakePolicy struct{ cred *policy.Credential }

func (f *fakePolicy) Decide(agent, host string, port uint16) policy.Decision {
	if agent == "demo" && host == "api.example.test" {
		return policy.Decision{Mode: policy.Intercept, Rule: "r1"}
	}
	if agent == "demo" && host == "localhost" {
		return policy.Decision{Mode: policy.Passthrough, Rule: "pt"}
	}
	return policy.Decision{Mode: policy.Deny, Reason: "no rule for " + host}
}

func (f *fakePolicy) Authorize(r policy.Request) policy.Grant {
	if r.Agent == "demo" && r.Host == "api.example.test" && strings.HasPrefix(r.Path, "/v1/") {
		return policy.Grant{Allow: true, Rule: "r1", Credential: f.cred}
	}
	if r.Agent == "demo" && r.Host == "localhost" && strings.HasPrefix(r.Path, "/plain/") {
		return policy.Grant{Allow: true, Rule: "plain"} // no credential: plain HTTP never gets one
	}
	return policy.Grant{Rule: "r1", Reason: "path " + r.Path + " is not allowed"}
}

type fakeSecrets struct{ value string }

func (f *fakeSecrets) WithSecretVersion(name, host string, fn func([]byte, int) error) error {
	if name != "api-key" || host != "api.example.test" {
		return fmt.Errorf("secret %s not bound to %s", name, host)
	}
	return fn([]byte(f.value), 7)
}

type fakeRecorder struct {
	mu      sync.Mutex
	events  []Event
	results []Result
	fail    bool
}

func (f *fakeRecorder) Deny(_ context.Context, e Event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.events = append(f.events, e)
}

func (f *fakeRecorder) Begin(ctx context.Context, e Event) (context.Context, func(Result), error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail {
		return ctx, nil, errors.New("disk full")
	}
	f.events = append(f.events, e)
	return ctx, func(r Result) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.results = append(f.results, r)
	}, nil
}

func (f *fakeRecorder) kinds() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, e := range f.events {
		out = append(out, e.Kind)
	}
	return out
}

type harness struct {
	proxy     *Proxy
	proxyAddr string
	ca        *CA
	steer     *fakeSteering
	rec       *fakeRecorder
	logs      *bytes.Buffer
	canary    string
	upCA      *CA // issues the upstreams' certificates
	mu        sync.Mutex
	seenAuth  []string
	seenHost  []string
	seenReqs  []string      // each upstream request: method, host and URL, as the upstream saw them
	seenHdrs  []http.Header // and its header
}

func (h *harness) auth() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.seenAuth...)
}

// newHarness starts an upstream and a proxy in front of it; opts change the proxy's configuration.
func newHarness(t testing.TB, opts ...func(*Config)) *harness {
	t.Helper()
	b := make([]byte, 16)
	rand.Read(b)
	h := &harness{rec: &fakeRecorder{}, logs: &bytes.Buffer{}, canary: "WKCANARY-" + hex.EncodeToString(b)}

	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		h.seenAuth = append(h.seenAuth, r.Header.Get("Authorization"))
		h.seenHost = append(h.seenHost, r.Host)
		h.seenReqs = append(h.seenReqs, r.Method+" "+r.Host+" "+r.URL.String())
		h.seenHdrs = append(h.seenHdrs, r.Header.Clone())
		h.mu.Unlock()
		fmt.Fprintf(w, "upstream %s %s", r.Host, r.URL.Path)
	}))
	up.StartTLS()
	t.Cleanup(up.Close)
	// The upstream presents a certificate for api.example.test from its own CA.
	upstreamCA := testCA(t, "upstream test CA")
	h.upCA = upstreamCA
	leaf, err := upstreamCA.Leaf("api.example.test")
	if err != nil {
		t.Fatal(err)
	}
	up.TLS.Certificates = []tls.Certificate{*leaf}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(upstreamCA.CertPEM())

	h.ca = testCA(t, "wirken test CA")
	h.steer = &fakeSteering{agent: "demo", dst: netip.MustParseAddrPort(up.Listener.Addr().String())}
	cfg := Config{
		CA:            h.ca,
		UpstreamRoots: roots,
		Steering:      h.steer,
		Policy:        &fakePolicy{cred: &policy.Credential{Name: "api", Secret: "api-key", Hosts: []string{"api.example.test"}, Header: "Authorization", Format: "Bearer {secret}"}},
		Secrets:       &fakeSecrets{value: h.canary},
		Recorder:      h.rec,
		Logger:        slog.New(slog.NewTextHandler(&lockedWriter{w: h.logs}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	for _, o := range opts {
		o(&cfg)
	}
	h.proxy, h.proxyAddr = serveProxy(t, cfg)
	return h
}

// testCA makes a throwaway CA.
func testCA(t testing.TB, name string) *CA {
	t.Helper()
	dir := t.TempDir()
	if err := GenerateCA(filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem"), name); err != nil {
		t.Fatal(err)
	}
	ca, err := LoadCA(filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// serveProxy starts a proxy on a loopback port and shuts it down when the test ends.
func serveProxy(t testing.TB, cfg Config) (*Proxy, string) {
	t.Helper()
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go p.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		p.Shutdown(ctx)
	})
	return p, ln.Addr().String()
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// client is what an agent would use: it dials the proxy (as the kernel redirect would) and
// trusts the wirken CA.
func (h *harness) client(sni string) *http.Client {
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(h.ca.CertPEM())
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "tcp", h.proxyAddr)
			},
			TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: sni},
		},
	}
}

func get(t *testing.T, c *http.Client, url string, hdr map[string]string) (int, http.Header, string, error) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b), nil
}

func TestProxy(t *testing.T) {
	h := newHarness(t)
	c := h.client("api.example.test")

	t.Run("injects the credential and replaces the agent's own", func(t *testing.T) {
		code, _, body, err := get(t, c, "https://api.example.test/v1/chat?x=1", map[string]string{"Authorization": "Bearer agent-dummy"})
		if err != nil || code != 200 || body != "upstream api.example.test /v1/chat" {
			t.Fatalf("got %d %q %v", code, body, err)
		}
		if got := h.auth(); len(got) != 1 || got[0] != "Bearer "+h.canary {
			t.Fatalf("upstream saw Authorization %q", got)
		}
		// keep-alive: a second request on the same connection works too
		if code, _, _, err := get(t, c, "https://api.example.test/v1/other", nil); err != nil || code != 200 {
			t.Fatalf("second request: %d %v", code, err)
		}
	})

	t.Run("path outside the rule is 403 with a reason and nothing upstream", func(t *testing.T) {
		before := len(h.auth())
		code, hdr, body, err := get(t, c, "https://api.example.test/admin", nil)
		if err != nil || code != 403 || !strings.HasPrefix(body, "wirken: ") || hdr.Get(RuleHeader) != "r1" {
			t.Fatalf("got %d %v %q %v", code, hdr, body, err)
		}
		if len(h.auth()) != before {
			t.Fatal("a denied request reached the upstream")
		}
	})

	t.Run("Host that differs from SNI is refused (no fronting)", func(t *testing.T) {
		before := len(h.auth())
		req, _ := http.NewRequest(http.MethodGet, "https://api.example.test/v1/x", nil)
		req.Host = "evil.example.test"
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 403 || !strings.Contains(string(body), "Host does not match") {
			t.Fatalf("got %d %q", resp.StatusCode, body)
		}
		if len(h.auth()) != before {
			t.Fatal("a fronted request reached the upstream")
		}
	})

	t.Run("SNI with no rule is reset", func(t *testing.T) {
		_, _, _, err := get(t, h.client("evil.example.test"), "https://evil.example.test/", nil)
		if err == nil {
			t.Fatal("connection to a host with no rule succeeded")
		}
	})

	t.Run("audit failure answers 503 and sends nothing", func(t *testing.T) {
		h.rec.mu.Lock()
		h.rec.fail = true
		h.rec.mu.Unlock()
		defer func() { h.rec.mu.Lock(); h.rec.fail = false; h.rec.mu.Unlock() }()
		before := len(h.auth())
		code, _, body, err := get(t, h.client("api.example.test"), "https://api.example.test/v1/chat", nil)
		if err != nil || code != 503 || body != "wirken: audit log unavailable\n" {
			t.Fatalf("got %d %q %v", code, body, err)
		}
		if len(h.auth()) != before {
			t.Fatal("a request went upstream without its audit record")
		}
	})

	t.Run("every decision is recorded", func(t *testing.T) {
		h.rec.mu.Lock()
		for _, e := range h.rec.events {
			if e.Kind == "credential.use" && e.CredVer != 7 {
				t.Errorf("credential.use event has version %d; want the vault's 7", e.CredVer)
			}
		}
		h.rec.mu.Unlock()
		got := strings.Join(h.rec.kinds(), ",")
		for _, k := range []string{"credential.use", "request.deny", "conn.deny"} {
			if !strings.Contains(got, k) {
				t.Errorf("no %s event in %s", k, got)
			}
		}
	})

	t.Run("canary never in logs or events", func(t *testing.T) {
		if h.logs.Len() == 0 {
			t.Fatal("no logs captured; the check would prove nothing")
		}
		if strings.Contains(h.logs.String(), h.canary) {
			t.Fatal("secret in proxy logs")
		}
		if strings.Contains(fmt.Sprintf("%+v", h.rec.events), h.canary) {
			t.Fatal("secret in audit events")
		}
	})
}

func TestProxyResetsUnsteered(t *testing.T) {
	h := newHarness(t)
	h.steer.miss.Store(true)
	c, err := net.Dial("tcp", h.proxyAddr)
	if err == nil {
		// The reset may arrive before or after connect() returns.
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		// The RST is reported once: by the write or by the read after it.
		if _, err = fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: api.example.test\r\n\r\n"); err == nil {
			_, err = bufio.NewReader(c).ReadByte()
		}
	}
	if err == nil || !strings.Contains(err.Error(), "reset") {
		t.Fatalf("read after a steering miss: %v; want connection reset", err)
	}
}

func TestSniff(t *testing.T) {
	tests := []struct {
		in   string
		want kind
	}{
		{"\x16\x03\x01\x00", kindTLS},
		{"GET / HTTP/1.1\r\n", kindHTTP},
		{"POST /x HTTP/1.1\r\n", kindHTTP},
		{"SSH-2.0-OpenSSH", kindOther},
		{"\x00\x01", kindOther},
		{"", kindOther},
		{"get / HTTP/1.1", kindOther},
	}
	for _, tt := range tests {
		if got := sniff(bufio.NewReader(strings.NewReader(tt.in))); got != tt.want {
			t.Errorf("sniff(%q) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

// clientHello captures the first flight a Go TLS client sends for sni.
func clientHello(t testing.TB, sni string) []byte {
	c, s := net.Pipe()
	go func() {
		tls.Client(c, &tls.Config{ServerName: sni}).Handshake()
		c.Close()
	}()
	s.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64<<10)
	n, err := s.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	return buf[:n]
}

func TestPeekClientHello(t *testing.T) {
	hello := clientHello(t, "API.Example.Test.")
	in := append(append([]byte(nil), hello...), "trailing"...)
	sni, replay, err := peekClientHello(bytes.NewReader(in))
	if err != nil || sni != "api.example.test" {
		t.Fatalf("sni %q, err %v", sni, err)
	}
	if got, _ := io.ReadAll(replay); !bytes.Equal(got, in) {
		t.Fatal("replay does not give back every byte read")
	}
}

func FuzzPeekClientHello(f *testing.F) {
	seeds := fuzzseed.New(f)
	seeds.Add(clientHello(f, "api.example.test"))
	seeds.Add([]byte("\x16\x03\x01\x00\x05hello"))
	seeds.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		sni, replay, err := peekClientHello(bytes.NewReader(data))
		if err != nil {
			return
		}
		if sni != strings.ToLower(sni) {
			t.Fatalf("server name %q not lower-cased", sni)
		}
		got, _ := io.ReadAll(replay)
		if !bytes.Equal(got, data) {
			t.Fatalf("replay lost bytes: %d of %d", len(got), len(data))
		}
	})
}
