package policy

import (
	"errors"
	"os"
	"testing"

	"github.com/BurntSushi/toml"
)

func FuzzParse(f *testing.F) {
	example, err := os.ReadFile("testdata/example.toml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(string(example))
	f.Add(decidePolicy)
	f.Add(stylesPolicy)
	f.Add("version = 1\n[agents.a]\n[credentials.c]\nstyle = 'oauth2'\nsecret = 's'\nhosts = ['h.test']\ntoken_url = 'https://i.test/t'\nclient_id = 'x'\n[[rules]]\nname = 'r'\nagent = 'a'\nhosts = ['h.test']\ncredential = 'c'\nhours = '23:00-01:00'\nrate = '1/s'\n")
	f.Add("version = 1\nrules = [{name='a', agent='x', hosts=['h.test']}, 'r']\n")
	f.Add("version = 1\n[[rules]]\n[rules.x]\n[[rules.x.y]]\n\"a\\u0062\".'c' = \"\"\"\n[x]\"\"\"\n")
	f.Add(utf8BOM + "version = 1\r\n[agents.\"a b\"]\r\n")
	f.Add("a = [[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]\n")
	f.Add("x = 1979-05-27 07:32:00Z\ny = { a = [ { b = 'c' } ] }\n")
	f.Add("\"a.b\" = 1\n'x y'.z = 2\n\"\" = 3\n[ t . \"u\\\"v\" ]\nk = '''\n'''\n[[ a ]]\nb = [ # c\n  1, { d = [] }, ]\ne = {}\n")
	f.Add("a = \"\\x41\\e\\U0001F600\"\n\"\\x41\" = 1\n[\"\\u00e9\"]\nx = 'y'\n")
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
