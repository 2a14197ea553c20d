package policy

import (
	"testing"
)

const decidePolicy = `
version = 1
[agents.demo]
[agents.other]

[credentials.echo]
secret = "demo"
hosts = ["api.example.test"]
header = "Authorization"
format = "Bearer {secret}"

[credentials.svc]
secret = "svc"
hosts = ["*.svc.test"]
header = "X-Api-Key"

[[rules]]
name = "echo-read"
agent = "demo"
hosts = ["api.example.test"]
ports = [443, 8443]
methods = ["GET", "HEAD"]
paths = ["/v1/", "/health"]
credential = "echo"

[[rules]]
name = "echo-write"
agent = "demo"
hosts = ["API.Example.Test."]
methods = ["POST"]
paths = ["/v1/items"]

[[rules]]
name = "pypi"
agent = "demo"
hosts = ["pypi.test", "*.pythonhosted.test"]
mode = "passthrough"

[[rules]]
name = "mixed-pass"
agent = "demo"
hosts = ["mixed.svc.test"]
ports = [443, 8080]
mode = "passthrough"

[[rules]]
name = "svc"
agent = "demo"
hosts = ["*.svc.test"]
ports = [443, 80]
credential = "svc"

[[rules]]
name = "other-echo"
agent = "other"
hosts = ["api.example.test"]
mode = "passthrough"
`

func mustParse(t testing.TB, src string) *Policy {
	t.Helper()
	p, err := Parse("test.toml", []byte(src))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return p
}

func TestDecide(t *testing.T) {
	p := mustParse(t, decidePolicy)
	tests := []struct {
		agent, host string
		port        uint16
		want        Decision
	}{
		{"demo", "api.example.test", 443, Decision{Mode: Intercept, Rule: "echo-read"}},
		{"demo", "API.EXAMPLE.TEST.", 443, Decision{Mode: Intercept, Rule: "echo-read"}},
		{"demo", "api.example.test", 8443, Decision{Mode: Intercept, Rule: "echo-read"}},
		{"demo", "api.example.test", 80, Decision{Mode: Deny, Reason: "no rule for agent demo to api.example.test:80"}},
		{"demo", "pypi.test", 443, Decision{Mode: Passthrough, Rule: "pypi"}},
		{"demo", "files.pythonhosted.test", 443, Decision{Mode: Passthrough, Rule: "pypi"}},
		{"demo", "a.b.pythonhosted.test", 443, Decision{Mode: Passthrough, Rule: "pypi"}},
		{"demo", "pythonhosted.test", 443, Decision{Mode: Deny, Reason: "no rule for agent demo to pythonhosted.test:443"}},
		{"demo", "xpythonhosted.test", 443, Decision{Mode: Deny, Reason: "no rule for agent demo to xpythonhosted.test:443"}},
		// An intercept rule wins over an earlier passthrough rule for the same host.
		{"demo", "mixed.svc.test", 443, Decision{Mode: Intercept, Rule: "svc"}},
		{"demo", "mixed.svc.test", 80, Decision{Mode: Intercept, Rule: "svc"}},
		{"demo", "mixed.svc.test", 8080, Decision{Mode: Passthrough, Rule: "mixed-pass"}},
		{"demo", "mixed.svc.test", 8081, Decision{Mode: Deny, Reason: "no rule for agent demo to mixed.svc.test:8081"}},
		{"demo", "a.svc.test", 443, Decision{Mode: Intercept, Rule: "svc"}},
		{"demo", "evil.test", 443, Decision{Mode: Deny, Reason: "no rule for agent demo to evil.test:443"}},
		{"demo", "", 443, Decision{Mode: Deny, Reason: "no host name for agent demo to port 443"}},
		{"demo", "api.example.test:443", 443, Decision{Mode: Deny, Reason: "invalid host name api.example.test:443 for agent demo"}},
		{"demo", "api.example.test\r\nX: y", 443, Decision{Mode: Deny, Reason: `invalid host name "api.example.test\r\nX: y" for agent demo`}},
		{"demo", "api.example.test", 0, Decision{Mode: Deny, Reason: "no rule for agent demo to api.example.test:0"}},
		// Rules belong to one agent.
		{"other", "api.example.test", 443, Decision{Mode: Passthrough, Rule: "other-echo"}},
		{"other", "pypi.test", 443, Decision{Mode: Deny, Reason: "no rule for agent other to pypi.test:443"}},
		{"ghost", "api.example.test", 443, Decision{Mode: Deny, Reason: "unknown agent ghost"}},
		{"", "api.example.test", 443, Decision{Mode: Deny, Reason: `unknown agent ""`}},
	}
	for _, tt := range tests {
		if got := p.Decide(tt.agent, tt.host, tt.port); got != tt.want {
			t.Errorf("Decide(%q, %q, %d) = %+v, want %+v", tt.agent, tt.host, tt.port, got, tt.want)
		}
	}
}

