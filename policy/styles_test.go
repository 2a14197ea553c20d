package policy

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// stylesPolicy holds one credential of every style and rules with every condition.
const stylesPolicy = `
version = 1
[agents.bot]

[credentials.openai]
secret = "openai-key"
hosts = ["api.openai.test"]
header = "Authorization"
format = "Bearer {secret}"
methods = ["POST"]
paths = ["/v1/"]

[credentials.gemini]
style = "query"
secret = "gemini-key"
hosts = ["generativelanguage.test"]
param = "key"

[credentials.git]
style = "basic"
secret = "gh-token"
hosts = ["git.test"]
user = "x-access-token"
ports = [443]

[credentials.swap]
style = "placeholder"
secret = "swap-key"
hosts = ["swap.test"]
env = "SWAP_API_KEY"

[credentials.aws]
style = "sigv4"
secret = "aws-secret"
hosts = ["*.amazonaws.test"]
access_key_id = "AKIAREALKEYID0000001"
env = "AWS_ACCESS_KEY_ID"

[credentials.idp]
style = "oauth2"
secret = "idp-client-secret"
hosts = ["api.private.test"]
token_url = "https://login.private.test/oauth2/token"
client_id = "wirken-bot"
scopes = ["read", "write"]

[[rules]]
name = "openai"
agent = "bot"
hosts = ["api.openai.test"]
credential = "openai"
daily_tokens = 1000
rate = "2/minute"
max_body = 1024

[[rules]]
name = "office"
agent = "bot"
hosts = ["swap.test"]
credential = "swap"
days = ["mon", "tue", "wed", "thu", "fri"]
hours = "09:00-17:00"
timezone = "Europe/Berlin"

[[rules]]
name = "night"
agent = "bot"
hosts = ["git.test"]
credential = "git"
hours = "22:00-06:00"

[[rules]]
name = "gemini"
agent = "bot"
hosts = ["generativelanguage.test"]
credential = "gemini"

[[rules]]
name = "aws"
agent = "bot"
hosts = ["bedrock.us-east-1.amazonaws.test"]
credential = "aws"

[[rules]]
name = "private"
agent = "bot"
hosts = ["api.private.test"]
credential = "idp"
`

func TestStylesParse(t *testing.T) {
	p := mustParse(t, stylesPolicy)
	byName := map[string]Credential{}
	for _, c := range p.Credentials() {
		byName[c.Name] = c
	}
	checks := []struct {
		name string
		ok   bool
	}{
		{"header", byName["openai"].Style == Header && byName["openai"].Header == "Authorization" && byName["openai"].Methods[0] == "POST"},
		{"query", byName["gemini"].Style == Query && byName["gemini"].Param == "key"},
		{"basic", byName["git"].Style == Basic && byName["git"].User == "x-access-token" && byName["git"].Ports[0] == 443},
		{"placeholder", byName["swap"].Style == Placeholder && strings.HasPrefix(byName["swap"].Placeholder, PlaceholderPrefix) && byName["swap"].Env == "SWAP_API_KEY"},
		{"sigv4", byName["aws"].Style == SigV4 && len(byName["aws"].Placeholder) == 20 && strings.HasPrefix(byName["aws"].Placeholder, AccessKeyIDPrefix)},
		{"oauth2", byName["idp"].Style == OAuth2 && byName["idp"].ClientID == "wirken-bot" && len(byName["idp"].Scopes) == 2},
	}
	for _, c := range checks {
		if !c.ok {
			t.Errorf("%s credential parsed wrong: %+v", c.name, byName)
		}
	}
	// Placeholders are stable for the same policy and differ between credentials.
	again := mustParse(t, stylesPolicy)
	if again.PlaceholderCredential(byName["swap"].Placeholder).Name != "swap" || p.PlaceholderCredential(byName["aws"].Placeholder).Name != "aws" {
		t.Error("placeholder lookup failed")
	}
	if env := p.AgentEnv("bot"); len(env) != 2 || env["SWAP_API_KEY"] != byName["swap"].Placeholder || env["AWS_ACCESS_KEY_ID"] != byName["aws"].Placeholder {
		t.Errorf("AgentEnv = %v", env)
	}
	if byName["swap"].Placeholder == byName["aws"].Placeholder || p.PlaceholderCredential("wkn_ph_nope") != nil {
		t.Error("placeholders not distinct")
	}
}

