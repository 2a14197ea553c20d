package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// Mode is what happens to a connection.
type Mode uint8

const (
	// Deny refuses the connection or request.
	Deny Mode = iota
	// Passthrough splices the connection to its destination without
	// decrypting it.
	Passthrough
	// Intercept terminates TLS so each request can be authorized.
	Intercept
)

func (m Mode) String() string {
	switch m {
	case Deny:
		return "deny"
	case Passthrough:
		return "passthrough"
	case Intercept:
		return "intercept"
	}
	return "mode(" + strconv.Itoa(int(m)) + ")"
}

// Agent is one agent the policy names.
type Agent struct {
	Name   string // also its cgroup directory name
	User   string // unix user `wirken exec` runs it as; "" if unset
	Cgroup string // existing cgroup to bind; "" if unset
}

// Decision is the connection-level verdict.
type Decision struct {
	Mode   Mode
	Rule   string // the deciding rule; "" when denied
	Reason string // why it was denied; "" otherwise
}

// Request is what Authorize needs from one HTTP request. Host is the
// request's host name without port; Path is its URL path without query
// (url.URL.Path; the escaped form works too).
type Request struct {
	Agent  string
	Method string
	Host   string
	Port   uint16
	Path   string
}

// Grant is the request-level verdict. Credential is nil when the rule
// injects none or the request is denied. On a denial Rule names the rule
// that came closest to matching, if any.
type Grant struct {
	Allow      bool
	Rule       string
	Credential *Credential
	Reason     string
	// Conditions are the allowing rule's conditions, nil if it has none. The caller checks
	// them (with a Meter) before it lets the request through.
	Conditions *Conditions
}

// Policy is a compiled, immutable policy. It is safe for concurrent use.
type Policy struct {
	digest string
	agents []Agent      // sorted by name
	creds  []Credential // sorted by name
	index  map[string]*agentIndex
	// placeholders maps each placeholder the policy generated to its credential.
	placeholders map[string]*Credential
	// env maps each agent to the placeholder variables `wirken exec` sets for it.
	env map[string]map[string]string
}

type rule struct {
	name    string
	exact   []string // normalized exact hosts
	wild    []string // normalized "*.suffix" patterns
	ports   []uint16
	mode    Mode
	methods []string // nil: any
	paths   []string // nil: any
	cred    *Credential
	cond    *Conditions // nil: none
}

func (r *rule) matchHost(host string) bool {
	if slices.Contains(r.exact, host) {
		return true
	}
	for _, p := range r.wild {
		if matchNorm(p, host) {
			return true
		}
	}
	return false
}

func (r *rule) matchPort(port uint16) bool { return slices.Contains(r.ports, port) }

func (r *rule) matchMethod(m string) bool { return r.methods == nil || slices.Contains(r.methods, m) }

func (r *rule) matchPath(p string) bool {
	return r.paths == nil || prefixMatch(r.paths, p)
}

// agentIndex holds one agent's rules. byHost maps each exact host named by
// any of the agent's rules to every rule matching it (exact or wildcard), in
// file order. A host not in byHost can match only wildcard rules.
type agentIndex struct {
	byHost   map[string][]*rule
	wildcard []*rule // rules with a wildcard host, in file order
}

// candidates returns the rules that may match host, and whether all of them
// are known to match it.
func (ai *agentIndex) candidates(host string) ([]*rule, bool) {
	if rs, ok := ai.byHost[host]; ok {
		return rs, true
	}
	return ai.wildcard, false
}

func compile(raw *rawPolicy, src []byte) *Policy {
	sum := sha256.Sum256(src)
	p := &Policy{
		digest: hex.EncodeToString(sum[:]),
		index:  make(map[string]*agentIndex, len(raw.agents)),

		placeholders: make(map[string]*Credential),
		env:          make(map[string]map[string]string),
	}
	for _, c := range raw.creds {
		p.creds = append(p.creds, *c)
		if c.Placeholder != "" {
			p.placeholders[c.Placeholder] = c
		}
	}
	slices.SortFunc(p.creds, func(a, b Credential) int { return strings.Compare(a.Name, b.Name) })
	perAgent := make(map[string][]*rule)
	for _, rr := range raw.rules {
		r := &rule{
			name:    rr.name,
			ports:   rr.ports,
			mode:    rr.mode,
			methods: rr.methods,
			paths:   rr.paths,
			cond:    rr.cond,
		}
		if rr.cred != "" {
			r.cred = raw.creds[rr.cred]
		}
		for _, h := range rr.hosts {
			if strings.HasPrefix(h, "*.") {
				r.wild = append(r.wild, h)
			} else {
				r.exact = append(r.exact, h)
			}
		}
		perAgent[rr.agent] = append(perAgent[rr.agent], r)
		if r.cred != nil && r.cred.Env != "" {
			if p.env[rr.agent] == nil {
				p.env[rr.agent] = make(map[string]string)
			}
			p.env[rr.agent][r.cred.Env] = r.cred.Placeholder
		}
	}
	for name, a := range raw.agents {
		p.agents = append(p.agents, a)
		ai := &agentIndex{byHost: make(map[string][]*rule)}
		rules := perAgent[name]
		for _, r := range rules {
			if len(r.wild) > 0 {
				ai.wildcard = append(ai.wildcard, r)
			}
			for _, h := range r.exact {
				ai.byHost[h] = nil
			}
		}
		for h := range ai.byHost {
			var rs []*rule
			for _, r := range rules {
				if r.matchHost(h) {
					rs = append(rs, r)
				}
			}
			ai.byHost[h] = rs
		}
		p.index[name] = ai
	}
	slices.SortFunc(p.agents, func(a, b Agent) int { return strings.Compare(a.Name, b.Name) })
	return p
}