func TestAuthorize(t *testing.T) {
	p := mustParse(t, decidePolicy)
	req := func(method, host string, port uint16, path string) Request {
		return Request{Agent: "demo", Method: method, Host: host, Port: port, Path: path}
	}
	tests := []struct {
		req        Request
		allow      bool
		rule, cred string
		reason     string
	}{
		{req("GET", "api.example.test", 443, "/v1/echo"), true, "echo-read", "echo", ""},
		{req("HEAD", "Api.Example.Test", 8443, "/health"), true, "echo-read", "echo", ""},
		{req("GET", "api.example.test", 443, "/healthz"), true, "echo-read", "echo", ""},
		// First matching rule in file order; the second rule has no credential.
		{req("POST", "api.example.test", 443, "/v1/items/7"), true, "echo-write", "", ""},
		{req("POST", "api.example.test", 443, "/v1/other"), false, "echo-write", "", "path not allowed for agent demo to api.example.test:443"},
		{req("DELETE", "api.example.test", 443, "/v1/echo"), false, "echo-read", "", "method DELETE not allowed for agent demo to api.example.test:443"},
		{req("get", "api.example.test", 443, "/v1/echo"), false, "echo-read", "", "method get not allowed for agent demo to api.example.test:443"},
		{req("GET", "api.example.test", 443, "/v2/"), false, "echo-read", "", "path not allowed for agent demo to api.example.test:443"},
		// Paths whose meaning could change under normalization never match a prefix.
		{req("GET", "api.example.test", 443, "/v1/../admin"), false, "echo-read", "", "path not allowed for agent demo to api.example.test:443"},
		{req("GET", "api.example.test", 443, "/v1/%2e%2e/admin"), false, "echo-read", "", "path not allowed for agent demo to api.example.test:443"},
		{req("GET", "api.example.test", 443, "/v1//x"), false, "echo-read", "", "path not allowed for agent demo to api.example.test:443"},
		{req("GET", "api.example.test", 443, "/v1/..%2fadmin"), false, "echo-read", "", "path not allowed for agent demo to api.example.test:443"},
		{req("GET", "api.example.test", 443, ""), false, "echo-read", "", "path not allowed for agent demo to api.example.test:443"},
		{req("GET", "api.example.test", 80, "/v1/"), false, "", "", "no rule for agent demo to api.example.test:80"},
		{req("GET", "pypi.test", 443, "/"), false, "pypi", "", "no intercept rule for agent demo to pypi.test:443"},
		{req("GET", "x.svc.test", 443, "/any/thing"), true, "svc", "svc", ""},
		{req("PATCH", "mixed.svc.test", 80, "/"), true, "svc", "svc", ""},
		{req("GET", "svc.test", 443, "/"), false, "", "", "no rule for agent demo to svc.test:443"},
		{req("GET", "", 443, "/"), false, "", "", "no host name for agent demo to port 443"},
		{Request{Agent: "ghost", Method: "GET", Host: "api.example.test", Port: 443, Path: "/v1/"}, false, "", "", "unknown agent ghost"},
		{Request{Agent: "other", Method: "GET", Host: "api.example.test", Port: 443, Path: "/v1/"}, false, "other-echo", "", "no intercept rule for agent other to api.example.test:443"},
	}
	for _, tt := range tests {
		g := p.Authorize(tt.req)
		cred := ""
		if g.Credential != nil {
			cred = g.Credential.Name
		}
		if g.Allow != tt.allow || g.Rule != tt.rule || cred != tt.cred || g.Reason != tt.reason {
			t.Errorf("Authorize(%+v) = {Allow:%v Rule:%q Credential:%q Reason:%q}, want {%v %q %q %q}",
				tt.req, g.Allow, g.Rule, cred, g.Reason, tt.allow, tt.rule, tt.cred, tt.reason)
		}
		if !g.Allow && g.Credential != nil {
			t.Errorf("Authorize(%+v) denied but returned a credential", tt.req)
		}
	}
}

