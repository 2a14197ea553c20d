package policy

import (
	"bytes"
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/wirken/wirken/internal/fuzzseed"
)

func FuzzParse(f *testing.F) {
	seeds := fuzzseed.New(f)
	example, err := os.ReadFile("testdata/example.toml")
	if err != nil {
		f.Fatal(err)
	}
	seeds.Add(string(example))
	seeds.Add(decidePolicy)
	seeds.Add(stylesPolicy)
	seeds.Add("version = 1\n[agents.a]\n[credentials.c]\nstyle = 'oauth2'\nsecret = 's'\nhosts = ['h.test']\ntoken_url = 'https://i.test/t'\nclient_id = 'x'\n[[rules]]\nname = 'r'\nagent = 'a'\nhosts = ['h.test']\ncredential = 'c'\nhours = '23:00-01:00'\nrate = '1/s'\n")
	seeds.Add("version = 1\nrules = [{name='a', agent='x', hosts=['h.test']}, 'r']\n")
	seeds.Add("version = 1\n[[rules]]\n[rules.x]\n[[rules.x.y]]\n\"a\\u0062\".'c' = \"\"\"\n[x]\"\"\"\n")
	seeds.Add(utf8BOM + "version = 1\r\n[agents.\"a b\"]\r\n")
	seeds.Add("a = [[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]\n")
	seeds.Add("x = 1979-05-27 07:32:00Z\ny = { a = [ { b = 'c' } ] }\n")
	seeds.Add("\"a.b\" = 1\n'x y'.z = 2\n\"\" = 3\n[ t . \"u\\\"v\" ]\nk = '''\n'''\n[[ a ]]\nb = [ # c\n  1, { d = [] }, ]\ne = {}\n")
	seeds.Add("a = \"\\x41\\e\\U0001F600\"\n\"\\x41\" = 1\n[\"\\u00e9\"]\nx = 'y'\n")
	f.Fuzz(func(t *testing.T, src string) {
		checkScanner(t, src)
		p, err := Parse("f.toml", []byte(src))
		if err != nil {
			var errs Errors
			if !errors.As(err, &errs) || len(errs) == 0 {
				t.Fatalf("error is not a non-empty Errors: %v", err)
			}
			for _, e := range errs {
				if e.Line < 1 || e.Col < 1 || e.File != "f.toml" || e.Msg == "" {
					t.Fatalf("bad error %+v", e)
				}
			}
			if p != nil {
				t.Fatal("policy returned with an error")
			}
			return
		}
		// A valid policy answers every question without panicking, and
		// never allows what it does not name.
		hosts := []string{"", "a.test", "A.Test.", "x.y.z"}
		for _, ai := range p.index {
			for h := range ai.byHost {
				hosts = append(hosts, h, "x."+h)
			}
		}
		for _, a := range p.Agents() {
			for _, host := range hosts {
				d := p.Decide(a.Name, host, 443)
				if (d.Mode == Deny) != (d.Rule == "") {
					t.Fatalf("Decide(%q, %q) = %+v", a.Name, host, d)
				}
				g := p.Authorize(Request{Agent: a.Name, Method: "GET", Host: host, Port: 443, Path: "/"})
				if g.Allow && d.Mode != Intercept {
					t.Fatalf("Authorize allowed %q on a connection Decide gave %v", host, d.Mode)
				}
				if g.Credential != nil && !matchHostAny(g.Credential.Hosts, host) {
					t.Fatalf("credential %q returned for unbound host %q", g.Credential.Name, host)
				}
			}
		}
		// Explain and the conditions answer for every agent and host too.
		m := NewMeter(nil)
		for _, a := range p.Agents() {
			for _, host := range hosts {
				if _, err := p.Explain(a.Name, "POST", "https://"+host+"/v1/x"); err != nil && host != "" && checkHostSyntax(host) {
					t.Fatalf("Explain(%q): %v", host, err)
				}
				g := p.Authorize(Request{Agent: a.Name, Method: "POST", Host: host, Port: 443, Path: "/v1/x"})
				_ = m.Admit(a.Name, g)
				m.Spend(a.Name, g, 1)
			}
		}
		if err := NewMeter(nil).Restore(m.State()); err != nil {
			t.Fatalf("meter state does not restore: %v", err)
		}
		if d := p.Decide("no agent", "a.test", 443); d.Mode != Deny {
			t.Fatalf("unknown agent allowed: %+v", d)
		}
	})
}

// matchHostAny reports whether any pattern matches host.
func matchHostAny(patterns []string, host string) bool {
	for _, p := range patterns {
		if MatchHost(p, host) {
			return true
		}
	}
	return false
}

