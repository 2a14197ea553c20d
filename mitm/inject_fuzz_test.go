package mitm

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/net/http/httpguts"

	"github.com/wirken/wirken/internal/fuzzseed"
	"github.com/wirken/wirken/policy"
)

// canarySecrets opens every secret, for any host, as one random canary value.
type canarySecrets struct{ value string }

func (c canarySecrets) WithSecretVersion(_, _ string, fn func([]byte, int) error) error {
	return fn([]byte(c.value), 1)
}

func newCanary() string {
	b := make([]byte, 16)
	rand.Read(b)
	return "WKCANARY-" + hex.EncodeToString(b)
}

// fuzzProxy is a Proxy that is not serving: for the injection mechanics. Its logs go to logs.
func fuzzProxy(t testing.TB, cfg Config) (*Proxy, *lockedWriter) {
	logs := &lockedWriter{w: &bytes.Buffer{}}
	if cfg.CA == nil {
		cfg.CA = testCA(t, "fuzz CA")
	}
	cfg.Steering = &fakeSteering{agent: "demo"}
	if cfg.Policy == nil {
		cfg.Policy = &fakePolicy{}
	}
	if cfg.Recorder == nil {
		cfg.Recorder = &fakeRecorder{}
	}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p, logs
}

// placeholders is a PlaceholderFinder over a fixed set.
type placeholders map[string]*policy.Credential

func (p placeholders) Decide(string, string, uint16) policy.Decision { return policy.Decision{} }
func (p placeholders) Authorize(policy.Request) policy.Grant         { return policy.Grant{} }
func (p placeholders) PlaceholderCredential(s string) *policy.Credential {
	return p[s]
}

// FuzzPlaceholder: placeholder detection and swapping. findPlaceholder finds a credential's
// placeholder exactly when one is in a header value or the query (raw or unescaped), and a
// swap replaces every placeholder in the headers it may touch by the secret, touches no
// other header, drops Proxy-Authorization, and fails when there is nothing to swap.
func FuzzPlaceholder(f *testing.F) {
	seeds := fuzzseed.New(f)
	ph := policy.PlaceholderPrefix + "00112233445566778899aabbccddeeff"
	akid := policy.AccessKeyIDPrefix + "0123456789ABC"
	seeds.Add("X-Api-Key", ph, "", false)
	seeds.Add("Authorization", "Bearer "+ph, "a=1", true)
	seeds.Add("X-Other", "x"+ph+ph, "", true)
	seeds.Add("X-Api-Key", "wkn_ph_wkn_ph_"+ph[7:], "", false)
	seeds.Add("X-Other", "nothing", "key="+strings.ReplaceAll(ph, "_", "%5f"), false)
	seeds.Add("X-Other", "nothing", "key="+ph[:20]+"+"+ph[20:], false)
	seeds.Add("X-Other", "nothing", "bad=%zz&key="+ph, false)
	seeds.Add("Authorization", "AWS4-HMAC-SHA256 Credential="+akid+"/20260101/us-east-1/s3/aws4_request", "", false)
	seeds.Add("X-Api-Key", ph[:len(ph)-1], "", false)
	swap := &policy.Credential{Name: "swap", Style: policy.Placeholder, Placeholder: ph}
	swapOnly := &policy.Credential{Name: "swap-only", Style: policy.Placeholder, Placeholder: ph, SwapHeaders: []string{"X-Api-Key"}}
	aws := &policy.Credential{Name: "aws", Style: policy.SigV4, Placeholder: akid}
	p, _ := fuzzProxy(f, Config{Policy: placeholders{ph: swap, akid: aws}, Secrets: canarySecrets{}})
	canary := newCanary()
	f.Fuzz(func(t *testing.T, name, value, rawQuery string, only bool) {
		name = http.CanonicalHeaderKey(name)
		if name == "Proxy-Authorization" {
			return // set below, and dropped by every swap
		}
		req := &http.Request{Header: http.Header{name: {value}, "Proxy-Authorization": {"Basic eDp5"}}, URL: &url.URL{RawQuery: rawQuery}}
		inQuery := strings.Contains(rawQuery, ph) || strings.Contains(rawQuery, akid)
		if uq, err := url.QueryUnescape(rawQuery); err == nil {
			inQuery = strings.Contains(uq, ph) || strings.Contains(uq, akid)
		}
		var want *policy.Credential
		switch {
		case strings.Contains(value, ph):
			want = swap
		case strings.Contains(value, akid):
			want = aws
		case inQuery:
			want = swap
			if uq, err := url.QueryUnescape(rawQuery); err == nil && !strings.Contains(uq, ph) || err != nil && !strings.Contains(rawQuery, ph) {
				want = aws
			}
		}
		got := p.findPlaceholder(req)
		if (got == nil) != (want == nil) || got != nil && got != want && !(strings.Contains(value, ph) && strings.Contains(value, akid)) {
			t.Fatalf("findPlaceholder(%s: %q, ?%q) = %v, want %v", name, value, rawQuery, got, want)
		}

		c := swap
		if only {
			c = swapOnly
		}
		out := req.Clone(req.Context())
		err := p.inject(out, c, []byte(canary))
		touchable := !only || name == "X-Api-Key"
		if out.Header.Get("Proxy-Authorization") != "" {
			t.Fatal("Proxy-Authorization kept")
		}
		if touchable && strings.Contains(value, ph) {
			if err != nil {
				t.Fatalf("swap failed: %v", err)
			}
			if v := out.Header.Get(name); strings.Contains(v, ph) || strings.Count(v, canary) != strings.Count(value, ph) || strings.ReplaceAll(v, canary, ph) != value {
				t.Fatalf("%s: %q swapped to a value with %d secrets", name, value, strings.Count(v, canary))
			}
			return
		}
		if err == nil {
			t.Fatalf("swap of %s: %q (touchable %v) succeeded with nothing to swap", name, value, touchable)
		}
		if strings.Contains(err.Error(), canary) {
			t.Fatal("the secret is in the error")
		}
		if out.Header.Get(name) != value {
			t.Fatalf("header %s changed from %q to %q", name, value, out.Header.Get(name))
		}
	})
}

