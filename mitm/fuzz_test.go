package mitm

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/wirken/wirken/internal/fuzzseed"
	"github.com/wirken/wirken/policy"
)

// placeholderPolicy is fakePolicy that also knows one placeholder, of a credential no rule
// of it injects: a request carrying it must never reach an upstream.
type placeholderPolicy struct {
	*fakePolicy
	ph   string
	cred *policy.Credential
}

func (p placeholderPolicy) PlaceholderCredential(s string) *policy.Credential {
	if s == p.ph {
		return p.cred
	}
	return nil
}

// loopbackAddresses says every name is 127.0.0.1 (where the harness's upstream listens), so
// plain HTTP requests get as far as the upstream and no lookup leaves the host.
type loopbackAddresses struct{}

func (loopbackAddresses) LookupNetIP(context.Context, string) ([]netip.Addr, error) {
	return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
}

const fuzzPlaceholder = policy.PlaceholderPrefix + "0123456789abcdef0123456789abcdef"

// FuzzServeHTTP writes arbitrary bytes as an agent's request stream into the proxy, over TLS
// (SNI api.example.test, where rule r1 injects credential api on /v1/) or as plain HTTP, with
// a loopback TLS upstream. Whatever the bytes, no request reaches the upstream without its
// audit record, none carries a placeholder or goes anywhere but r1's host and paths, any that
// does carries exactly the injected credential, and the secret (a random canary) is never in
// what the agent reads back, the logs or the audit events.
func FuzzServeHTTP(f *testing.F) {
	seeds := fuzzseed.New(f)
	for _, s := range []string{
		"GET /v1/chat HTTP/1.1\r\nHost: api.example.test\r\nAuthorization: Bearer dummy\r\n\r\n",
		"POST /v1/chat HTTP/1.1\r\nHost: api.example.test\r\nContent-Length: 5\r\n\r\nhello",
		"POST /v1/chat HTTP/1.1\r\nHost: api.example.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		// Request smuggling: both lengths, and a second request hidden in the body.
		"POST /v1/x HTTP/1.1\r\nHost: api.example.test\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: api.example.test\r\n\r\n",
		"GET /v1/a HTTP/1.1\r\nHost: api.example.test\r\n\r\nGET /admin HTTP/1.1\r\nHost: api.example.test\r\n\r\nGET /v1/b HTTP/1.1\r\nHost: evil.test\r\n\r\n",
		"GET /v1/x HTTP/1.1\r\nHost: evil.example.test\r\n\r\n",
		"GET /v1/x HTTP/1.1\r\nHost: api.example.test:8443\r\n\r\n",
		"GET /v1/x HTTP/1.1\r\nHost: api.example.test\r\nX-Key: " + fuzzPlaceholder + "\r\n\r\n",
		"GET /v1/x?key=" + strings.ReplaceAll(fuzzPlaceholder, "_", "%5F") + " HTTP/1.1\r\nHost: api.example.test\r\n\r\n",
		"GET https://evil.test/v1/x HTTP/1.1\r\nHost: api.example.test\r\n\r\n",
		"CONNECT evil.test:443 HTTP/1.1\r\nHost: evil.test:443\r\n\r\n",
		"POST /v1/x HTTP/1.1\r\nHost: api.example.test\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
		"GET /v1/ws HTTP/1.1\r\nHost: api.example.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
		"GET /v1/x HTTP/1.0\r\nHost: api.example.test\r\nX-Folded: a\r\n b\r\nProxy-Authorization: Basic eDp5\r\n\r\n",
		"GET /v1/x HTTP/1.1\r\nHost: api.example.test\r\nVia: 1.1 wirken\r\n\r\n",
		"GET /v1/\x00 HTTP/1.1\r\nHost: api.example.test\r\n\r\n",
	} {
		seeds.Add([]byte(s), false)
	}
	seeds.Add([]byte("GET /v1/x HTTP/1.1\r\nHost: api.example.test\r\n\r\n"), true) // a credential never goes over plain HTTP
	seeds.Add([]byte("GET /plain/x HTTP/1.1\r\nHost: localhost\r\n\r\n"), true)
	seeds.Add([]byte("\x16\x03\x01\x00\x05hello"), true)

	logs := &lockedWriter{w: &bytes.Buffer{}}
	h := newHarness(f, func(c *Config) {
		fp := c.Policy.(*fakePolicy)
		c.Policy = placeholderPolicy{fakePolicy: fp, ph: fuzzPlaceholder, cred: &policy.Credential{Name: "swap", Secret: "swap-key", Style: policy.Placeholder, Placeholder: fuzzPlaceholder}}
		c.Addresses = loopbackAddresses{}
		c.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		c.HeaderTimeout = 2 * time.Second
		c.IdleTimeout = 2 * time.Second
	})
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(h.ca.CertPEM())
	tlsConf := &tls.Config{RootCAs: roots, ServerName: "api.example.test", NextProtos: []string{"http/1.1"}}
	// Requests begun (audit record written) and not yet seen upstream, by method. A request
	// may reach the upstream after the agent's connection is gone (an agent that half-closes
	// mid-body), so this is kept across inputs: every upstream request must use up one.
	begun := map[string]int{}
	scanned, seen := 0, 0
	audited := func(t *testing.T) {
		// What the upstream saw first, then the records: a record always precedes its request.
		h.mu.Lock()
		reqs := append([]string(nil), h.seenReqs[seen:]...)
		seen = len(h.seenReqs)
		h.mu.Unlock()
		h.rec.mu.Lock()
		for _, e := range h.rec.events[scanned:] {
			if e.Kind == "request.allow" || e.Kind == "credential.use" {
				begun[e.Method]++
			}
		}
		scanned = len(h.rec.events)
		h.rec.mu.Unlock()
		for _, r := range reqs {
			method, _, _ := strings.Cut(r, " ")
			if begun[method] == 0 {
				t.Fatalf("upstream got %q with no audit record begun for it", r)
			}
			begun[method]--
		}
	}
	f.Fuzz(func(t *testing.T, stream []byte, plain bool) {
		h.mu.Lock()
		upBefore := len(h.seenReqs)
		h.mu.Unlock()
		h.rec.mu.Lock()
		evBefore := len(h.rec.events)
		h.rec.mu.Unlock()

		raw, err := net.Dial("tcp", h.proxyAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer raw.Close()
		raw.SetDeadline(time.Now().Add(20 * time.Second))
		var conn interface {
			io.ReadWriter
			CloseWrite() error
		} = raw.(*net.TCPConn)
		if !plain {
			tc := tls.Client(raw, tlsConf)
			if err := tc.Handshake(); err != nil {
				t.Fatalf("TLS handshake with the proxy: %v", err)
			}
			conn = tc
		}
		conn.Write(stream)
		conn.CloseWrite()
		got, err := io.ReadAll(conn)
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("the proxy kept the connection open 20s after the agent closed its side; read %q", got)
		}

		h.mu.Lock()
		upstream := append([]string(nil), h.seenReqs[upBefore:]...)
		auth := append([]string(nil), h.seenAuth[upBefore:]...)
		hdrs := append([]http.Header(nil), h.seenHdrs[upBefore:]...)
		h.mu.Unlock()
		audited(t)
		for i, r := range upstream {
			f := strings.SplitN(r, " ", 3)
			if len(f) < 3 || f[1] != "api.example.test" || !strings.HasPrefix(f[2], "/v1/") {
				t.Fatalf("upstream got %q, which rule r1 does not allow", r)
			}
			// A placeholder anywhere the proxy would swap it (header values, the query).
			_, query, _ := strings.Cut(f[2], "?")
			if uq, err := url.QueryUnescape(query); strings.Contains(query, fuzzPlaceholder) || err == nil && strings.Contains(uq, fuzzPlaceholder) {
				t.Fatalf("a placeholder reached the upstream in the query: %q", r)
			}
			for k, vs := range hdrs[i] {
				for _, v := range vs {
					if strings.Contains(v, fuzzPlaceholder) {
						t.Fatalf("a placeholder reached the upstream in header %s: %q", k, r)
					}
				}
			}
			if auth[i] != "Bearer "+h.canary {
				t.Fatal("an upstream request without exactly the injected credential")
			}
		}
		if testing.Verbose() {
			t.Logf("upstream got %d, agent read %q", len(upstream), got)
		}
		if bytes.Contains(got, []byte(h.canary)) {
			t.Fatal("the secret is in the response the agent read")
		}
		h.rec.mu.Lock()
		events := fmt.Sprintf("%+v", h.rec.events[evBefore:])
		h.rec.mu.Unlock()
		if strings.Contains(events, h.canary) {
			t.Fatal("the secret is in an audit event")
		}
		logs.mu.Lock()
		leaked := strings.Contains(logs.w.(*bytes.Buffer).String(), h.canary)
		logs.w.(*bytes.Buffer).Reset()
		logs.mu.Unlock()
		if leaked {
			t.Fatal("the secret is in the proxy's logs")
		}
	})
}

