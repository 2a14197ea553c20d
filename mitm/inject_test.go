package mitm

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/wirken/wirken/policy"
)

// received is what the test upstream saw of one request.
type received struct {
	Method  string            `json:"method"`
	Host    string            `json:"host"`
	Path    string            `json:"path"`
	Query   string            `json:"query"`
	Headers map[string]string `json:"headers"`
	Body    string            `json:"body"`
}

// secretStore is a vault stand-in: random canary values by secret name, each bound to hosts.
type secretStore struct {
	values map[string]string
	hosts  map[string][]string
}

func (s *secretStore) WithSecretVersion(name, host string, fn func([]byte, int) error) error {
	v, ok := s.values[name]
	if !ok {
		return fmt.Errorf("secret %s not found", name)
	}
	for _, h := range s.hosts[name] {
		if h == host {
			return fn([]byte(v), 3)
		}
	}
	return fmt.Errorf("secret %s not bound to %s", name, host)
}

// testClock is a settable clock for the Meter.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *testClock) Set(t time.Time) { c.mu.Lock(); defer c.mu.Unlock(); c.now = t }

// livePolicy wraps a parsed policy as the daemon does, placeholder lookups included. The test
// upstream listens on a random port; the policy sees it as 443, the port the agent would have
// connected to.
type livePolicy struct {
	*policy.Policy
	upPort uint16
}

func (l livePolicy) port(p uint16) uint16 {
	if p == l.upPort {
		return 443
	}
	return p
}

func (l livePolicy) Decide(agent, host string, port uint16) policy.Decision {
	return l.Policy.Decide(agent, host, l.port(port))
}

func (l livePolicy) Authorize(r policy.Request) policy.Grant {
	r.Port = l.port(r.Port)
	return l.Policy.Authorize(r)
}

type injectHarness struct {
	*harness
	pol     *policy.Policy
	secrets *secretStore
	clock   *testClock
	mu      sync.Mutex
	got     []received
	mints   int
	// /v1/slow answers once hold is closed, after telling arrived.
	hold, arrived chan struct{}
}

func (h *injectHarness) last(t *testing.T) received {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.got) == 0 {
		t.Fatal("the upstream received nothing")
	}
	return h.got[len(h.got)-1]
}

func (h *injectHarness) count() int { h.mu.Lock(); defer h.mu.Unlock(); return len(h.got) }

func canary(t *testing.T, what string) string {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "WKCANARY-" + what + "-" + hex.EncodeToString(b)
}

const injectPolicy = `
version = 1
[agents.bot]

[credentials.openai]
secret = "openai"
hosts = ["api.openai.test"]
header = "Authorization"
format = "Bearer {secret}"

[credentials.anthropic]
secret = "anthropic"
hosts = ["api.anthropic.test"]
header = "x-api-key"

[credentials.gemini]
style = "query"
secret = "gemini"
hosts = ["gemini.test"]
param = "key"

[credentials.git]
style = "basic"
secret = "git"
hosts = ["git.test"]
user = "x-access-token"

[credentials.swap]
style = "placeholder"
secret = "swap"
hosts = ["swap.test"]
env = "SWAP_KEY"
headers = ["authorization"]

[credentials.aws]
style = "sigv4"
secret = "aws"
hosts = ["bedrock-runtime.us-east-1.amazonaws.test"]
access_key_id = "AKIAREALKEY000000001"

[credentials.idp]
style = "oauth2"
secret = "idp"
hosts = ["api.private.test"]
token_url = "https://localhost:%[1]d/oauth2/token"
client_id = "bot-client"
scopes = ["read"]

[credentials.idp-short]
style = "oauth2"
secret = "idp"
hosts = ["api2.private.test"]
token_url = "https://localhost:%[1]d/oauth2/token?short=1"
client_id = "bot-client"

[[rules]]
name = "private-short"
agent = "bot"
hosts = ["api2.private.test"]
credential = "idp-short"

[[rules]]
name = "openai"
agent = "bot"
hosts = ["api.openai.test"]
credential = "openai"
daily_tokens = 100

[[rules]]
name = "anthropic"
agent = "bot"
hosts = ["api.anthropic.test"]
credential = "anthropic"

[[rules]]
name = "gemini"
agent = "bot"
hosts = ["gemini.test"]
credential = "gemini"

[[rules]]
name = "git"
agent = "bot"
hosts = ["git.test"]
credential = "git"

[[rules]]
name = "swap"
agent = "bot"
hosts = ["swap.test"]
credential = "swap"

[[rules]]
name = "aws"
agent = "bot"
hosts = ["bedrock-runtime.us-east-1.amazonaws.test"]
credential = "aws"

[[rules]]
name = "private"
agent = "bot"
hosts = ["api.private.test"]
credential = "idp"

[[rules]]
name = "plain"
agent = "bot"
hosts = ["other.test"]

[[rules]]
name = "office"
agent = "bot"
hosts = ["window.test"]
hours = "09:00-17:00"
timezone = "Europe/Berlin"

[[rules]]
name = "rated"
agent = "bot"
hosts = ["rate.test"]
rate = "2/minute"

[[rules]]
name = "small"
agent = "bot"
hosts = ["body.test"]
max_body = 10
`