// FuzzSigV4 re-signs requests whose Authorization, X-Amz-Content-Sha256, URL and body are
// arbitrary. parseSigV4 accepts only a full credential scope and prints back to itself; a
// re-signed request carries the real access key id and not the placeholder; a refusal says
// why without the secret, which appears in no header either way.
func FuzzSigV4(f *testing.F) {
	seeds := fuzzseed.New(f)
	akid := policy.AccessKeyIDPrefix + "0123456789ABC"
	good := "AWS4-HMAC-SHA256 Credential=" + akid + "/20260101/us-east-1/bedrock/aws4_request, SignedHeaders=host;x-amz-date, Signature=" + strings.Repeat("0", 64)
	seeds.Add(good, "", "/model/x/converse", []byte(`{"a":1}`))
	seeds.Add(good, "UNSIGNED-PAYLOAD", "/bucket/key?x-id=PutObject", []byte("data"))
	seeds.Add(good, streamingSigned, "/bucket/key", []byte("5;chunk-signature="+strings.Repeat("0", 64)+"\r\nhello\r\n0;chunk-signature="+strings.Repeat("0", 64)+"\r\n\r\n"))
	seeds.Add(good, "STREAMING-UNSIGNED-PAYLOAD-TRAILER", "/b/k", []byte{})
	seeds.Add(good, "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD", "/b/k", []byte{})
	seeds.Add(good, strings.Repeat("A", 64), "/b/k", []byte{})
	seeds.Add(good, "", "/b/k?X-Amz-Credential=x", []byte{})
	seeds.Add("AWS4-HMAC-SHA256 Credential=AKIAOTHER/20260101/us-east-1/s3/aws4_request", "", "/", []byte{})
	seeds.Add("AWS4-HMAC-SHA256 Credential="+akid+"/d//s/aws4_request", "", "/", []byte{})
	seeds.Add("AWS4-HMAC-SHA256 SignedHeaders=host,Credential="+akid+"/d/r/s3/aws4_request", "", "/a b/%2F", []byte{})
	seeds.Add("Bearer x", "", "/", []byte{})
	aws := &policy.Credential{Name: "aws", Style: policy.SigV4, Placeholder: akid, AccessKeyID: "AKIAREALKEYID0000001"}
	p, _ := fuzzProxy(f, Config{Secrets: canarySecrets{}})
	canary := newCanary()
	f.Fuzz(func(t *testing.T, auth, payload, target string, body []byte) {
		if sc, ok := parseSigV4(auth); ok {
			if sc.region == "" || sc.service == "" || strings.ContainsAny(sc.keyID+sc.date+sc.region+sc.service, "/,") {
				t.Fatalf("parseSigV4(%q) = %+v", auth, sc)
			}
			again, ok := parseSigV4("AWS4-HMAC-SHA256 Credential=" + sc.keyID + "/" + sc.date + "/" + sc.region + "/" + sc.service + "/aws4_request")
			if !ok || again != sc {
				t.Fatalf("parseSigV4(%q) = %+v does not print back (%+v)", auth, sc, again)
			}
		}
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return
		}
		u.Scheme, u.Host = "https", "bedrock-runtime.us-east-1.amazonaws.test"
		req, err := http.NewRequest(http.MethodPost, u.String(), bytes.NewReader(body))
		if err != nil {
			return
		}
		req.Header.Set("Authorization", auth)
		if payload != "" {
			req.Header.Set("X-Amz-Content-Sha256", payload)
		}
		req.Header.Set("X-Amz-Security-Token", "agent-dummy")
		err = p.resign(req, aws, []byte(canary))
		for k, vs := range req.Header {
			for _, v := range vs {
				if strings.Contains(v, canary) {
					t.Fatalf("the secret is in header %s", k)
				}
			}
		}
		if err != nil {
			if strings.Contains(err.Error(), canary) {
				t.Fatal("the secret is in the error")
			}
			return
		}
		sc, _ := parseSigV4(auth)
		if sc.keyID != akid {
			t.Fatalf("re-signed a request signed with key id %q", sc.keyID)
		}
		a := req.Header.Get("Authorization")
		if !strings.HasPrefix(a, "AWS4-HMAC-SHA256 Credential=AKIAREALKEYID0000001/") || strings.Contains(a, akid) || req.Header.Get("X-Amz-Date") == "" || req.Header.Get("X-Amz-Security-Token") != "" {
			t.Fatalf("re-signed Authorization %q, X-Amz-Date %q", a, req.Header.Get("X-Amz-Date"))
		}
		if req.Body != nil {
			if _, err := io.Copy(io.Discard, req.Body); err != nil && payload != streamingSigned {
				t.Fatalf("reading the re-signed body: %v", err)
			}
		}
	})
}

