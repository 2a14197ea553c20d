package policy

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// benchPolicy has 1,000 agents, each with 10 intercept rules of 5 exact hosts
// (50 hosts), a credential, and one wildcard passthrough rule. It is larger than
// Parse accepts from a file, so it goes through parse.
func benchPolicy(b *testing.B) *Policy {
	b.Helper()
	var s strings.Builder
	s.WriteString("version = 1\n")
	for a := range 1000 {
		fmt.Fprintf(&s, "[agents.agent%d]\n", a)
		fmt.Fprintf(&s, "[credentials.cred%d]\nsecret = \"s%d\"\nhosts = [\"*.agent%d.test\"]\nheader = \"Authorization\"\nformat = \"Bearer {secret}\"\n", a, a, a)
	}
	for a := range 1000 {
		for r := range 10 {
			hosts := make([]string, 5)
			for h := range hosts {
				hosts[h] = fmt.Sprintf("%q", fmt.Sprintf("h%d.agent%d.test", r*5+h, a))
			}
			fmt.Fprintf(&s, "[[rules]]\nname = \"a%d-r%d\"\nagent = \"agent%d\"\nhosts = [%s]\nmethods = [\"GET\", \"POST\"]\npaths = [\"/v1/\", \"/v2/\"]\ncredential = \"cred%d\"\n",
				a, r, a, strings.Join(hosts, ", "), a)
		}
		fmt.Fprintf(&s, "[[rules]]\nname = \"a%d-wild\"\nagent = \"agent%d\"\nhosts = [\"*.cdn%d.test\"]\nmode = \"passthrough\"\n", a, a, a)
	}
	p, err := parse("bench.toml", []byte(s.String()))
	if err != nil {
		b.Fatal(err)
	}
	return p
}

func BenchmarkDecide(b *testing.B) {
	p := benchPolicy(b)
	cases := []struct {
		name, agent, host string
		want              Mode
	}{
		{"exact", "agent57", "h33.agent57.test", Intercept},
		{"wildcard", "agent57", "img.cdn57.test", Passthrough},
		{"deny", "agent57", "evil.test", Deny},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			if d := p.Decide(c.agent, c.host, 443); d.Mode != c.want {
				b.Fatalf("Decide = %+v, want %v", d, c.want)
			}
			b.ReportAllocs()
			for b.Loop() {
				p.Decide(c.agent, c.host, 443)
			}
		})
	}
}

func BenchmarkAuthorize(b *testing.B) {
	p := benchPolicy(b)
	req := Request{Agent: "agent57", Method: "POST", Host: "h49.agent57.test", Port: 443, Path: "/v2/chat/completions"}
	if g := p.Authorize(req); !g.Allow || g.Credential == nil {
		b.Fatalf("Authorize = %+v", g)
	}
	b.ReportAllocs()
	for b.Loop() {
		p.Authorize(req)
	}
}

// BenchmarkAuthorizeAdmit is the per-request path of a rule with a time window, a rate limit
// and a token budget: Authorize, then the Meter's check.
func BenchmarkAuthorizeAdmit(b *testing.B) {
	p, err := Parse("bench.toml", []byte(`version = 1
[agents.bot]
[[rules]]
name = "llm"
agent = "bot"
hosts = ["api.test"]
hours = "08:00-20:00"
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
timezone = "Europe/Berlin"
rate = "1000000/second"
daily_tokens = 1000000
`))
	if err != nil {
		b.Fatal(err)
	}
	// A clock that moves on 1 µs per request, so the rate (1,000,000/s) is never exceeded.
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	m := NewMeter(func() time.Time { now = now.Add(time.Microsecond); return now })
	req := Request{Agent: "bot", Method: "POST", Host: "api.test", Port: 443, Path: "/v1/chat"}
	m.Spend("bot", p.Authorize(req), 10) // the budget check then reads a counter
	b.ReportAllocs()
	for b.Loop() {
		if err := m.Admit("bot", p.Authorize(req)); err != nil {
			b.Fatal(err)
		}
	}
}