func TestCredentialNarrowBinding(t *testing.T) {
	p := mustParse(t, stylesPolicy)
	tests := []struct {
		req    Request
		reason string
	}{
		{Request{Agent: "bot", Method: "POST", Host: "api.openai.test", Port: 443, Path: "/v1/chat/completions"}, ""},
		{Request{Agent: "bot", Method: "GET", Host: "api.openai.test", Port: 443, Path: "/v1/models"}, "credential openai is not bound to method GET"},
		{Request{Agent: "bot", Method: "POST", Host: "api.openai.test", Port: 443, Path: "/v2/x"}, "credential openai is not bound to this path"},
	}
	for _, tt := range tests {
		g := p.Authorize(tt.req)
		if g.Allow != (tt.reason == "") || g.Reason != tt.reason {
			t.Errorf("Authorize(%+v) = %+v, want reason %q", tt.req, g, tt.reason)
		}
	}
}

func TestConditionsWindow(t *testing.T) {
	p := mustParse(t, stylesPolicy)
	office := p.Authorize(Request{Agent: "bot", Method: "GET", Host: "swap.test", Port: 443, Path: "/"})
	night := p.Authorize(Request{Agent: "bot", Method: "GET", Host: "git.test", Port: 443, Path: "/"})
	if office.Conditions == nil || night.Conditions == nil {
		t.Fatal("no conditions on the grants")
	}
	berlin, _ := time.LoadLocation("Europe/Berlin")
	tests := []struct {
		g    Grant
		at   time.Time
		open bool
	}{
		{office, time.Date(2026, 11, 25, 9, 0, 0, 0, berlin), true},    // Wednesday 09:00
		{office, time.Date(2026, 11, 25, 8, 59, 59, 0, berlin), false}, // a second early
		{office, time.Date(2026, 11, 25, 16, 59, 0, 0, berlin), true},
		{office, time.Date(2026, 11, 25, 17, 0, 0, 0, berlin), false},  // the end is exclusive
		{office, time.Date(2026, 11, 25, 8, 30, 0, 0, time.UTC), true}, // 09:30 in Berlin
		{office, time.Date(2026, 11, 28, 10, 0, 0, 0, berlin), false},  // Saturday
		{night, time.Date(2026, 11, 25, 23, 0, 0, 0, time.UTC), true},
		{night, time.Date(2026, 11, 26, 5, 59, 0, 0, time.UTC), true},
		{night, time.Date(2026, 11, 26, 6, 0, 0, 0, time.UTC), false},
		{night, time.Date(2026, 11, 26, 21, 59, 0, 0, time.UTC), false},
	}
	for _, tt := range tests {
		now := tt.at
		m := NewMeter(func() time.Time { return now })
		err := m.Admit("bot", tt.g)
		if tt.open != (err == nil) || err != nil && !errors.Is(err, ErrOutsideWindow) {
			t.Errorf("%s at %v: Admit = %v, want open %v", tt.g.Rule, tt.at, err, tt.open)
		}
	}
}