// checkScanner checks the position scanner against the TOML parser: every
// key and array element the parser decoded (to a nesting depth the scanner
// follows) must have a recorded position.
func checkScanner(t *testing.T, src string) {
	t.Helper()
	var doc map[string]any
	if _, err := toml.Decode(src, &doc); err != nil {
		return
	}
	pos := scanPositions(src)
	var walk func(path string, v any, depth int)
	walk = func(path string, v any, depth int) {
		if depth > 8 {
			return
		}
		if path != "" {
			if _, ok := pos.at[path]; !ok {
				t.Fatalf("no position recorded for %s in %q", path, src)
			}
		}
		switch v := v.(type) {
		case map[string]any:
			for k, e := range v {
				walk(childPath(path, k), e, depth+1)
			}
		case []map[string]any:
			for i, e := range v {
				walk(indexPath(path, i), e, depth+1)
			}
		case []any:
			for i, e := range v {
				walk(indexPath(path, i), e, depth+1)
			}
		}
	}
	walk("", doc, 0)
}

// explainLine is one line of Explain's output: a key, a colon, padding, a value.
var explainLine = regexp.MustCompile(`^[a-z]+: +\S[^\n\r]*$`)

// FuzzExplain asks `wirken policy explain` about arbitrary agents, methods and URLs against
// the example policy and one with every injection style and condition. The answer is lines of
// "key: value" (nothing from the request can start a line of its own), with one verdict that
// agrees with Decide and Authorize.
func FuzzExplain(f *testing.F) {
	seeds := fuzzseed.New(f)
	for _, s := range []struct {
		agent, method, url string
		styles             bool
	}{
		{"demo", "POST", "https://api.example.test/v1/chat", false},
		{"demo", "", "https://api.example.test:8443/v1/", false},
		{"demo", "DELETE", "https://api.example.test/admin", false},
		{"demo", "GET", "https://pypi.test/simple/", false},
		{"demo", "GET", "http://api.example.test/v1/x", false},
		{"builder", "GET", "https://api.github.test/repos", false},
		{"nobody", "GET", "https://evil.test/", false},
		{"bot", "POST", "https://api.openai.test/v1/chat/completions", true},
		{"bot", "GET", "https://swap.test/x?y=z", true},
		{"bot", "GET", "https://git.test:443/repo.git/info/refs", true},
		{"bot", "GET", "https://api.private.test/me", true},
		{"bot", "PUT", "https://s3.amazonaws.test/bucket/key", true},
		{"demo\nverdict: allow", "GET\r\nrule: x", "https://api.example.test/v1/%0Averdict:%20allow", false},
		{"demo", "GET", "https://[::1]:0/", false},
		{"demo", "GET", "ftp://api.example.test/", false},
	} {
		seeds.Add(s.agent, s.method, s.url, s.styles)
	}
	example, err := os.ReadFile("testdata/example.toml")
	if err != nil {
		f.Fatal(err)
	}
	pols := map[bool]*Policy{}
	for styles, src := range map[bool]string{false: string(example), true: stylesPolicy} {
		if pols[styles], err = Parse("policy.toml", []byte(src)); err != nil {
			f.Fatal(err)
		}
	}
	f.Fuzz(func(t *testing.T, agent, method, rawURL string, styles bool) {
		p := pols[styles]
		out, err := p.Explain(agent, method, rawURL)
		if err != nil {
			if out != "" || !strings.HasPrefix(err.Error(), "explaining ") {
				t.Fatalf("error %q with output %q", err, out)
			}
			return
		}
		verdicts := 0
		verdict := ""
		for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
			if !explainLine.MatchString(l) {
				t.Fatalf("line %q of\n%s\nis not key: value", l, out)
			}
			if v, ok := strings.CutPrefix(l, "verdict:"); ok {
				verdicts++
				verdict = strings.TrimSpace(v)
			}
		}
		if verdicts != 1 {
			t.Fatalf("%d verdicts in\n%s", verdicts, out)
		}
		u, _ := url.Parse(rawURL)
		port := uint16(443)
		if u.Scheme == "http" {
			port = 80
		}
		if ps := u.Port(); ps != "" {
			n, _ := strconv.ParseUint(ps, 10, 16)
			port = uint16(n)
		}
		if method == "" {
			method = "GET"
		}
		path := u.EscapedPath()
		if path == "" {
			path = "/"
		}
		d := p.Decide(agent, u.Hostname(), port)
		g := p.Authorize(Request{Agent: agent, Method: method, Host: u.Hostname(), Port: port, Path: path})
		allowed := strings.HasPrefix(verdict, "allow")
		switch {
		case u.Scheme == "https" && d.Mode == Deny && allowed:
			t.Fatalf("explained as allowed, Decide denies:\n%s", out)
		case u.Scheme == "https" && d.Mode == Passthrough && !allowed:
			t.Fatalf("explained as denied, Decide passes through:\n%s", out)
		case (u.Scheme == "http" || d.Mode == Intercept) && allowed != (g.Allow && (g.Credential == nil || u.Scheme == "https")):
			t.Fatalf("explained as %q, Authorize says %+v:\n%s", verdict, g, out)
		}
	})
}

