package policy

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// lines joins test input lines with "\n" and a final newline.
func lines(ls ...string) string { return strings.Join(ls, "\n") + "\n" }

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []string
	}{
		{
			name: "brief example position",
			src: lines(
				"version = 1",
				"",
				"[agents.demo]",
				"user = \"nobody\"",
				"",
				"[credentials.echo]",
				"secret = \"demo\"",
				"hosts = [\"api.example.test\"]",
				"header = \"Authorization\"",
				"",
				"[[rules]]",
				"name = \"one\"",
				"agent = \"demo\"",
				"hosts = [\"www.example.test\"]",
				"",
				"[[rules]]",
				"name = \"two\"",
				"agent = \"demo\"",
				"hosts = [\"api.example.test\"]",
				"credential = \"ech0\"",
			),
			want: []string{`policy.toml:20:1: rules[1].credential: unknown credential "ech0"`},
		},
		{
			name: "syntax error",
			src:  lines("version = 1", "x = "),
			want: []string{`policy.toml:2:5: invalid TOML: expected value but found '\n' instead`},
		},
		{
			name: "syntax error does not echo the bad text",
			src:  lines("version = 1", "x = sk-live-abcdef"),
			want: []string{`policy.toml:2:5: invalid TOML: expected value but found "…" instead`},
		},
		{
			name: "duplicate key is a syntax error",
			src:  lines("version = 1", "version = 1"),
			want: []string{`policy.toml:2:1: invalid TOML: Key 'version' has already been defined.`},
		},
		{
			name: "missing version",
			src:  lines("[agents.demo]"),
			want: []string{`policy.toml:1:1: version: required (version = 1)`},
		},
		{
			name: "wrong version",
			src:  lines("# comment", "version = 2"),
			want: []string{`policy.toml:2:1: version: unsupported version 2 (want 1)`},
		},
		{
			name: "version type",
			src:  lines("version = \"1\""),
			want: []string{`policy.toml:1:1: version: expected integer, found string`},
		},
		{
			name: "misspelled top-level key",
			src:  lines("verison = 1"),
			want: []string{
				`policy.toml:1:1: verison: unknown key (did you mean "version"?)`,
				`policy.toml:1:1: version: required (version = 1)`,
			},
		},
		{
			name: "unknown key without suggestion",
			src:  lines("version = 1", "[telemetry]", "on = true"),
			want: []string{`policy.toml:2:1: telemetry: unknown key`},
		},
		{
			name: "agents",
			src: lines(
				"version = 1",
				"[agents.Demo]",
				"usr = 'x'",
				"user = 5",
				"cgroup = 'a/b'",
				"[agents.\"a b\"]",
				"[agents.ok]",
				"  user = 'Root Admin'",
				"  cgroup = '/a/../b'",
			),
			want: []string{
				`policy.toml:2:1: agents.Demo: invalid agent name (want ^[a-z][a-z0-9_-]{0,62}$)`,
				`policy.toml:3:1: agents.Demo.usr: unknown key (did you mean "user"?)`,
				`policy.toml:4:1: agents.Demo.user: expected string, found integer`,
				`policy.toml:5:1: agents.Demo.cgroup: invalid cgroup path "a/b" (want an absolute, clean path)`,
				`policy.toml:6:1: agents."a b": invalid agent name (want ^[a-z][a-z0-9_-]{0,62}$)`,
				`policy.toml:8:3: agents.ok.user: invalid user "Root Admin" (want a user name or uid)`,
				`policy.toml:9:3: agents.ok.cgroup: invalid cgroup path "/a/../b" (want an absolute, clean path)`,
			},
		},
		{
			name: "agents of the wrong type",
			src:  lines("version = 1", "[[agents]]", "name = 'x'"),
			want: []string{`policy.toml:2:1: agents: expected table, found array of tables`},
		},
		{
			name: "agent of the wrong type, dotted key",
			src:  lines("version = 1", "agents.demo = 'x'"),
			want: []string{`policy.toml:2:1: agents.demo: expected table, found string`},
		},
		{
			name: "credentials",
			src: lines(
				"version = 1",
				"[credentials.x]",
				"",
				"[credentials.y]",
				"secret = 'Bad Secret'",
				"hosts = ['*', 'a..b', '*.*.x', 'http://x', '', 5, 'OK.Test.']",
				"header = 'Host'",
				"format = 'Bearer x'",
				"[credentials.z]",
				"secret = 'z'",
				"hosts = []",
				"header = 'Bad Header'",
				"format = '{secret}{secret}'",
				"[credentials.w]",
				"secret = 'w'",
				"hosts = 'w.test'",
				"header = 'X-Key'",
				"format = \"{secret}\\r\\nX-Evil: 1\"",
			),
			want: []string{
				`policy.toml:2:1: credentials.x.header: required`,
				`policy.toml:2:1: credentials.x.hosts: required`,
				`policy.toml:2:1: credentials.x.secret: required`,
				`policy.toml:5:1: credentials.y.secret: invalid secret name (want ^[a-z][a-z0-9_-]{0,62}$)`,
				`policy.toml:6:10: credentials.y.hosts[0]: invalid host pattern "*" (want a DNS name or *.name)`,
				`policy.toml:6:15: credentials.y.hosts[1]: invalid host pattern "a..b" (want a DNS name or *.name)`,
				`policy.toml:6:23: credentials.y.hosts[2]: invalid host pattern "*.*.x" (want a DNS name or *.name)`,
				`policy.toml:6:32: credentials.y.hosts[3]: invalid host pattern "http://x" (want a DNS name or *.name)`,
				`policy.toml:6:44: credentials.y.hosts[4]: invalid host pattern "" (want a DNS name or *.name)`,
				`policy.toml:6:48: credentials.y.hosts[5]: expected string, found integer`,
				`policy.toml:7:1: credentials.y.header: header "Host" may not be set by a credential`,
				`policy.toml:8:1: credentials.y.format: must contain {secret} exactly once`,
				`policy.toml:11:1: credentials.z.hosts: must not be empty`,
				`policy.toml:12:1: credentials.z.header: invalid header name (want an HTTP token)`,
				`policy.toml:13:1: credentials.z.format: must contain {secret} exactly once`,
				`policy.toml:16:1: credentials.w.hosts: expected array, found string`,
				`policy.toml:18:1: credentials.w.format: must not contain control characters`,
			},
		},
		{
			name: "rule fields",
			src: lines(
				"version = 1",
				"[agents.demo]",
				"[[rules]]",
				"[[rules]]",
				"name = 'Bad'",
				"agent = 'demo'",
				"hosts = ['ok.test']",
				"ports = [0, 70000, '443', 8443]",
				"mode = 'inspect'",
				"methods = ['get', 'POST', 'GE T']",
				"paths = ['v1', '/a/../b', '/a//b', '/%2e%2e/', '/ok/']",
				"credntial = 'x'",
				"[[rules]]",
				"name = 'empty'",
				"agent = 'demo'",
				"hosts = ['ok.test']",
				"methods = []",
				"paths = []",
				"ports = []",
			),
			want: []string{
				`policy.toml:3:1: rules[0].agent: required`,
				`policy.toml:3:1: rules[0].hosts: required`,
				`policy.toml:3:1: rules[0].name: required`,
				`policy.toml:5:1: rules[1].name: invalid rule name "Bad" (want ^[a-z][a-z0-9_-]{0,62}$)`,
				`policy.toml:8:10: rules[1].ports[0]: port 0 out of range 1..65535`,
				`policy.toml:8:13: rules[1].ports[1]: port 70000 out of range 1..65535`,
				`policy.toml:8:20: rules[1].ports[2]: expected integer, found string`,
				`policy.toml:9:1: rules[1].mode: unknown mode "inspect" (want "intercept" or "passthrough")`,
				`policy.toml:10:12: rules[1].methods[0]: invalid method "get" (want an upper-case HTTP token)`,
				`policy.toml:10:27: rules[1].methods[2]: invalid method "GE T" (want an upper-case HTTP token)`,
				`policy.toml:11:10: rules[1].paths[0]: invalid path prefix "v1" (want an absolute path without //, . or .. segments, %2e, %2f, %5c, ? or #)`,
				`policy.toml:11:16: rules[1].paths[1]: invalid path prefix "/a/../b" (want an absolute path without //, . or .. segments, %2e, %2f, %5c, ? or #)`,
				`policy.toml:11:27: rules[1].paths[2]: invalid path prefix "/a//b" (want an absolute path without //, . or .. segments, %2e, %2f, %5c, ? or #)`,
				`policy.toml:11:36: rules[1].paths[3]: invalid path prefix "/%2e%2e/" (want an absolute path without //, . or .. segments, %2e, %2f, %5c, ? or #)`,
				`policy.toml:12:1: rules[1].credntial: unknown key (did you mean "credential"?)`,
				`policy.toml:17:1: rules[2].methods: must not be empty (leave it out to allow any)`,
				`policy.toml:18:1: rules[2].paths: must not be empty (leave it out to allow any)`,
				`policy.toml:19:1: rules[2].ports: must not be empty (leave it out to allow any)`,
			},
		},
		{
			name: "rule references",
			src: lines(
				"version = 1",
				"[agents.demo]",
				"[credentials.echo]",
				"secret = 'demo'",
				"hosts = ['api.example.test', '*.svc.test']",
				"header = 'Authorization'",
				"[[rules]]",
				"name = 'a'",
				"agent = 'dmeo'",
				"hosts = ['api.example.test', 'x.svc.test', '*.svc.test', '*.a.svc.test', 'svc.test', 'other.test', '*.test']",
				"credential = 'echo'",
				"[[rules]]",
				"name = 'b'",
				"agent = 'demo'",
				"hosts = ['api.example.test']",
				"mode = 'passthrough'",
				"credential = 'echo'",
				"[[rules]]",
				"name = 'a'",
				"agent = 'demo'",
				"hosts = ['api.example.test']",
				"credential = 'ech0'",
			),
			want: []string{
				`policy.toml:9:1: rules[0].agent: unknown agent "dmeo"`,
				`policy.toml:10:74: rules[0].hosts[4]: credential "echo" is not bound to host "svc.test"`,
				`policy.toml:10:86: rules[0].hosts[5]: credential "echo" is not bound to host "other.test"`,
				`policy.toml:10:100: rules[0].hosts[6]: credential "echo" is not bound to host "*.test"`,
				`policy.toml:17:1: rules[1].credential: not allowed on a passthrough rule (nothing is decrypted)`,
				`policy.toml:19:1: rules[2].name: duplicate rule name "a" (first at line 8)`,
				`policy.toml:22:1: rules[2].credential: unknown credential "ech0"`,
			},
		},
		{
			name: "inline rules",
			src: lines(
				"version = 1",
				"rules = [{name='a', agent='x', hosts=['h.test']},",
				"  { name = 'a', agent = 'x', hosts = [] }, 'r']",
			),
			want: []string{
				`policy.toml:2:21: rules[0].agent: unknown agent "x"`,
				`policy.toml:3:5: rules[1].name: duplicate rule name "a" (first at line 2)`,
				`policy.toml:3:17: rules[1].agent: unknown agent "x"`,
				`policy.toml:3:30: rules[1].hosts: must not be empty`,
				`policy.toml:3:44: rules[2]: expected table, found string`,
			},
		},
		{
			name: "rules of the wrong type",
			src:  lines("version = 1", "[rules]"),
			want: []string{`policy.toml:2:1: rules: expected array of tables, found table`},
		},
		{
			name: "CRLF line endings and quoted keys",
			src: strings.Join([]string{
				"version = 1",
				"[agents.\"demo\"]",
				"[[rules]]",
				"'name' = 'r'",
				"\"agent\" = 'demo'",
				"hosts = ['a.test']",
				"  \"cred\\u0065ntial\" = 'nope'",
				"",
			}, "\r\n"),
			want: []string{`policy.toml:7:3: rules[0].credential: unknown credential "nope"`},
		},
		{
			name: "positions after multi-line strings and nested tables",
			src: lines(
				"version = 1",
				"[agents.demo]",
				"user = '''",
				"x = 1",
				"'''",
				"cgroup = \"\"\"",
				"[[rules]]\"\"\"",
				"[[rules]]",
				"name = 'r'",
				"agent = 'demo'",
				"hosts = ['a.test']",
				"[rules.extra]",
				"[[rules]]",
				"name = 's'",
				"agent = 'demo'",
				"hosts = [",
				"  'a.test', # first",
				"  'b..test',",
				"]",
				"mode = { x = 1 }",
			),
			want: []string{
				`policy.toml:3:1: agents.demo.user: invalid user "x = 1\n" (want a user name or uid)`,
				`policy.toml:6:1: agents.demo.cgroup: invalid cgroup path "[[rules]]" (want an absolute, clean path)`,
				`policy.toml:12:1: rules[0].extra: unknown key`,
				`policy.toml:18:3: rules[1].hosts[1]: invalid host pattern "b..test" (want a DNS name or *.name)`,
				`policy.toml:20:1: rules[1].mode: expected string, found table`,
			},
		},
		{
			name: "byte order mark",
			src:  utf8BOM + lines("verzion = 1"),
			want: []string{
				`policy.toml:1:1: version: required (version = 1)`,
				`policy.toml:1:1: verzion: unknown key (did you mean "version"?)`,
			},
		},
		{
			name: "too large",
			src:  "version = 1\n" + strings.Repeat("#", maxSize),
			want: []string{`policy.toml:1:1: policy is larger than 1048576 bytes`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkParseErrors(t, tt.src, tt.want) })
	}
}