// FuzzSetQueryParam: the query-style injection leaves exactly one parameter of its name, with
// the secret as its value, and every other parameter as the agent wrote it.
func FuzzSetQueryParam(f *testing.F) {
	seeds := fuzzseed.New(f)
	seeds.Add("a=1&key=dummy&b=2", "key", "s3cr3t")
	seeds.Add("key=1&key=2&%6bey=3&k%65y", "key", "v&x=y")
	seeds.Add("", "api-key", "a b+c")
	seeds.Add("&&=&key", "key", "")
	seeds.Add("x=%zz&key=1", "key", "v")
	f.Fuzz(func(t *testing.T, raw, name, value string) {
		if name == "" {
			return
		}
		got := setQueryParam(raw, name, value)
		q, err := url.ParseQuery(got)
		if err == nil && (len(q[name]) != 1 || q[name][0] != value) {
			t.Fatalf("setQueryParam(%q, %q) = %q: %s = %q", raw, name, got, name, q[name])
		}
		var kept []string
		if raw != "" {
			for _, part := range strings.Split(raw, "&") {
				k, _, _ := strings.Cut(part, "=")
				if uk, err := url.QueryUnescape(k); (err != nil || uk != name) && k != name {
					kept = append(kept, part)
				}
			}
		}
		want := strings.Join(append(kept, url.QueryEscape(name)+"="+url.QueryEscape(value)), "&")
		if got != want {
			t.Fatalf("setQueryParam(%q, %q) = %q, want %q", raw, name, got, want)
		}
		if strings.Count(got, url.QueryEscape(name)+"="+url.QueryEscape(value)) < 1 {
			t.Fatal("the parameter is missing")
		}
	})
}