// TestAuthorizeCredentialBinding checks the defence in depth: even if a
// compiled rule pointed at a credential not bound to the request host (which
// Parse rejects), Authorize refuses rather than inject it.
func TestAuthorizeCredentialBinding(t *testing.T) {
	p := mustParse(t, decidePolicy)
	for _, rs := range p.index["demo"].byHost {
		for _, r := range rs {
			if r.cred != nil && r.cred.Name == "echo" {
				r.cred.Hosts = []string{"elsewhere.test"}
			}
		}
	}
	g := p.Authorize(Request{Agent: "demo", Method: "GET", Host: "api.example.test", Port: 443, Path: "/v1/"})
	if g.Allow || g.Credential != nil || g.Reason != "credential echo is not bound to host api.example.test" {
		t.Errorf("Authorize = %+v, want a denial", g)
	}
}

func TestModeString(t *testing.T) {
	for m, want := range map[Mode]string{Deny: "deny", Passthrough: "passthrough", Intercept: "intercept", 9: "mode(9)"} {
		if m.String() != want {
			t.Errorf("Mode(%d).String() = %q, want %q", m, m.String(), want)
		}
	}
}

func TestNoAllocsOnAllow(t *testing.T) {
	p := mustParse(t, decidePolicy)
	checks := []struct {
		name string
		f    func() bool
	}{
		{"Decide intercept exact", func() bool { return p.Decide("demo", "api.example.test", 443).Mode == Intercept }},
		{"Decide passthrough wildcard", func() bool { return p.Decide("demo", "x.pythonhosted.test", 443).Mode == Passthrough }},
		{"Decide trailing dot", func() bool { return p.Decide("demo", "pypi.test.", 443).Mode == Passthrough }},
		{"Authorize exact", func() bool {
			return p.Authorize(Request{Agent: "demo", Method: "POST", Host: "api.example.test", Port: 443, Path: "/v1/items"}).Allow
		}},
		{"Authorize wildcard", func() bool {
			return p.Authorize(Request{Agent: "demo", Method: "GET", Host: "a.svc.test", Port: 80, Path: "/"}).Allow
		}},
	}
	for _, c := range checks {
		if !c.f() {
			t.Errorf("%s: not allowed", c.name)
			continue
		}
		if n := testing.AllocsPerRun(100, func() { c.f() }); n != 0 {
			t.Errorf("%s: %v allocations, want 0", c.name, n)
		}
	}
}

func TestCredentialsListsEveryCredential(t *testing.T) {
	p, err := Parse("p.toml", []byte(`version = 1
[agents.a]
[credentials.zeta]
secret = "s1"
hosts = ["z.example"]
header = "Authorization"
[credentials.alpha]
secret = "s2"
hosts = ["a.example"]
header = "x-api-key"
`))
	if err != nil {
		t.Fatal(err)
	}
	got := p.Credentials()
	if len(got) != 2 || got[0].Name != "alpha" || got[0].Secret != "s2" || got[1].Name != "zeta" || got[1].Hosts[0] != "z.example" {
		t.Fatalf("Credentials() = %+v", got)
	}
}