// FuzzRequestHost: the Host header check that binds a request to its TLS server name. An
// accepted host is a lower-case name without a trailing dot (or a canonical IP literal) and
// an accepted port is numeric; both print back to themselves.
func FuzzRequestHost(f *testing.F) {
	seeds := fuzzseed.New(f)
	for _, s := range []string{"api.example.test", "API.Example.Test.:443", "[::1]:8443", "[fe80::1%eth0]", "127.0.0.1:", "a..b", ".a", "a_b-c.d:65536", "x:1:2", "[::ffff:1.2.3.4]", "h\x00st", "évil.test", ""} {
		seeds.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		host, port, ok := requestHost(h)
		if !ok {
			return
		}
		if host == "" || strings.ContainsAny(host, "[]%/ \x00") || host != strings.ToLower(host) || strings.HasSuffix(host, ".") {
			t.Fatalf("requestHost(%q) = %q, %q", h, host, port)
		}
		if strings.Trim(port, "0123456789") != "" || len(port) > 5 {
			t.Fatalf("requestHost(%q) port %q", h, port)
		}
		back := host
		if strings.Contains(host, ":") {
			back = "[" + host + "]"
		}
		if port != "" {
			back += ":" + port
		}
		if h2, p2, ok := requestHost(back); !ok || h2 != host || p2 != port {
			t.Fatalf("requestHost(%q) = %q, %q does not print back: %q, %q, %v", h, host, port, h2, p2, ok)
		}
	})
}
