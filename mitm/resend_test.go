package mitm

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// faultyUpstream serves the harness's name and misbehaves by path: /drop reads the request and
// closes the connection without an answer; /cut sends a 200 header and part of the body, then
// resets. It counts the requests it read, by path.
func faultyUpstream(t *testing.T, h *harness) (count func(string) int) {
	t.Helper()
	var mu sync.Mutex
	got := map[string]int{}
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got[r.URL.Path]++
		mu.Unlock()
		switch r.URL.Path {
		case "/v1/drop", "/v1/cut":
			c, buf, err := w.(http.Hijacker).Hijack()
			if err != nil {
				return
			}
			if r.URL.Path == "/v1/cut" {
				buf.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + strings.Repeat("x", 100))
				buf.Flush()
				c.(*tls.Conn).NetConn().(*net.TCPConn).SetLinger(0)
			}
			c.Close()
		default:
			io.WriteString(w, "ok")
		}
	}))
	leaf, err := h.upCA.Leaf("api.example.test")
	if err != nil {
		t.Fatal(err)
	}
	up.TLS = &tls.Config{Certificates: []tls.Certificate{*leaf}}
	up.StartTLS()
	t.Cleanup(up.Close)
	h.steer.setDst(netip.MustParseAddrPort(up.Listener.Addr().String()))
	return func(p string) int {
		mu.Lock()
		defer mu.Unlock()
		return got[p]
	}
}

// TestResendIsAudited: a GET whose reused upstream connection is closed after the upstream
// read it is sent again by net/http; the upstream then has two requests, so the audit log must
// have two credential.use records, each before its send.
func TestResendIsAudited(t *testing.T) {
	h := newHarness(t)
	count := faultyUpstream(t, h)
	c := h.client("api.example.test")
	if code, _, body, err := get(t, c, "https://api.example.test/v1/warm", nil); err != nil || code != 200 {
		t.Fatalf("warm-up: %d %q %v", code, body, err)
	}
	code, _, body, err := get(t, c, "https://api.example.test/v1/drop", nil)
	if err != nil || code != http.StatusBadGateway {
		t.Fatalf("GET /v1/drop: %d %q %v; want 502", code, body, err)
	}
	h.rec.mu.Lock()
	defer h.rec.mu.Unlock()
	uses, resent := 0, 0
	for _, e := range h.rec.events {
		if e.Kind == "credential.use" && e.Path == "/v1/drop" {
			uses++
		}
	}
	for _, r := range h.rec.results {
		if errors.Is(r.Err, errResent) {
			resent++
		}
	}
	if n := count("/v1/drop"); n < 2 || uses != n {
		t.Fatalf("the upstream read /v1/drop %d times; %d credential.use records; want one record per send (net/http sends it again on a reused connection)", n, uses)
	}
	if resent != uses-1 {
		t.Fatalf("%d results say the send was made again; want %d", resent, uses-1)
	}
}

// TestResendStoppedWhenAuditFails: when the record of a further send cannot be written, the
// send does not happen and the agent gets 503.
func TestResendStoppedWhenAuditFails(t *testing.T) {
	// The warm-up's and the first send's records are written; the resend's is refused.
	rec := &failAfter{fakeRecorder: &fakeRecorder{}, ok: 2}
	h := newHarness(t, func(c *Config) { c.Recorder = rec })
	count := faultyUpstream(t, h)
	c := h.client("api.example.test")
	if code, _, _, err := get(t, c, "https://api.example.test/v1/warm", nil); err != nil || code != 200 {
		t.Fatalf("warm-up: %d %v", code, err)
	}
	code, _, body, err := get(t, c, "https://api.example.test/v1/drop", nil)
	if err != nil || code != http.StatusServiceUnavailable {
		t.Fatalf("GET /v1/drop with the audit log failing on the resend: %d %q %v; want 503", code, body, err)
	}
	if n := count("/v1/drop"); n != 1 {
		t.Fatalf("the upstream read /v1/drop %d times; want 1 (the unrecorded send must not happen)", n)
	}
}

// failAfter fails every Begin after the first ok.
type failAfter struct {
	*fakeRecorder
	mu sync.Mutex
	n  int
	ok int
}

func (f *failAfter) Begin(ctx context.Context, e Event) (context.Context, func(Result), error) {
	f.mu.Lock()
	f.n++
	n := f.n
	f.mu.Unlock()
	if n > f.ok {
		return ctx, nil, errors.New("disk full")
	}
	return f.fakeRecorder.Begin(ctx, e)
}

// TestCutOffResponseIsAudited: a body the upstream resets midway is recorded as cut off.
func TestCutOffResponseIsAudited(t *testing.T) {
	h := newHarness(t)
	faultyUpstream(t, h)
	c := h.client("api.example.test")
	_, _, _, err := get(t, c, "https://api.example.test/v1/cut", nil)
	if err == nil {
		t.Log("the agent's client read the cut-off body without an error")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		h.rec.mu.Lock()
		var last *Result
		if len(h.rec.results) > 0 {
			last = &h.rec.results[len(h.rec.results)-1]
		}
		h.rec.mu.Unlock()
		if last != nil {
			if last.Status != 200 || last.Err == nil || !strings.Contains(last.Err.Error(), "cut off after 100 bytes") {
				t.Fatalf("result %+v; want status 200 with the body cut off after 100 bytes", *last)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no result recorded")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
