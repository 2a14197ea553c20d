package policy

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// maxSize is the largest policy file Parse and Load accept.
const maxSize = 1 << 20

// Load reads and parses the policy file at path. A file that cannot be read
// gives a wrapped I/O error; a file that is not a valid policy gives Errors.
func Load(path string) (*Policy, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening policy: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading policy %s: %w", path, err)
	}
	return Parse(path, data)
}

// Parse validates a policy file and compiles it. filename is used only in
// error positions. On failure the error is Errors, holding every problem
// found, sorted by position.
func Parse(filename string, data []byte) (*Policy, error) {
	if filename == "" {
		filename = "<policy>"
	}
	if len(data) > maxSize {
		return nil, Errors{{File: filename, Line: 1, Col: 1, Msg: fmt.Sprintf("policy is larger than %d bytes", maxSize)}}
	}
	return parse(filename, data)
}

// parse is Parse without the size limit.
func parse(filename string, data []byte) (*Policy, error) {
	src := string(data)
	doc, err := decodeTOML(src)
	if err != nil {
		return nil, Errors{syntaxError(filename, newPositions(src), err)}
	}
	c := &checker{file: filename, pos: scanPositions(src)}
	raw := c.document(doc)
	if len(c.errs) > 0 {
		c.errs.sort()
		return nil, c.errs
	}
	return compile(raw, data), nil
}

// decodeTOML parses src into generic values. The TOML parser reports its own
// errors as values; the recover is a last guard so bad input can never crash
// the daemon.
func decodeTOML(src string) (doc map[string]any, err error) {
	defer func() {
		if r := recover(); r != nil {
			doc, err = nil, fmt.Errorf("TOML parser failed on this input")
		}
	}()
	if _, err := toml.Decode(src, &doc); err != nil {
		return nil, err
	}
	return doc, nil
}

// syntaxError converts a TOML parser error. The line and column come from
// the parser's byte offset (relative to the input after a BOM): its own
// column is wrong for errors at the start of a line.
func syntaxError(file string, pos *positions, err error) *Error {
	e := &Error{File: file, Line: 1, Col: 1, Msg: "invalid TOML: " + redactQuoted(err.Error())}
	var pe toml.ParseError
	if errors.As(err, &pe) {
		off := pe.Position.Start
		if pos.bom {
			off += len(utf8BOM)
		}
		e.Line, e.Col = pos.lineCol(max(off, 0))
		e.Msg = "invalid TOML: " + redactQuoted(pe.Message)
	}
	return e
}

// redactQuoted replaces the contents of double-quoted fragments in a TOML
// parser message with "…": the parser quotes the text it choked on, and an
// operator who pasted a secret value without quotes must not find it in logs.
func redactQuoted(msg string) string {
	var b strings.Builder
	for i := 0; i < len(msg); i++ {
		if msg[i] != '"' {
			b.WriteByte(msg[i])
			continue
		}
		b.WriteString(`"…`)
		for i++; i < len(msg) && msg[i] != '"'; i++ {
			if msg[i] == '\\' {
				i++
			}
		}
		if i < len(msg) {
			b.WriteByte('"')
		}
	}
	return b.String()
}

// quoteValue quotes a policy value for an error message, cut to 64 bytes.
// Only names, hosts, methods, paths and modes are ever quoted; secret names,
// header names and formats are not, in case a value was pasted there.
func quoteValue(s string) string {
	if len(s) > 64 {
		s = s[:64] + "…"
	}
	return strconv.Quote(s)
}

func typeName(v any) string {
	switch v.(type) {
	case string:
		return "string"
	case int64:
		return "integer"
	case float64:
		return "float"
	case bool:
		return "boolean"
	case time.Time:
		return "datetime"
	case []any:
		return "array"
	case []map[string]any:
		return "array of tables"
	case map[string]any:
		return "table"
	}
	return fmt.Sprintf("%T", v)
}

// checker walks the decoded document, collecting every error with its
// position.
type checker struct {
	file string
	pos  *positions
	errs Errors
}

func (c *checker) errf(field, format string, args ...any) {
	line, col := c.pos.lookup(field)
	c.errs = append(c.errs, &Error{File: c.file, Line: line, Col: col, Field: field, Msg: fmt.Sprintf(format, args...)})
}

// rawPolicy is a validated document, ready to compile.
type rawPolicy struct {
	agents map[string]Agent
	creds  map[string]*Credential
	rules  []*rawRule
}

type rawRule struct {
	path    string
	name    string
	agent   string
	hosts   []string // normalized patterns; hostOK[i] false if invalid
	hostOK  []bool
	ports   []uint16
	mode    Mode
	methods []string
	paths   []string
	cred    string
	cond    *Conditions
}