// checkParseErrors parses src as policy.toml and wants exactly the errors want.
func checkParseErrors(t *testing.T, src string, want []string) {
	t.Helper()
	checkScanner(t, src)
	p, err := Parse("policy.toml", []byte(src))
	if p != nil {
		t.Fatalf("Parse returned a policy for a bad file")
	}
	var errs Errors
	if !errors.As(err, &errs) {
		t.Fatalf("error %T is not Errors: %v", err, err)
	}
	got := strings.Split(errs.Error(), "\n")
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, e := range errs {
		if e.Line < 1 || e.Col < 1 || e.File != "policy.toml" {
			t.Errorf("bad position in %+v", e)
		}
	}
}

func TestParseGood(t *testing.T) {
	tests := []struct {
		name   string
		src    string
		agents []Agent
	}{
		{name: "empty policy", src: lines("version = 1")},
		{
			name: "agents sorted, empty fields",
			src: lines(
				"version = 1",
				"[agents.zeta]",
				"[agents.alpha]",
				"user = '65534'",
				"[agents.mid]",
				"user = ''",
				"cgroup = '/system.slice/x.service'",
			),
			agents: []Agent{{Name: "alpha", User: "65534"}, {Name: "mid", Cgroup: "/system.slice/x.service"}, {Name: "zeta"}},
		},
		{
			name: "inline tables and dotted keys",
			src: lines(
				"version = 1",
				"agents.demo.user = 'nobody'",
				"credentials.c = { secret = 's', hosts = ['A.Test.'], header = 'X-Api-Key' }",
				"rules = [ { name = 'r', agent = 'demo', hosts = ['a.test'], credential = 'c' } ]",
			),
			agents: []Agent{{Name: "demo", User: "nobody"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse("p.toml", []byte(tt.src))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			got := p.Agents()
			if len(got) != len(tt.agents) {
				t.Fatalf("Agents() = %+v, want %+v", got, tt.agents)
			}
			for i := range got {
				if got[i] != tt.agents[i] {
					t.Errorf("Agents()[%d] = %+v, want %+v", i, got[i], tt.agents[i])
				}
				if a, ok := p.Agent(got[i].Name); !ok || a != got[i] {
					t.Errorf("Agent(%q) = %+v, %v", got[i].Name, a, ok)
				}
			}
			if _, ok := p.Agent("nobody-here"); ok {
				t.Error("Agent found an agent the policy does not name")
			}
			if len(p.Digest()) != 64 {
				t.Errorf("Digest() = %q, want 64 hex digits", p.Digest())
			}
		})
	}
}

func TestExampleAndLoad(t *testing.T) {
	p, err := Load("testdata/example.toml")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	// sha256sum testdata/example.toml
	data, err := os.ReadFile("testdata/example.toml")
	if err != nil {
		t.Fatal(err)
	}
	q, err := Parse("x", data)
	if err != nil {
		t.Fatal(err)
	}
	if p.Digest() != q.Digest() {
		t.Errorf("digest differs between Load and Parse of the same bytes")
	}
	r, _ := Parse("x", append(data, '\n'))
	if r.Digest() == p.Digest() {
		t.Errorf("digest did not change with the source")
	}
	names := []string{}
	for _, a := range p.Agents() {
		names = append(names, a.Name)
	}
	if strings.Join(names, ",") != "builder,demo" {
		t.Errorf("agents = %v", names)
	}
	// Agents returns a copy: changing it does not change the policy.
	p.Agents()[0].Name = "changed"
	if a, _ := p.Agent("builder"); a.Cgroup != "/system.slice/builder.service" {
		t.Errorf("Agent(builder) = %+v", a)
	}
	g := p.Authorize(Request{Agent: "builder", Method: "GET", Host: "api.github.test", Port: 443, Path: "/"})
	if !g.Allow || g.Credential == nil || g.Credential.Format != "token {secret}" || g.Credential.Secret != "github-token" {
		t.Errorf("Authorize = %+v", g)
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(filepath.Join(dir, "missing.toml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want not-exist", err)
	}
	bad := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(bad, []byte("version = 3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(bad)
	var errs Errors
	if !errors.As(err, &errs) || len(errs) != 1 || errs[0].File != bad || errs[0].Field != "version" {
		t.Errorf("Load(bad) = %v", err)
	}
	big := filepath.Join(dir, "big.toml")
	if err := os.WriteFile(big, []byte(strings.Repeat("#", maxSize+10)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(big); !errors.As(err, &errs) || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("Load(big) = %v", err)
	}
}

func TestErrorFormat(t *testing.T) {
	es := Errors{
		{File: "f.toml", Line: 3, Col: 7, Field: "rules[0].name", Msg: "required"},
		{File: "f.toml", Line: 1, Col: 2, Msg: "invalid TOML: x"},
	}
	want := "f.toml:3:7: rules[0].name: required\nf.toml:1:2: invalid TOML: x"
	if es.Error() != want {
		t.Errorf("Errors.Error() = %q, want %q", es.Error(), want)
	}
	es.sort()
	if es[0].Line != 1 {
		t.Errorf("sort did not order by position")
	}
}

func TestPositionFallback(t *testing.T) {
	src := lines("version = 1", "", "[[rules]]", "name = 'x'", "[[rules]]", "  [rules.sub]", "  k = 1")
	p := scanPositions(src)
	tests := []struct {
		path      string
		line, col int
	}{
		{"version", 1, 1},
		{"rules[0]", 3, 1},
		{"rules[0].name", 4, 1},
		{"rules[0].missing", 3, 1},
		{"rules[1]", 5, 1},
		{"rules[1].sub", 6, 3},
		{"rules[1].sub.k", 7, 3},
		{"rules[1].sub.k[3]", 7, 3},
		{"rules[7].name", 3, 1}, // an unknown index falls back to the array
		{`nothing."a.b"[0]`, 1, 1},
	}
	for _, tt := range tests {
		line, col := p.lookup(tt.path)
		if line != tt.line || col != tt.col {
			t.Errorf("lookup(%s) = %d:%d, want %d:%d", tt.path, line, col, tt.line, tt.col)
		}
	}
}