func TestMeterRateAndBudget(t *testing.T) {
	p := mustParse(t, stylesPolicy)
	g := p.Authorize(Request{Agent: "bot", Method: "POST", Host: "api.openai.test", Port: 443, Path: "/v1/chat/completions"})
	if g.Conditions == nil || g.Conditions.Rate != 2 || g.Conditions.MaxBody != 1024 {
		t.Fatalf("grant = %+v", g)
	}
	now := time.Date(2026, 11, 25, 23, 59, 0, 0, time.UTC)
	m := NewMeter(func() time.Time { return now })
	// Rate 2/minute: two at once, the third refused, one more after 30 s.
	for i, want := range []error{nil, nil, ErrRateLimited} {
		if err := m.Admit("bot", g); !errors.Is(err, want) || (want == nil) != (err == nil) {
			t.Fatalf("request %d: %v, want %v", i, err, want)
		}
	}
	now = now.Add(29 * time.Second)
	retry := func(err error) time.Duration { // -1: not a LimitError
		var le *LimitError
		if errors.As(err, &le) {
			return le.RetryAfter
		}
		return -1
	}
	if err := m.Admit("bot", g); !errors.Is(err, ErrRateLimited) || retry(err) < time.Second-time.Millisecond || retry(err) > time.Second+time.Millisecond {
		t.Fatalf("after 29s: %v (retry after %v), want ErrRateLimited, retry after 1s", err, retry(err))
	}
	now = now.Add(time.Second)
	if err := m.Admit("bot", g); err != nil {
		t.Fatalf("after 30s: %v", err)
	}
	// Budget 1000 tokens per day: 999 leaves it open, 1000 spends it.
	now = now.Add(time.Minute)
	m.Spend("bot", g, 999)
	if err := m.Admit("bot", g); err != nil {
		t.Fatalf("with 999 used: %v", err)
	}
	m.Spend("bot", g, 1)
	now = now.Add(time.Minute)
	if err := m.Admit("bot", g); !errors.Is(err, ErrBudgetSpent) || retry(err) != now.Truncate(24*time.Hour).Add(24*time.Hour).Sub(now) {
		t.Fatalf("with 1000 used at %v: %v (retry after %v), want ErrBudgetSpent, retry at midnight UTC", now, err, retry(err))
	}
	if m.Used("bot", "openai", g.Conditions) != 1000 {
		t.Fatalf("used = %d", m.Used("bot", "openai", g.Conditions))
	}
	select {
	case <-m.Changed():
	default:
		t.Fatal("Spend did not signal a change")
	}
	// The state survives a restart.
	m2 := NewMeter(func() time.Time { return now })
	if err := m2.Restore(m.State()); err != nil {
		t.Fatal(err)
	}
	if err := m2.Admit("bot", g); !errors.Is(err, ErrBudgetSpent) {
		t.Fatalf("restored meter: %v", err)
	}
	// Another agent's use and a new day are separate.
	if err := m2.Admit("other", g); err != nil {
		t.Fatalf("other agent: %v", err)
	}
	now = time.Date(2026, 11, 27, 0, 0, 1, 0, time.UTC)
	if err := m2.Admit("bot", g); err != nil {
		t.Fatalf("next day: %v", err)
	}
	if err := m2.Restore([]byte(`{"version":1,"tokens":[{"agent":"bot","rule":"openai","day":"yesterday","tokens":1}]}`)); err == nil {
		t.Fatal("a bad state was accepted")
	}
}

func TestNoAllocsAdmit(t *testing.T) {
	p := mustParse(t, stylesPolicy)
	g := p.Authorize(Request{Agent: "bot", Method: "GET", Host: "git.test", Port: 443, Path: "/"})
	m := NewMeter(func() time.Time { return time.Date(2026, 11, 25, 23, 0, 0, 0, time.UTC) })
	if n := testing.AllocsPerRun(100, func() { _ = m.Admit("bot", g) }); n != 0 {
		t.Errorf("Admit allocates %v times", n)
	}
	// Nor with a budget that has been spent from.
	llm := p.Authorize(Request{Agent: "bot", Method: "POST", Host: "api.openai.test", Port: 443, Path: "/v1/chat/completions"})
	m.Spend("bot", llm, 10)
	if n := testing.AllocsPerRun(100, func() { _ = m.Admit("bot", llm) }); n != 0 {
		t.Errorf("Admit with a budget allocates %v times", n)
	}
}