// FuzzConditionSyntax: the hours and rate of a rule's conditions. Accepted hours are a
// window of distinct minutes of the day that prints back (as Describe prints it) to itself;
// an accepted rate is 1 to 1,000,000 per second, minute, hour or day and prints back too.
func FuzzConditionSyntax(f *testing.F) {
	seeds := fuzzseed.New(f)
	for _, s := range []string{"09:00-17:00", "22:00-06:00", "00:00-24:00", "23:59-24:00", " 9:00-17:00", "09:00 - 17:00", "24:00-01:00", "10:60-11:00", "+1:00-02:00", "2/minute", "1000000/d", "0/s", "1000001/s", " 3 / hour ", "-1/s", "1e3/s", "5/fortnight"} {
		seeds.Add(s)
	}
	units := map[time.Duration]string{time.Second: "s", time.Minute: "m", time.Hour: "h", 24 * time.Hour: "d"}
	f.Fuzz(func(t *testing.T, s string) {
		if from, to, ok := parseHours(s); ok {
			if from < 0 || from >= 24*60 || to < 0 || to >= 24*60 || from == to {
				t.Fatalf("parseHours(%q) = %d, %d", s, from, to)
			}
			back := fmt.Sprintf("%02d:%02d-%02d:%02d", from/60, from%60, to/60, to%60)
			if f2, t2, ok := parseHours(back); !ok || f2 != from || t2 != to {
				t.Fatalf("parseHours(%q) = %d, %d; printed %q parses as %d, %d, %v", s, from, to, back, f2, t2, ok)
			}
		}
		if n, per, ok := parseRate(s); ok {
			unit, known := units[per]
			if n < 1 || n > 1000000 || !known {
				t.Fatalf("parseRate(%q) = %d per %v", s, n, per)
			}
			if n2, per2, ok := parseRate(fmt.Sprintf("%d/%s", n, unit)); !ok || n2 != n || per2 != per {
				t.Fatalf("parseRate(%q) does not print back", s)
			}
		}
	})
}

// FuzzMeterRestore: the token budgets state file (budgets.json). Accepted state prints
// (State) to a fixed point; rejected state changes nothing.
func FuzzMeterRestore(f *testing.F) {
	seeds := fuzzseed.New(f)
	m := NewMeter(func() time.Time { return time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC) })
	pol, err := Parse("policy.toml", []byte(stylesPolicy))
	if err != nil {
		f.Fatal(err)
	}
	m.Spend("bot", pol.Authorize(Request{Agent: "bot", Method: "POST", Host: "api.openai.test", Port: 443, Path: "/v1/x"}), 77)
	good := m.State()
	seeds.Add(good)
	seeds.Add([]byte(`{"version":1,"tokens":[{"agent":"a","rule":"r","day":"2026-02-30","tokens":1}]}`))
	seeds.Add([]byte(`{"version":1,"tokens":[{"agent":"a","rule":"r","day":"2026-02-28","tokens":-1}]}`))
	seeds.Add([]byte(`{"version":2,"tokens":[]}`))
	seeds.Add([]byte(`{"version":1,"tokens":[{"agent":"a","rule":"r","day":"0001-01-01","tokens":9223372036854775807},{"agent":"a","rule":"r","day":"9999-12-31","tokens":0}]}`))
	seeds.Add([]byte(`{"version":1,"tokens":null,"extra":{}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m := NewMeter(nil)
		if err := m.Restore(good); err != nil {
			t.Fatal(err)
		}
		if err := m.Restore(data); err != nil {
			if got := m.State(); !bytes.Equal(got, good) {
				t.Fatalf("a rejected state changed the meter: %s", got)
			}
			return
		}
		st := m.State()
		m2 := NewMeter(nil)
		if err := m2.Restore(st); err != nil {
			t.Fatalf("State %s does not restore: %v", st, err)
		}
		if st2 := m2.State(); !bytes.Equal(st, st2) {
			t.Fatalf("State is not a fixed point:\n%s\n%s", st, st2)
		}
	})
}
