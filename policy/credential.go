package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"net/textproto"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// Style is how a credential is injected into a request.
type Style uint8

const (
	// Header sets one header to Format with {secret} replaced by the value.
	Header Style = iota
	// Query sets one query parameter to the value.
	Query
	// Basic sets HTTP basic authentication with User and the value as password.
	Basic
	// Placeholder replaces the credential's Placeholder wherever it appears in a header value.
	Placeholder
	// SigV4 re-signs an AWS Signature Version 4 request that the agent signed with the
	// placeholder access key id, using AccessKeyID and the value as secret access key.
	SigV4
	// OAuth2 mints an access token with the client-credentials grant (ClientID and the value
	// as client secret) and sends it as "Authorization: Bearer <token>".
	OAuth2
)

var styleNames = []string{"header", "query", "basic", "placeholder", "sigv4", "oauth2"}

func (s Style) String() string {
	if int(s) < len(styleNames) {
		return styleNames[s]
	}
	return "style(" + strconv.Itoa(int(s)) + ")"
}

// Credential says how to inject one vault secret. Secret is the vault secret's name, never
// its value. Hosts are normalized patterns (lower case, no trailing dot) the credential is
// bound to; Ports, Paths and Methods narrow the binding further (nil: any). A *Credential
// returned by Authorize belongs to the policy and must not be modified.
type Credential struct {
	Name    string
	Secret  string
	Style   Style
	Hosts   []string
	Ports   []uint16
	Paths   []string
	Methods []string

	Header string // Header: the header to set
	Format string // Header: holds "{secret}" exactly once
	Param  string // Query: the query parameter to set
	User   string // Basic: the user name

	// Placeholder is the stand-in the agent holds instead of the secret (Placeholder) or
	// instead of the access key id (SigV4). It is not secret: it is derived from the
	// credential's definition, so it stays the same across reloads of the same policy.
	Placeholder string
	// Env names the environment variable `wirken exec` sets to Placeholder ("" for none).
	Env string
	// SwapHeaders are the only headers a Placeholder credential is swapped in (canonical
	// form; nil: any header).
	SwapHeaders []string

	AccessKeyID string // SigV4: the real access key id (not secret)

	TokenURL string   // OAuth2: the token endpoint (https)
	ClientID string   // OAuth2
	Scopes   []string // OAuth2: requested scopes (nil: none)
}

const secretPlaceholder = "{secret}"

// Placeholder prefixes. Every placeholder the policy generates starts with one of them, so the
// proxy can find one in any request with a substring search.
const (
	PlaceholderPrefix   = "wkn_ph_"
	AccessKeyIDPrefix   = "AKIAWKN"
	placeholderHexChars = 32
)

// Render returns the header value: Format with {secret} replaced by secret,
// built in one allocation. It does not keep secret. If Format does not hold
// {secret} (a Credential not made by Parse), Render returns "" rather than a
// value without the secret.
func (c *Credential) Render(secret []byte) string {
	before, after, ok := strings.Cut(c.Format, secretPlaceholder)
	if !ok {
		return ""
	}
	var b strings.Builder
	b.Grow(len(before) + len(secret) + len(after))
	b.WriteString(before)
	b.Write(secret)
	b.WriteString(after)
	return b.String()
}

// bound reports whether the normalized host is within the credential's
// bound hosts.
func (c *Credential) bound(host string) bool {
	for _, p := range c.Hosts {
		if matchNorm(p, host) {
			return true
		}
	}
	return false
}

// unbound returns why the request is outside the credential's binding, or "" if it is
// within it. It does not allocate when the request is within it.
func (c *Credential) unbound(host string, port uint16, method, path string) string {
	switch {
	case !c.bound(host):
		return "credential " + c.Name + " is not bound to host " + host
	case c.Ports != nil && !slices.Contains(c.Ports, port):
		return "credential " + c.Name + " is not bound to port " + strconv.Itoa(int(port))
	case c.Methods != nil && !slices.Contains(c.Methods, method):
		return "credential " + c.Name + " is not bound to method " + printable(method)
	case c.Paths != nil && !prefixMatch(c.Paths, path):
		return "credential " + c.Name + " is not bound to this path"
	}
	return ""
}

func prefixMatch(prefixes []string, p string) bool {
	if !cleanPath(p) {
		return false
	}
	for _, prefix := range prefixes {
		if strings.HasPrefix(p, prefix) {
			return true
		}
	}
	return false
}