func TestStyleErrors(t *testing.T) {
	head := lines("version = 1", "[agents.bot]")
	tests := []struct {
		name string
		src  string
		want []string
	}{
		{
			name: "unknown style",
			src:  head + lines("[credentials.c]", `style = "bearer"`, `secret = "s"`, `hosts = ["a.test"]`),
			want: []string{`policy.toml:4:1: credentials.c.style: unknown style "bearer" (want one of header, query, basic, placeholder, sigv4, oauth2)`},
		},
		{
			name: "key of another style",
			src:  head + lines("[credentials.c]", `style = "query"`, `secret = "s"`, `hosts = ["a.test"]`, `param = "key"`, `header = "X"`),
			want: []string{`policy.toml:8:1: credentials.c.header: unknown key`},
		},
		{
			name: "misspelled style key",
			src:  head + lines("[credentials.c]", `style = "basic"`, `secret = "s"`, `hosts = ["a.test"]`, `usr = "git"`),
			want: []string{
				`policy.toml:3:1: credentials.c.user: required`,
				`policy.toml:7:1: credentials.c.usr: unknown key (did you mean "user"?)`,
			},
		},
		{
			name: "sigv4 fields",
			src:  head + lines("[credentials.c]", `style = "sigv4"`, `secret = "s"`, `hosts = ["a.test"]`, `access_key_id = "akia"`, `env = "1X"`),
			want: []string{
				`policy.toml:7:1: credentials.c.access_key_id: invalid access key id (want 16 to 128 upper-case letters and digits)`,
				`policy.toml:8:1: credentials.c.env: invalid environment variable name "1X" (want [A-Za-z_][A-Za-z0-9_]*)`,
			},
		},
		{
			name: "oauth2 fields",
			src:  head + lines("[credentials.c]", `style = "oauth2"`, `secret = "s"`, `hosts = ["a.test"]`, `token_url = "http://idp.test/token"`, `scopes = ["a b"]`),
			want: []string{
				`policy.toml:3:1: credentials.c.client_id: required`,
				`policy.toml:7:1: credentials.c.token_url: invalid token URL "http://idp.test/token" (want an https:// URL)`,
				`policy.toml:8:11: credentials.c.scopes[0]: invalid scope "a b" (want a token without spaces)`,
			},
		},
		{
			name: "query param",
			src:  head + lines("[credentials.c]", `style = "query"`, `secret = "s"`, `hosts = ["a.test"]`, `param = "a&b"`),
			want: []string{`policy.toml:7:1: credentials.c.param: invalid query parameter name "a&b" (want letters, digits, - _ . ~)`},
		},
		{
			name: "credential binding lists",
			src:  head + lines("[credentials.c]", `secret = "s"`, `hosts = ["a.test"]`, `header = "X"`, `ports = [0]`, `methods = ["get"]`, `paths = ["v1"]`),
			want: []string{
				`policy.toml:7:10: credentials.c.ports[0]: port 0 out of range 1..65535`,
				`policy.toml:8:12: credentials.c.methods[0]: invalid method "get" (want an upper-case HTTP token)`,
				`policy.toml:9:10: credentials.c.paths[0]: invalid path prefix "v1" (want an absolute path without //, . or .. segments, %2e, %2f, %5c, ? or #)`,
			},
		},
		{
			name: "conditions",
			src: head + lines("[[rules]]", `name = "r"`, `agent = "bot"`, `hosts = ["a.test"]`,
				`days = ["monday"]`, `hours = "9-17"`, `timezone = "Mars/Olympus"`, `rate = "10/fortnight"`, `max_body = 0`, `daily_tokens = "lots"`),
			want: []string{
				`policy.toml:7:9: rules[0].days[0]: invalid day "monday" (want mon, tue, wed, thu, fri, sat or sun)`,
				`policy.toml:8:1: rules[0].hours: invalid hours "9-17" (want "HH:MM-HH:MM", e.g. "09:00-17:30"; 24:00 ends at midnight)`,
				`policy.toml:9:1: rules[0].timezone: unknown time zone "Mars/Olympus" (want an IANA name such as "Europe/Berlin")`,
				`policy.toml:10:1: rules[0].rate: invalid rate "10/fortnight" (want "N/second", "N/minute", "N/hour" or "N/day", N from 1 to 1000000)`,
				`policy.toml:11:1: rules[0].max_body: 0 out of range 1..1099511627776`,
				`policy.toml:12:1: rules[0].daily_tokens: expected integer, found string`,
			},
		},
		{
			name: "two credentials set one variable",
			src: head + lines("[credentials.a]", `style = "placeholder"`, `secret = "s"`, `hosts = ["a.test"]`, `env = "KEY"`,
				"[credentials.b]", `style = "placeholder"`, `secret = "s"`, `hosts = ["b.test"]`, `env = "KEY"`,
				"[[rules]]", `name = "ra"`, `agent = "bot"`, `hosts = ["a.test"]`, `credential = "a"`,
				"[[rules]]", `name = "rb"`, `agent = "bot"`, `hosts = ["b.test"]`, `credential = "b"`),
			want: []string{`policy.toml:22:1: rules[1].credential: credential "b" sets KEY for agent "bot", as credential "a" of rule "ra" already does`},
		},
		{
			name: "conditions on a passthrough rule",
			src:  head + lines("[[rules]]", `name = "r"`, `agent = "bot"`, `hosts = ["a.test"]`, `mode = "passthrough"`, `rate = "1/s"`),
			want: []string{`policy.toml:8:1: rules[0].rate: not allowed on a passthrough rule (its requests are not seen)`},
		},
		{
			name: "placeholder headers",
			src:  head + lines("[credentials.c]", `style = "placeholder"`, `secret = "s"`, `hosts = ["a.test"]`, `headers = ["Host", "x y"]`),
			want: []string{
				`policy.toml:7:12: credentials.c.headers[0]: invalid header name "Host" (want an HTTP token that frames nothing)`,
				`policy.toml:7:20: credentials.c.headers[1]: invalid header name "x y" (want an HTTP token that frames nothing)`,
			},
		},
		{
			name: "misspelled condition",
			src:  head + lines("[[rules]]", `name = "r"`, `agent = "bot"`, `hosts = ["a.test"]`, `time_zone = "UTC"`),
			want: []string{`policy.toml:7:1: rules[0].time_zone: unknown key (did you mean "timezone"?)`},
		},
		{
			name: "shadowed rule",
			src: head + lines("[[rules]]", `name = "all"`, `agent = "bot"`, `hosts = ["*.a.test"]`,
				"[[rules]]", `name = "some"`, `agent = "bot"`, `hosts = ["x.a.test"]`, `methods = ["GET"]`),
			want: []string{`policy.toml:8:1: rules[1].name: rule "some" can never match: rule "all" (line 3) matches every request it would`},
		},
		{
			name: "passthrough shadowed by intercept",
			src: head + lines("[[rules]]", `name = "pass"`, `agent = "bot"`, `hosts = ["x.a.test"]`, `mode = "passthrough"`,
				"[[rules]]", `name = "all"`, `agent = "bot"`, `hosts = ["*.a.test"]`),
			want: []string{`policy.toml:4:1: rules[0].name: rule "pass" can never match: rule "all" (line 8) matches every request it would`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkParseErrors(t, tt.src, tt.want) })
	}
}

func TestNotShadowed(t *testing.T) {
	// A narrower rule first, a broader one after: both can match.
	mustParse(t, lines("version = 1", "[agents.bot]",
		"[[rules]]", `name = "get"`, `agent = "bot"`, `hosts = ["x.a.test"]`, `methods = ["GET"]`, `paths = ["/v1/"]`,
		"[[rules]]", `name = "all"`, `agent = "bot"`, `hosts = ["*.a.test", "x.a.test"]`,
		"[[rules]]", `name = "v2"`, `agent = "bot"`, `hosts = ["x.a.test"]`, `ports = [8443]`, `mode = "passthrough"`,
	))
}