func (c *checker) document(doc map[string]any) *rawPolicy {
	c.keys("", doc, "version", "agents", "credentials", "rules")
	c.version(doc)
	raw := &rawPolicy{
		agents: c.agents(doc),
		creds:  make(map[string]*Credential),
	}
	credHostsOK := c.credentials(doc, raw.creds)
	raw.rules = c.rules(doc)
	c.references(raw, credHostsOK)
	c.shadowed(raw)
	c.envConflicts(raw)
	return raw
}

func (c *checker) version(doc map[string]any) {
	v, ok := doc["version"]
	switch n, isInt := v.(int64); {
	case !ok:
		c.errf("version", "required (version = 1)")
	case !isInt:
		c.errf("version", "expected integer, found %s", typeName(v))
	case n != 1:
		c.errf("version", "unsupported version %d (want 1)", n)
	}
}

func (c *checker) agents(doc map[string]any) map[string]Agent {
	agents := make(map[string]Agent)
	m, ok := c.table(doc, "", "agents")
	if !ok {
		return agents
	}
	for _, name := range sortedKeys(m) {
		path := childPath("agents", name)
		a := Agent{Name: name}
		agents[name] = a // known even if invalid, so rules do not cascade errors
		if !validName(name) {
			c.errf(path, "invalid agent name (want %s)", namePattern)
		}
		t, ok := c.tableValue(path, m[name])
		if !ok {
			continue
		}
		c.keys(path, t, "user", "cgroup")
		if u, ok := c.str(t, path, "user", false); ok && u != "" {
			if validUser(u) {
				a.User = u
			} else {
				c.errf(childPath(path, "user"), "invalid user %s (want a user name or uid)", quoteValue(u))
			}
		}
		if cg, ok := c.str(t, path, "cgroup", false); ok && cg != "" {
			if validCgroup(cg) {
				a.Cgroup = cg
			} else {
				c.errf(childPath(path, "cgroup"), "invalid cgroup path %s (want an absolute, clean path)", quoteValue(cg))
			}
		}
		agents[name] = a
	}
	return agents
}

func (c *checker) rules(doc map[string]any) []*rawRule {
	v, ok := doc["rules"]
	if !ok {
		return nil
	}
	var elems []any
	switch l := v.(type) {
	case []map[string]any:
		for _, e := range l {
			elems = append(elems, e)
		}
	case []any:
		elems = l
	default:
		c.errf("rules", "expected array of tables, found %s", typeName(v))
		return nil
	}
	var rules []*rawRule
	seen := make(map[string]string) // rule name -> field path of its first use
	for i, e := range elems {
		path := indexPath("rules", i)
		t, ok := c.tableValue(path, e)
		if !ok {
			continue
		}
		r := &rawRule{path: path, mode: Intercept, ports: []uint16{443}}
		rules = append(rules, r)
		c.keys(path, t, append([]string{"name", "agent", "hosts", "ports", "mode", "methods", "paths", "credential"}, conditionKeys...)...)
		if n, ok := c.str(t, path, "name", true); ok {
			np := childPath(path, "name")
			switch first, dup := seen[n]; {
			case !validName(n):
				c.errf(np, "invalid rule name %s (want %s)", quoteValue(n), namePattern)
			case dup:
				line, _ := c.pos.lookup(first)
				c.errf(np, "duplicate rule name %s (first at line %d)", quoteValue(n), line)
			default:
				seen[n] = np
				r.name = n
			}
		}
		r.agent, _ = c.str(t, path, "agent", true)
		r.hosts, r.hostOK, _ = c.hostList(t, path)
		if ports := c.portList(t, path); ports != nil {
			r.ports = ports
		}
		if m, ok := c.str(t, path, "mode", false); ok {
			switch m {
			case "intercept":
				r.mode = Intercept
			case "passthrough":
				r.mode = Passthrough
			default:
				c.errf(childPath(path, "mode"), "unknown mode %s (want \"intercept\" or \"passthrough\")", quoteValue(m))
			}
		}
		r.methods = c.methodList(t, path)
		r.paths = c.pathList(t, path)
		r.cond = c.conditions(t, path)
		if r.cond != nil && r.mode == Passthrough {
			for _, k := range conditionKeys {
				if _, ok := t[k]; ok {
					c.errf(childPath(path, k), "not allowed on a passthrough rule (its requests are not seen)")
					break
				}
			}
		}
		r.cred, _ = c.str(t, path, "credential", false)
	}
	return rules
}