// PlaceholderCredential returns the credential whose placeholder (or placeholder access key
// id) is s, or nil.
func (p *Policy) PlaceholderCredential(s string) *Credential { return p.placeholders[s] }

// AgentEnv returns the environment variables `wirken exec` sets for agent: for each
// credential its rules inject that names an env, that variable set to the placeholder.
func (p *Policy) AgentEnv(agent string) map[string]string { return maps.Clone(p.env[agent]) }

// Digest returns the SHA-256 of the policy source, in hex, for the audit log.
func (p *Policy) Digest() string { return p.digest }

// Agents returns the agents the policy names, sorted by name.
func (p *Policy) Agents() []Agent { return slices.Clone(p.agents) }

// Credentials returns every credential, sorted by name.
func (p *Policy) Credentials() []Credential { return slices.Clone(p.creds) }

// Agent returns the named agent.
func (p *Policy) Agent(name string) (Agent, bool) {
	i, ok := slices.BinarySearchFunc(p.agents, name, func(a Agent, n string) int { return strings.Compare(a.Name, n) })
	if !ok {
		return Agent{}, false
	}
	return p.agents[i], true
}

// Decide gives the connection-level verdict for agent connecting to host
// (TLS SNI or HTTP Host name, any case, "" if unknown) on the original
// destination port. If any of the agent's rules matching host:port
// intercepts, the connection is intercepted (Rule is the first such rule in
// file order); otherwise, if one passes through, it is passed through;
// otherwise it is denied. It does not allocate unless it denies or host
// holds upper-case letters.
func (p *Policy) Decide(agent, host string, port uint16) Decision {
	ai, ok := p.index[agent]
	if !ok {
		return Decision{Mode: Deny, Reason: "unknown agent " + printable(agent)}
	}
	h, ok := normHost(host)
	if !ok {
		return Decision{Mode: Deny, Reason: badHostReason(agent, host, port)}
	}
	rules, matched := ai.candidates(h)
	var pass *rule
	for _, r := range rules {
		if !r.matchPort(port) || !matched && !r.matchHost(h) {
			continue
		}
		if r.mode == Intercept {
			return Decision{Mode: Intercept, Rule: r.name}
		}
		if pass == nil {
			pass = r
		}
	}
	if pass != nil {
		return Decision{Mode: Passthrough, Rule: pass.name}
	}
	return Decision{Mode: Deny, Reason: "no rule for agent " + agent + " to " + hostPort(h, port)}
}

// Authorize gives the verdict for one intercepted HTTP request: the first
// intercept rule in file order matching its agent, host, port, method and
// path prefix allows it. The rule's credential is returned only if the
// request host is one the credential is bound to; otherwise the request is
// denied. A rule with path prefixes matches only paths whose meaning cannot
// change under normalization: no empty, "." or ".." segments, no backslash,
// no percent-encoded '.', '/' or '\', no '?', '#' or control character.
// It does not allocate unless it denies or the host holds upper-case
// letters.
func (p *Policy) Authorize(req Request) Grant {
	ai, ok := p.index[req.Agent]
	if !ok {
		return Grant{Reason: "unknown agent " + printable(req.Agent)}
	}
	h, ok := normHost(req.Host)
	if !ok {
		return Grant{Reason: badHostReason(req.Agent, req.Host, req.Port)}
	}
	rules, matched := ai.candidates(h)
	// How far the closest rule got, to say what did not match.
	const (
		none = iota
		hostPortOnly
		intercepts
		method
	)
	stage, closest := none, ""
	note := func(s int, r *rule) {
		if s > stage {
			stage, closest = s, r.name
		}
	}
	for _, r := range rules {
		if !r.matchPort(req.Port) || !matched && !r.matchHost(h) {
			continue
		}
		note(hostPortOnly, r)
		if r.mode != Intercept {
			continue
		}
		note(intercepts, r)
		if !r.matchMethod(req.Method) {
			continue
		}
		note(method, r)
		if !r.matchPath(req.Path) {
			continue
		}
		if r.cred != nil {
			if why := r.cred.unbound(h, req.Port, req.Method, req.Path); why != "" {
				return Grant{Rule: r.name, Reason: why}
			}
		}
		return Grant{Allow: true, Rule: r.name, Credential: r.cred, Conditions: r.cond}
	}
	to := " for agent " + req.Agent + " to " + hostPort(h, req.Port)
	switch stage {
	case hostPortOnly:
		return Grant{Rule: closest, Reason: "no intercept rule" + to}
	case intercepts:
		return Grant{Rule: closest, Reason: "method " + printable(req.Method) + " not allowed" + to}
	case method:
		return Grant{Rule: closest, Reason: "path not allowed" + to}
	}
	return Grant{Reason: "no rule" + to}
}

func hostPort(host string, port uint16) string {
	return host + ":" + strconv.Itoa(int(port))
}

func badHostReason(agent, host string, port uint16) string {
	if host == "" {
		return "no host name for agent " + agent + " to port " + strconv.Itoa(int(port))
	}
	return "invalid host name " + printable(host) + " for agent " + agent
}

// printable returns s if it is short and made of safe characters, or else a
// quoted, shortened form, so caller-supplied text cannot forge log lines.
func printable(s string) string {
	if len(s) > 64 {
		return strconv.Quote(s[:64] + "…")
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-_.:*", c) >= 0) {
			return strconv.Quote(s)
		}
	}
	if s == "" {
		return `""`
	}
	return s
}