// derivePlaceholder returns the stand-in for credential c: a hash of its definition, so it
// is stable for a given policy and differs between credentials.
func derivePlaceholder(c *Credential) string {
	h := sha256.New()
	for _, s := range append([]string{"wirken placeholder v1", c.Name, c.Secret, c.Style.String(), c.AccessKeyID}, c.Hosts...) {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if c.Style == SigV4 {
		// An access key id is 20 upper-case letters and digits.
		return AccessKeyIDPrefix + strings.ToUpper(sum[:20-len(AccessKeyIDPrefix)])
	}
	return PlaceholderPrefix + sum[:placeholderHexChars]
}

// credential style keys: every style accepts the common ones.
var (
	commonCredKeys = []string{"style", "secret", "hosts", "ports", "paths", "methods"}
	styleKeys      = map[Style][]string{
		Header:      {"header", "format"},
		Query:       {"param"},
		Basic:       {"user"},
		Placeholder: {"env", "headers"},
		SigV4:       {"access_key_id", "env"},
		OAuth2:      {"token_url", "client_id", "scopes"},
	}
)

// credentials fills creds and returns which credentials have only valid host
// patterns (only those are checked against rule hosts).
func (c *checker) credentials(doc map[string]any, creds map[string]*Credential) map[string]bool {
	hostsOK := make(map[string]bool)
	m, ok := c.table(doc, "", "credentials")
	if !ok {
		return hostsOK
	}
	for _, name := range sortedKeys(m) {
		path := childPath("credentials", name)
		cr := &Credential{Name: name, Format: "{secret}"}
		creds[name] = cr
		if !validName(name) {
			c.errf(path, "invalid credential name (want %s)", namePattern)
		}
		t, ok := c.tableValue(path, m[name])
		if !ok {
			continue
		}
		if s, ok := c.str(t, path, "style", false); ok {
			i := slices.Index(styleNames, s)
			if i < 0 {
				c.errf(childPath(path, "style"), "unknown style %s (want one of %s)", quoteValue(s), strings.Join(styleNames, ", "))
				continue
			}
			cr.Style = Style(i)
		}
		c.keys(path, t, append(slices.Clone(commonCredKeys), styleKeys[cr.Style]...)...)
		if s, ok := c.str(t, path, "secret", true); ok {
			if validName(s) {
				cr.Secret = s
			} else {
				c.errf(childPath(path, "secret"), "invalid secret name (want %s)", namePattern)
			}
		}
		hosts, _, allOK := c.hostList(t, path)
		cr.Hosts = hosts
		hostsOK[name] = allOK
		cr.Ports = c.portList(t, path)
		cr.Methods = c.methodList(t, path)
		cr.Paths = c.pathList(t, path)
		c.credentialStyle(t, path, cr)
		if cr.Style == Placeholder || cr.Style == SigV4 {
			cr.Placeholder = derivePlaceholder(cr)
		}
	}
	return hostsOK
}

// credentialStyle reads the keys of cr's injection style.
func (c *checker) credentialStyle(t map[string]any, path string, cr *Credential) {
	switch cr.Style {
	case Header:
		if h, ok := c.str(t, path, "header", true); ok {
			switch {
			case !validToken(h):
				c.errf(childPath(path, "header"), "invalid header name (want an HTTP token)")
			case reservedHeader(h):
				c.errf(childPath(path, "header"), "header %s may not be set by a credential", quoteValue(h))
			default:
				cr.Header = h
			}
		}
		if f, ok := c.str(t, path, "format", false); ok {
			switch {
			case strings.Count(f, "{secret}") != 1:
				c.errf(childPath(path, "format"), "must contain {secret} exactly once")
			case hasCTL(f):
				c.errf(childPath(path, "format"), "must not contain control characters")
			default:
				cr.Format = f
			}
		}
	case Query:
		if q, ok := c.str(t, path, "param", true); ok {
			if q == "" || url.QueryEscape(q) != q {
				c.errf(childPath(path, "param"), "invalid query parameter name %s (want letters, digits, - _ . ~)", quoteValue(q))
			} else {
				cr.Param = q
			}
		}
	case Basic:
		if u, ok := c.str(t, path, "user", true); ok {
			if u == "" || strings.Contains(u, ":") || hasCTL(u) {
				c.errf(childPath(path, "user"), "invalid basic-auth user (want a non-empty name without ':')")
			} else {
				cr.User = u
			}
		}
	case SigV4:
		if k, ok := c.str(t, path, "access_key_id", true); ok {
			if !validAccessKeyID(k) {
				c.errf(childPath(path, "access_key_id"), "invalid access key id (want 16 to 128 upper-case letters and digits)")
			} else {
				cr.AccessKeyID = k
			}
		}
		c.envKey(t, path, cr)
	case Placeholder:
		c.envKey(t, path, cr)
		cr.SwapHeaders = c.stringList(t, path, "headers", func(s string) (string, bool) {
			return textproto.CanonicalMIMEHeaderKey(s), validToken(s) && !reservedHeader(s)
		}, "invalid header name %s (want an HTTP token that frames nothing)")
	case OAuth2:
		if u, ok := c.str(t, path, "token_url", true); ok {
			pu, err := url.Parse(u)
			if err != nil || pu.Scheme != "https" || pu.Host == "" || pu.User != nil || pu.Fragment != "" {
				c.errf(childPath(path, "token_url"), "invalid token URL %s (want an https:// URL)", quoteValue(u))
			} else {
				cr.TokenURL = u
			}
		}
		if id, ok := c.str(t, path, "client_id", true); ok {
			if id == "" || hasCTL(id) {
				c.errf(childPath(path, "client_id"), "invalid client id (want a non-empty string)")
			} else {
				cr.ClientID = id
			}
		}
		cr.Scopes = c.stringList(t, path, "scopes", func(s string) (string, bool) {
			return s, s != "" && !strings.ContainsAny(s, " \t\r\n\"\\")
		}, "invalid scope %s (want a token without spaces)")
	}
}

func (c *checker) envKey(t map[string]any, path string, cr *Credential) {
	if e, ok := c.str(t, path, "env", false); ok {
		if !validEnvName(e) {
			c.errf(childPath(path, "env"), "invalid environment variable name %s (want [A-Za-z_][A-Za-z0-9_]*)", quoteValue(e))
		} else {
			cr.Env = e
		}
	}
}

func validEnvName(s string) bool {
	if s == "" || len(s) > 128 || s[0] >= '0' && s[0] <= '9' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

func validAccessKeyID(s string) bool {
	if len(s) < 16 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// portList reads an optional "ports" array.
func (c *checker) portList(t map[string]any, path string) []uint16 {
	l, ok := c.list(t, path, "ports", false)
	if !ok {
		return nil
	}
	ports := []uint16{}
	for j, e := range l {
		ep := indexPath(childPath(path, "ports"), j)
		switch n, isInt := e.(int64); {
		case !isInt:
			c.errf(ep, "expected integer, found %s", typeName(e))
		case n < 1 || n > 65535:
			c.errf(ep, "port %d out of range 1..65535", n)
		default:
			ports = append(ports, uint16(n))
		}
	}
	return ports
}

func (c *checker) methodList(t map[string]any, path string) []string {
	return c.stringList(t, path, "methods", func(s string) (string, bool) {
		return s, validToken(s) && strings.ToUpper(s) == s
	}, "invalid method %s (want an upper-case HTTP token)")
}

func (c *checker) pathList(t map[string]any, path string) []string {
	return c.stringList(t, path, "paths", func(s string) (string, bool) {
		return s, cleanPath(s)
	}, "invalid path prefix %s (want an absolute path without //, . or .. segments, %%2e, %%2f, %%5c, ? or #)")
}

// envConflicts reports two credentials that would set the same environment variable for one
// agent.
func (c *checker) envConflicts(raw *rawPolicy) {
	type key struct{ agent, env string }
	first := make(map[key]*rawRule)
	for _, r := range raw.rules {
		cr := raw.creds[r.cred]
		if cr == nil || cr.Env == "" || r.agent == "" {
			continue
		}
		k := key{r.agent, cr.Env}
		if f, ok := first[k]; !ok {
			first[k] = r
		} else if f.cred != r.cred {
			c.errf(childPath(r.path, "credential"), "credential %s sets %s for agent %s, as credential %s of rule %s already does", quoteValue(r.cred), cr.Env, quoteValue(r.agent), quoteValue(f.cred), quoteValue(f.name))
		}
	}
}