// newInjectHarness runs the real proxy with a parsed policy in front of one TLS upstream that
// answers for every test host (and for the OAuth2 token endpoint on localhost).
func newInjectHarness(t *testing.T) *injectHarness {
	t.Helper()
	h := &injectHarness{harness: &harness{rec: &fakeRecorder{}, logs: &bytes.Buffer{}}, clock: &testClock{now: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)}}
	h.secrets = &secretStore{values: map[string]string{}, hosts: map[string][]string{
		"openai": {"api.openai.test"}, "anthropic": {"api.anthropic.test"}, "gemini": {"gemini.test"}, "git": {"git.test"},
		"swap": {"swap.test"}, "aws": {"bedrock-runtime.us-east-1.amazonaws.test"}, "idp": {"localhost"},
	}}
	for name := range h.secrets.hosts {
		h.secrets.values[name] = canary(t, name)
	}
	h.canary = "WKCANARY-"

	upstreamCA := testCA(t, "upstream test CA")
	up := httptest.NewUnstartedServer(http.HandlerFunc(h.upstream))
	up.TLS = &tls.Config{GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		return upstreamCA.Leaf(hello.ServerName)
	}}
	up.StartTLS()
	t.Cleanup(up.Close)
	port := up.Listener.Addr().(*net.TCPAddr).Port
	var err error
	h.pol, err = policy.Parse("inject.toml", fmt.Appendf(nil, injectPolicy, port))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(upstreamCA.CertPEM())

	h.ca = testCA(t, "wirken test CA")
	h.steer = &fakeSteering{agent: "bot", dst: netip.MustParseAddrPort(up.Listener.Addr().String())}
	h.proxy, h.proxyAddr = serveProxy(t, Config{
		CA: h.ca, UpstreamRoots: roots, Steering: h.steer, Policy: livePolicy{h.pol, uint16(port)}, Secrets: h.secrets,
		Recorder: h.rec, Limits: policy.NewMeter(h.clock.Now),
		Logger: slog.New(slog.NewTextHandler(&lockedWriter{w: h.logs}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	return h
}

func (h *injectHarness) upstream(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if r.URL.Path == "/oauth2/token" {
		h.mu.Lock()
		h.mints++
		n := h.mints
		h.mu.Unlock()
		id, secret, ok := r.BasicAuth()
		if !ok || id != "bot-client" || secret != h.secrets.values["idp"] || !strings.Contains(string(body), "grant_type=client_credentials") {
			http.Error(w, `{"error":"invalid_client"}`, http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		life := 3600
		if r.URL.Query().Get("short") != "" {
			life = 5 // within the 10 s wirken refreshes ahead of expiry
		}
		fmt.Fprintf(w, `{"access_token":"minted-token-%d","token_type":"Bearer","expires_in":%d}`, n, life)
		return
	}
	rv := received{Method: r.Method, Host: r.Host, Path: r.URL.EscapedPath(), Query: r.URL.RawQuery, Headers: map[string]string{}, Body: string(body)}
	for k, vs := range r.Header {
		rv.Headers[k] = strings.Join(vs, ",")
	}
	if r.ContentLength >= 0 && rv.Headers["Content-Length"] == "" {
		rv.Headers["Content-Length"] = fmt.Sprint(r.ContentLength)
	}
	h.mu.Lock()
	h.got = append(h.got, rv)
	h.mu.Unlock()
	switch r.URL.Path {
	case "/v1/enc": // honours the agent's Accept-Encoding: usage in br is unreadable to wirken
		w.Header().Set("Content-Type", "application/json")
		if strings.Contains(r.Header.Get("Accept-Encoding"), "br") {
			w.Header().Set("Content-Encoding", "br")
			w.Write([]byte{0x1b, 0x42, 0x00, 0xf8, 0x25, 0x82, 0x82, 0x12})
			return
		}
		fmt.Fprint(w, `{"model":"gpt-test","usage":{"prompt_tokens":60,"completion_tokens":30}}`)
		return
	case "/v1/nousage":
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"model":"gpt-test"}`)
		return
	case "/v1/slow":
		h.arrived <- struct{}{}
		<-h.hold
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"model":"gpt-test","usage":{"prompt_tokens":1,"completion_tokens":1}}`)
		return
	}
	if r.URL.Path == "/v1/stream" { // OpenAI-style stream: usage in the final chunk
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: {\"model\":\"gpt-test\",\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n")
		fmt.Fprint(w, "data: {\"model\":\"gpt-test\",\"choices\":[],\"usage\":{\"prompt_tokens\":50,\"completion_tokens\":45}}\n\n")
		fmt.Fprint(w, "data: [DONE]\n\n")
		return
	}
	if r.URL.Path == "/v1/chat/completions" {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"model":"gpt-test","usage":{"prompt_tokens":60,"completion_tokens":30}}`)
		return
	}
	fmt.Fprint(w, "ok")
}

func (h *injectHarness) do(t *testing.T, req *http.Request) (int, string) {
	t.Helper()
	code, body, _ := h.doHeader(t, req)
	return code, body
}

// doHeader is do, also returning the response's header.
func (h *injectHarness) doHeader(t *testing.T, req *http.Request) (int, string, http.Header) {
	t.Helper()
	resp, err := h.client(req.URL.Hostname()).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func newReq(t *testing.T, method, url string, body string, hdr ...string) *http.Request {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return req
}

func (h *injectHarness) placeholder(t *testing.T, cred string) string {
	t.Helper()
	for _, c := range h.pol.Credentials() {
		if c.Name == cred {
			return c.Placeholder
		}
	}
	t.Fatalf("no credential %s", cred)
	return ""
}

func TestInjectStyles(t *testing.T) {
	h := newInjectHarness(t)
	v := h.secrets.values

	t.Run("header with a format", func(t *testing.T) {
		code, _ := h.do(t, newReq(t, "GET", "https://api.openai.test/v1/models", "", "Authorization", "Bearer sk-agent-dummy"))
		if got := h.last(t).Headers["Authorization"]; code != 200 || got != "Bearer "+v["openai"] {
			t.Fatalf("%d, upstream Authorization %q", code, got)
		}
	})
	t.Run("x-api-key header", func(t *testing.T) {
		code, _ := h.do(t, newReq(t, "POST", "https://api.anthropic.test/v1/messages", "{}"))
		if got := h.last(t).Headers["X-Api-Key"]; code != 200 || got != v["anthropic"] {
			t.Fatalf("%d, upstream x-api-key %q", code, got)
		}
	})
	t.Run("query parameter, other parameters kept", func(t *testing.T) {
		code, _ := h.do(t, newReq(t, "GET", "https://gemini.test/v1/models?alt=json&key=agent-dummy&b=2%203", ""))
		if got := h.last(t).Query; code != 200 || got != "alt=json&b=2%203&key="+v["gemini"] {
			t.Fatalf("%d, upstream query %q", code, got)
		}
	})
	t.Run("basic auth", func(t *testing.T) {
		code, _ := h.do(t, newReq(t, "GET", "https://git.test/org/repo.git/info/refs?service=git-upload-pack", ""))
		r, _ := http.NewRequest("GET", "/", nil)
		r.Header.Set("Authorization", h.last(t).Headers["Authorization"])
		user, pass, ok := r.BasicAuth()
		if code != 200 || !ok || user != "x-access-token" || pass != v["git"] {
			t.Fatalf("%d, upstream basic auth %q %q %v", code, user, pass, ok)
		}
	})
	t.Run("placeholder swap in headers", func(t *testing.T) {
		ph := h.placeholder(t, "swap")
		code, _ := h.do(t, newReq(t, "GET", "https://swap.test/api", "", "Authorization", "Token "+ph, "X-Other", "keep", "X-Echo", ph))
		got := h.last(t).Headers
		// Only the listed header is swapped: an echoing header keeps the placeholder.
		if code != 200 || got["Authorization"] != "Token "+v["swap"] || got["X-Other"] != "keep" || got["X-Echo"] != ph {
			t.Fatalf("%d, upstream headers %v", code, got)
		}
	})
	t.Run("placeholder toward another host is refused and audited", func(t *testing.T) {
		before := h.count()
		ph := h.placeholder(t, "swap")
		for _, req := range []*http.Request{
			newReq(t, "GET", "https://other.test/x", "", "Authorization", "Bearer "+ph),
			newReq(t, "GET", "https://other.test/x?token="+ph, ""),
			newReq(t, "GET", "https://api.openai.test/v1/models", "", "X-Smuggle", "a"+ph+"b"),
		} {
			code, body := h.do(t, req)
			if code != 403 || !strings.Contains(body, "placeholder of credential swap") {
				t.Errorf("%s: %d %q", req.URL, code, body)
			}
		}
		if h.count() != before {
			t.Fatal("a request with a stray placeholder reached the upstream")
		}
		evs := h.rec.snapshot()
		ev := evs[len(evs)-1]
		if ev.Kind != "request.deny" || !strings.Contains(ev.Reason, "placeholder of credential swap") {
			t.Fatalf("last event %+v", ev)
		}
	})
	t.Run("oauth2 client credentials, minted once and cached", func(t *testing.T) {
		for i := range 2 {
			code, _ := h.do(t, newReq(t, "GET", "https://api.private.test/things", "", "Authorization", "Bearer agent-dummy"))
			if got := h.last(t).Headers["Authorization"]; code != 200 || got != "Bearer minted-token-1" {
				t.Fatalf("request %d: %d, upstream Authorization %q", i, code, got)
			}
		}
		h.mu.Lock()
		mints := h.mints
		h.mu.Unlock()
		if mints != 1 {
			t.Fatalf("%d tokens minted, want 1", mints)
		}
		var mint *Event
		for _, e := range h.rec.snapshot() {
			if e.Kind == "credential.mint" {
				mint = &e
			}
		}
		if mint == nil || mint.Host != "localhost" || mint.Credential != "idp" {
			t.Fatalf("token mint not audited: %+v", h.rec.events)
		}
	})
	t.Run("oauth2 token about to expire is minted again", func(t *testing.T) {
		var auths []string
		for range 2 {
			code, _ := h.do(t, newReq(t, "GET", "https://api2.private.test/things", ""))
			if code != 200 {
				t.Fatalf("status %d", code)
			}
			auths = append(auths, h.last(t).Headers["Authorization"])
		}
		if auths[0] == auths[1] || !strings.HasPrefix(auths[1], "Bearer minted-token-") {
			t.Fatalf("upstream saw %q; want two different minted tokens", auths)
		}
	})
	t.Run("canaries never in logs or events", func(t *testing.T) {
		h.rec.mu.Lock()
		all := h.logs.String() + fmt.Sprintf("%+v %+v", h.rec.events, h.rec.results)
		h.rec.mu.Unlock()
		for name, c := range v {
			if strings.Contains(all, c) {
				t.Errorf("secret %s leaked into logs or audit events", name)
			}
		}
		if strings.Contains(all, "minted-token") {
			t.Error("an OAuth2 token leaked into logs or audit events")
		}
	})
}

// botocoreVerify checks a received SigV4 request with botocore, an implementation
// independent of the Go signer wirken uses.
func botocoreVerify(t *testing.T, rv received, keyID, secret string) string {
	t.Helper()
	if err := exec.Command("python3", "-c", "import botocore").Run(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("python3 with botocore is required under CI (apt-get install python3-botocore): %v", err)
		}
		t.Skip("python3 botocore not installed")
	}
	in, _ := json.Marshal(map[string]any{
		"method": rv.Method, "host": rv.Host, "path": rv.Path, "query": rv.Query, "headers": rv.Headers,
		"body": rv.Body, "access_key_id": keyID, "secret_access_key": secret,
	})
	cmd := exec.Command("python3", "testdata/sigv4_verify.py")
	cmd.Stdin = bytes.NewReader(in)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("botocore refused the signature: %v\n%s", err, out)
	}
	return string(out)
}

func TestInjectSigV4(t *testing.T) {
	h := newInjectHarness(t)
	ph := h.placeholder(t, "aws")
	secret := h.secrets.values["aws"]
	// The agent signs with the placeholder key id and a dummy secret key, as an SDK would.
	agentSign := func(t *testing.T, req *http.Request, payload string) {
		t.Helper()
		err := v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: ph, SecretAccessKey: "agent-dummy-secret"},
			req, payload, "bedrock", "us-east-1", time.Now())
		if err != nil {
			t.Fatal(err)
		}
	}
	body := `{"messages":[{"role":"user","content":[{"text":"hi"}]}]}`
	hash := func(s string) string { sum := sha256.Sum256([]byte(s)); return hex.EncodeToString(sum[:]) }
	url := "https://bedrock-runtime.us-east-1.amazonaws.test/model/anthropic.claude-v2%3A1/converse"

	t.Run("signed payload without X-Amz-Content-Sha256", func(t *testing.T) {
		req := newReq(t, "POST", url, body, "Content-Type", "application/json")
		agentSign(t, req, hash(body))
		if code, msg := h.do(t, req); code != 200 {
			t.Fatalf("%d %s", code, msg)
		}
		rv := h.last(t)
		if !strings.Contains(rv.Headers["Authorization"], "Credential=AKIAREALKEY000000001/") || strings.Contains(rv.Headers["Authorization"], ph) {
			t.Fatalf("upstream Authorization %q", rv.Headers["Authorization"])
		}
		botocoreVerify(t, rv, "AKIAREALKEY000000001", secret)
	})
	t.Run("signed payload with X-Amz-Content-Sha256", func(t *testing.T) {
		req := newReq(t, "POST", url, body, "X-Amz-Content-Sha256", hash(body))
		agentSign(t, req, hash(body))
		if code, msg := h.do(t, req); code != 200 {
			t.Fatalf("%d %s", code, msg)
		}
		botocoreVerify(t, h.last(t), "AKIAREALKEY000000001", secret)
	})
	t.Run("unsigned payload", func(t *testing.T) {
		req := newReq(t, "PUT", url+"?x-id=PutObject", body, "X-Amz-Content-Sha256", "UNSIGNED-PAYLOAD")
		agentSign(t, req, "UNSIGNED-PAYLOAD")
		if code, msg := h.do(t, req); code != 200 {
			t.Fatalf("%d %s", code, msg)
		}
		rv := h.last(t)
		if rv.Body != body || rv.Headers["X-Amz-Content-Sha256"] != "UNSIGNED-PAYLOAD" {
			t.Fatalf("upstream got %+v", rv)
		}
		botocoreVerify(t, rv, "AKIAREALKEY000000001", secret)
	})
	t.Run("chunk-signed streaming payload", func(t *testing.T) {
		// The agent frames the body with chunk signatures of its own (wrong ones: wirken
		// checks none of them).
		parts := []string{"first chunk of data, ", "second, ", "end"}
		var framed strings.Builder
		decoded := 0
		for _, p := range append(parts, "") {
			fmt.Fprintf(&framed, "%x;chunk-signature=%s\r\n%s\r\n", len(p), strings.Repeat("0", 64), p)
			decoded += len(p)
		}
		req := newReq(t, "PUT", url, framed.String(), "X-Amz-Content-Sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
			"Content-Encoding", "aws-chunked", "X-Amz-Decoded-Content-Length", fmt.Sprint(decoded))
		agentSign(t, req, "STREAMING-AWS4-HMAC-SHA256-PAYLOAD")
		if code, msg := h.do(t, req); code != 200 {
			t.Fatalf("%d %s", code, msg)
		}
		rv := h.last(t)
		if len(rv.Body) != framed.Len() || strings.Contains(rv.Body, strings.Repeat("0", 64)) {
			t.Fatalf("upstream body %q", rv.Body)
		}
		if out := botocoreVerify(t, rv, "AKIAREALKEY000000001", secret); !strings.Contains(out, "chunks 4") {
			t.Fatalf("the verifier did not check the 4 chunks: %s", out)
		}
		// A changed chunk fails the chain.
		bad := rv
		bad.Body = strings.Replace(rv.Body, "second", "SECOND", 1)
		if err := exec.Command("python3", "-c", "import botocore").Run(); err == nil {
			in, _ := json.Marshal(map[string]any{"method": bad.Method, "host": bad.Host, "path": bad.Path, "query": bad.Query,
				"headers": bad.Headers, "body": bad.Body, "access_key_id": "AKIAREALKEY000000001", "secret_access_key": secret})
			cmd := exec.Command("python3", "testdata/sigv4_verify.py")
			cmd.Stdin = bytes.NewReader(in)
			if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "chunk 1: signature mismatch") {
				t.Fatalf("the verifier did not catch a changed chunk: %v %s", err, out)
			}
		}
	})
	t.Run("a wrong signature fails the independent check", func(t *testing.T) {
		rv := h.last(t)
		rv.Body += " "
		rv.Headers["X-Amz-Content-Sha256"] = hash(body)
		if err := exec.Command("python3", "-c", "import botocore").Run(); err != nil {
			t.Skip("python3 botocore not installed")
		}
		in, _ := json.Marshal(map[string]any{"method": rv.Method, "host": rv.Host, "path": rv.Path, "query": rv.Query,
			"headers": rv.Headers, "body": rv.Body, "access_key_id": "AKIAREALKEY000000001", "secret_access_key": secret})
		cmd := exec.Command("python3", "testdata/sigv4_verify.py")
		cmd.Stdin = bytes.NewReader(in)
		if out, err := cmd.CombinedOutput(); err == nil {
			t.Fatalf("the verifier accepted a changed request: %s", out)
		}
	})
	t.Run("signed trailers and foreign key ids are refused", func(t *testing.T) {
		before := h.count()
		req := newReq(t, "PUT", url, body, "X-Amz-Content-Sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER")
		agentSign(t, req, "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER")
		if code, msg := h.do(t, req); code != 403 || !strings.Contains(msg, "streaming payloads STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER are not supported") {
			t.Fatalf("streaming: %d %s", code, msg)
		}
		req = newReq(t, "POST", url, body)
		if err := v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: "AKIAOTHERKEY00000000", SecretAccessKey: "x"}, req, hash(body), "bedrock", "us-east-1", time.Now()); err != nil {
			t.Fatal(err)
		}
		if code, msg := h.do(t, req); code != 403 || !strings.Contains(msg, "placeholder access key id") {
			t.Fatalf("foreign key id: %d %s", code, msg)
		}
		if h.count() != before {
			t.Fatal("a refused request reached the upstream")
		}
	})
	if strings.Contains(h.logs.String()+fmt.Sprintf("%+v", h.rec.snapshot()), secret) {
		t.Error("the AWS secret key leaked into logs or events")
	}
}

func TestConditionsThroughProxy(t *testing.T) {
	h := newInjectHarness(t)
	berlin, _ := time.LoadLocation("Europe/Berlin")

	t.Run("time window", func(t *testing.T) {
		h.clock.Set(time.Date(2026, 11, 25, 8, 59, 59, 0, berlin))
		code, body := h.do(t, newReq(t, "GET", "https://window.test/", ""))
		if code != 429 || !strings.Contains(body, policy.ErrOutsideWindow.Error()) {
			t.Fatalf("at 08:59:59: %d %q", code, body)
		}
		h.clock.Set(time.Date(2026, 11, 25, 9, 0, 0, 0, berlin))
		if code, body := h.do(t, newReq(t, "GET", "https://window.test/", "")); code != 200 {
			t.Fatalf("at 09:00: %d %q", code, body)
		}
		h.clock.Set(time.Date(2026, 11, 25, 17, 0, 0, 0, berlin))
		if code, _ := h.do(t, newReq(t, "GET", "https://window.test/", "")); code != 429 {
			t.Fatalf("at 17:00: %d", code)
		}
	})
	t.Run("rate limit", func(t *testing.T) {
		h.clock.Set(time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC))
		for i, want := range []int{200, 200, 429} {
			code, body := h.do(t, newReq(t, "GET", "https://rate.test/", ""))
			if code != want {
				t.Fatalf("request %d: %d %q, want %d", i, code, body, want)
			}
		}
		h.clock.Set(time.Date(2026, 11, 25, 12, 0, 29, 0, time.UTC))
		if code, _, hdr := h.doHeader(t, newReq(t, "GET", "https://rate.test/", "")); code != 429 || hdr.Get("Retry-After") != "1" {
			t.Fatalf("after 29s: %d, Retry-After %q, want 429 and 1", code, hdr.Get("Retry-After"))
		}
		h.clock.Set(time.Date(2026, 11, 25, 12, 0, 30, 0, time.UTC))
		if code, _ := h.do(t, newReq(t, "GET", "https://rate.test/", "")); code != 200 {
			t.Fatalf("after 30s: %d", code)
		}
	})
	t.Run("body size cap", func(t *testing.T) {
		before := h.count()
		if code, _ := h.do(t, newReq(t, "POST", "https://body.test/", "12345678901")); code != 413 {
			t.Fatalf("11 bytes: %d", code)
		}
		chunked := newReq(t, "POST", "https://body.test/", "")
		chunked.Body = io.NopCloser(strings.NewReader("12345678901"))
		chunked.ContentLength = -1
		if code, _ := h.do(t, chunked); code != 413 {
			t.Fatalf("11 bytes chunked: %d", code)
		}
		if h.count() != before {
			t.Fatal("an oversized body reached the upstream")
		}
		if code, _ := h.do(t, newReq(t, "POST", "https://body.test/", "1234567890")); code != 200 || h.last(t).Body != "1234567890" {
			t.Fatalf("10 bytes: %d %+v", code, h.last(t))
		}
	})
	t.Run("token budget", func(t *testing.T) {
		h.clock.Set(time.Date(2026, 11, 25, 23, 0, 0, 0, time.UTC))
		// Each call reports 90 tokens; the budget is 100 per day.
		code, _ := h.do(t, newReq(t, "POST", "https://api.openai.test/v1/chat/completions", "{}"))
		if code != 200 {
			t.Fatalf("first call: %d", code)
		}
		if code, _ := h.do(t, newReq(t, "POST", "https://api.openai.test/v1/chat/completions", "{}")); code != 200 {
			t.Fatalf("second call (90 of 100 used): %d", code)
		}
		code, body, hdr := h.doHeader(t, newReq(t, "POST", "https://api.openai.test/v1/chat/completions", "{}"))
		if code != 429 || !strings.Contains(body, policy.ErrBudgetSpent.Error()) {
			t.Fatalf("third call (180 of 100 used): %d %q", code, body)
		}
		if got := hdr.Get("Retry-After"); got != "3600" { // the budget starts over at midnight
			t.Fatalf("spent budget at 23:00: Retry-After %q, want 3600", got)
		}
		h.clock.Set(time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC))
		// A new day; now streamed answers, whose final event reports 95 tokens.
		for i, want := range []int{200, 200, 429} {
			code, body := h.do(t, newReq(t, "POST", "https://api.openai.test/v1/stream", "{}"))
			if code != want {
				t.Fatalf("next day, stream %d: %d %q, want %d", i, code, body, want)
			}
		}
	})
	var kinds []string
	for _, e := range h.rec.snapshot() {
		if e.Kind == "request.deny" && e.Rule != "" {
			kinds = append(kinds, e.Rule)
		}
	}
	if !strings.Contains(strings.Join(kinds, ","), "office") || !strings.Contains(strings.Join(kinds, ","), "openai") {
		t.Errorf("denials not audited with their rule: %v", kinds)
	}
}

func (f *fakeRecorder) snapshot() []Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Event(nil), f.events...)
}