// references checks what rules name: agents, credentials, and that each
// credential is bound to every host of the rules that use it.
func (c *checker) references(raw *rawPolicy, credHostsOK map[string]bool) {
	for _, r := range raw.rules {
		if _, ok := raw.agents[r.agent]; r.agent != "" && !ok {
			c.errf(childPath(r.path, "agent"), "unknown agent %s", quoteValue(r.agent))
		}
		if r.cred == "" {
			continue
		}
		cp := childPath(r.path, "credential")
		cr, ok := raw.creds[r.cred]
		switch {
		case r.mode == Passthrough:
			c.errf(cp, "not allowed on a passthrough rule (nothing is decrypted)")
			continue
		case !ok:
			c.errf(cp, "unknown credential %s", quoteValue(r.cred))
			continue
		case !credHostsOK[r.cred]:
			continue // its own host errors are reported
		}
		for j, h := range r.hosts {
			if !r.hostOK[j] || slices.ContainsFunc(cr.Hosts, func(p string) bool { return patternCovers(p, h) }) {
				continue
			}
			c.errf(indexPath(childPath(r.path, "hosts"), j), "credential %s is not bound to host %s", quoteValue(r.cred), quoteValue(h))
		}
	}
}

// keys reports every key of m that is not allowed, suggesting a close match.
func (c *checker) keys(path string, m map[string]any, allowed ...string) {
	for _, k := range sortedKeys(m) {
		if slices.Contains(allowed, k) {
			continue
		}
		msg := "unknown key"
		if s := closest(k, allowed); s != "" {
			msg += fmt.Sprintf(" (did you mean %q?)", s)
		}
		c.errf(childPath(path, k), "%s", msg)
	}
}

// table returns m[key] as a table; a missing key is no error.
func (c *checker) table(m map[string]any, parent, key string) (map[string]any, bool) {
	v, ok := m[key]
	if !ok {
		return nil, false
	}
	return c.tableValue(childPath(parent, key), v)
}

func (c *checker) tableValue(path string, v any) (map[string]any, bool) {
	t, ok := v.(map[string]any)
	if !ok {
		c.errf(path, "expected table, found %s", typeName(v))
	}
	return t, ok
}

// str returns m[key] as a string and whether it is present and a string.
func (c *checker) str(m map[string]any, parent, key string, required bool) (string, bool) {
	v, ok := m[key]
	if !ok {
		if required {
			c.errf(childPath(parent, key), "required")
		}
		return "", false
	}
	s, ok := v.(string)
	if !ok {
		c.errf(childPath(parent, key), "expected string, found %s", typeName(v))
	}
	return s, ok
}

// list returns m[key] as a non-empty array and whether it is present and valid.
func (c *checker) list(m map[string]any, parent, key string, required bool) ([]any, bool) {
	path := childPath(parent, key)
	v, ok := m[key]
	if !ok {
		if required {
			c.errf(path, "required")
		}
		return nil, false
	}
	l, ok := v.([]any)
	if !ok {
		c.errf(path, "expected array, found %s", typeName(v))
		return nil, false
	}
	if len(l) == 0 {
		if required {
			c.errf(path, "must not be empty")
		} else {
			c.errf(path, "must not be empty (leave it out to allow any)")
		}
		return nil, false
	}
	return l, true
}

// stringList returns the valid, normalized elements of an optional string
// array, or nil if it is absent.
func (c *checker) stringList(m map[string]any, parent, key string, norm func(string) (string, bool), bad string) []string {
	l, ok := c.list(m, parent, key, false)
	if !ok {
		return nil
	}
	out := make([]string, 0, len(l))
	for j, e := range l {
		ep := indexPath(childPath(parent, key), j)
		s, isStr := e.(string)
		if !isStr {
			c.errf(ep, "expected string, found %s", typeName(e))
			continue
		}
		n, ok := norm(s)
		if !ok {
			c.errf(ep, bad, quoteValue(s))
			continue
		}
		out = append(out, n)
	}
	return out
}

// hostList reads the required "hosts" array of patterns. It returns the
// normalized patterns (invalid ones empty), which are valid, and whether all
// were.
func (c *checker) hostList(m map[string]any, parent string) ([]string, []bool, bool) {
	l, ok := c.list(m, parent, "hosts", true)
	if !ok {
		return nil, nil, false
	}
	hosts := make([]string, len(l))
	valid := make([]bool, len(l))
	all := true
	for j, e := range l {
		ep := indexPath(childPath(parent, "hosts"), j)
		s, isStr := e.(string)
		if !isStr {
			c.errf(ep, "expected string, found %s", typeName(e))
			all = false
			continue
		}
		p, ok := normPattern(s)
		if !ok {
			c.errf(ep, "invalid host pattern %s (want a DNS name or *.name)", quoteValue(s))
			all = false
			continue
		}
		hosts[j], valid[j] = p, true
	}
	return hosts, valid, all
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// closest returns the allowed key within edit distance 2 of k (ignoring
// case), or "".
func closest(k string, allowed []string) string {
	best, bestD := "", 3
	for _, a := range allowed {
		if d := editDistance(strings.ToLower(k), a); d < bestD {
			best, bestD = a, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 64
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