// FuzzOAuth2Token mints tokens from a loopback token endpoint answering an arbitrary status,
// content type and body. Every mint is audited once, begun before the client secret leaves
// and finished; the secret is in no error or log; a token is accepted only if it can be sent
// as an Authorization header.
func FuzzOAuth2Token(f *testing.F) {
	seeds := fuzzseed.New(f)
	seeds.Add(uint16(200), "application/json", []byte(`{"access_token":"tok-1","token_type":"Bearer","expires_in":3600}`))
	seeds.Add(uint16(200), "application/x-www-form-urlencoded", []byte("access_token=tok-2&token_type=bearer&expires_in=60"))
	seeds.Add(uint16(200), "application/json", []byte(`{"access_token":"a\nb","token_type":"Bearer"}`))
	seeds.Add(uint16(200), "application/json", []byte(`{"token_type":"Bearer"}`))
	seeds.Add(uint16(200), "application/json", []byte(`{"access_token":"t","expires_in":"soon"}`))
	seeds.Add(uint16(200), "text/plain", []byte(`access_token=t`))
	seeds.Add(uint16(400), "application/json", []byte(`{"error":"invalid_client","error_description":"bad secret"}`))
	seeds.Add(uint16(401), "text/html", []byte("<html>no</html>"))
	seeds.Add(uint16(500), "", []byte{})
	seeds.Add(uint16(302), "", []byte{})

	upCA := testCA(f, "token endpoint CA")
	leaf, err := upCA.Leaf("localhost")
	if err != nil {
		f.Fatal(err)
	}
	var mu sync.Mutex
	var status int
	var ctype string
	var body []byte
	var gotSecret bool
	canary := newCanary()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		_, pass, _ := r.BasicAuth()
		gotSecret = pass == canary
		if ctype != "" {
			w.Header().Set("Content-Type", ctype)
		}
		w.WriteHeader(status)
		w.Write(body)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{*leaf}}
	srv.StartTLS()
	f.Cleanup(srv.Close)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(upCA.CertPEM())
	port := netip.MustParseAddrPort(srv.Listener.Addr().String()).Port()
	rec := &fakeRecorder{}
	p, logs := fuzzProxy(f, Config{Secrets: canarySecrets{value: canary}, Recorder: rec, UpstreamRoots: roots})
	c := &policy.Credential{Name: "idp", Style: policy.OAuth2, Secret: "idp-secret", TokenURL: "https://" + net.JoinHostPort("localhost", strconv.Itoa(int(port))) + "/oauth2/token", ClientID: "bot", Scopes: []string{"read"}}
	f.Fuzz(func(t *testing.T, st uint16, ct string, b []byte) {
		mu.Lock()
		status, ctype, body, gotSecret = int(st), ct, b, false
		if st < 200 || st > 599 {
			status = 200 + int(st)%400
		}
		mu.Unlock()
		rec.mu.Lock()
		evBefore, resBefore := len(rec.events), len(rec.results)
		rec.mu.Unlock()

		tok, err := p.mint(c, Event{Agent: "demo"})

		rec.mu.Lock()
		events, results := rec.events[evBefore:], rec.results[resBefore:]
		rec.mu.Unlock()
		if len(events) != 1 || events[0].Kind != "credential.mint" || events[0].Credential != "idp" || len(results) != 1 {
			t.Fatalf("mint recorded %+v, finished %d times", events, len(results))
		}
		mu.Lock()
		sent := gotSecret
		mu.Unlock()
		if !sent {
			t.Fatal("the token endpoint did not get the client secret")
		}
		logs.mu.Lock()
		leaked := strings.Contains(logs.w.(*bytes.Buffer).String(), canary)
		logs.w.(*bytes.Buffer).Reset()
		logs.mu.Unlock()
		if leaked {
			t.Fatal("the client secret is in the logs")
		}
		if testing.Verbose() {
			t.Logf("mint: %v %v", tok, err)
		}
		if err != nil {
			if strings.Contains(err.Error(), canary) || results[0].Err == nil || strings.Contains(results[0].Err.Error(), canary) {
				t.Fatalf("refusal %v, recorded as %v", err, results[0].Err)
			}
			return
		}
		if tok.AccessToken == "" || !httpguts.ValidHeaderFieldValue("Bearer "+tok.AccessToken) {
			t.Fatalf("accepted access token %q cannot be sent in a header", tok.AccessToken)
		}
		if results[0].Status != http.StatusOK || results[0].Err != nil {
			t.Fatalf("a mint that got a token recorded status %d", results[0].Status)
		}
	})
}
