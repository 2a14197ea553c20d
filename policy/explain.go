package policy

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

// Explain says, in lines of "key: value", what the policy does with one request: the
// connection verdict, the rule and credential that apply and the conditions they carry, or
// exactly why it is denied. method defaults to GET; rawURL must be an http:// or https:// URL.
func (p *Policy) Explain(agent, method, rawURL string) (string, error) {
	if method == "" {
		method = "GET"
	}
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Hostname() == "" {
		return "", fmt.Errorf("explaining %s: want an http:// or https:// URL", strconv.Quote(rawURL))
	}
	port := uint16(443)
	if u.Scheme == "http" {
		port = 80
	}
	if ps := u.Port(); ps != "" {
		n, err := strconv.ParseUint(ps, 10, 16)
		if err != nil || n == 0 {
			return "", fmt.Errorf("explaining %s: invalid port", strconv.Quote(rawURL))
		}
		port = uint16(n)
	}
	path := u.EscapedPath()
	if path == "" {
		path = "/"
	}
	var b strings.Builder
	line := func(k, v string) { fmt.Fprintf(&b, "%-11s %s\n", k+":", v) }
	line("agent", printable(agent))
	line("request", printable(method)+" "+u.Scheme+"://"+u.Host+path)

	if u.Scheme == "https" {
		d := p.Decide(agent, u.Hostname(), port)
		switch d.Mode {
		case Deny:
			line("connection", "deny")
			line("verdict", "deny")
			line("reason", d.Reason)
			return b.String(), nil
		case Passthrough:
			line("connection", "passthrough (rule "+d.Rule+")")
			line("verdict", "allow, spliced without decryption: no credential is injected, methods and paths are not seen")
			line("rule", d.Rule)
			return b.String(), nil
		}
		line("connection", "intercept (rule "+d.Rule+")")
	} else {
		line("connection", "plain HTTP: decided per request")
	}
	g := p.Authorize(Request{Agent: agent, Method: method, Host: u.Hostname(), Port: port, Path: path})
	if !g.Allow {
		line("verdict", "deny")
		if g.Rule != "" {
			line("rule", g.Rule+" (the closest match)")
		}
		line("reason", g.Reason)
		return b.String(), nil
	}
	if g.Credential != nil && u.Scheme != "https" {
		line("verdict", "deny")
		line("rule", g.Rule)
		line("reason", "credentials are only sent over TLS")
		return b.String(), nil
	}
	line("verdict", "allow")
	line("rule", g.Rule)
	if c := g.Credential; c != nil {
		line("credential", c.Name+" (vault secret "+c.Secret+")")
		line("injection", c.describe())
	} else {
		line("credential", "none")
	}
	if g.Conditions != nil {
		for _, d := range g.Conditions.Describe() {
			line("condition", d)
		}
	}
	return b.String(), nil
}

// describe says how the credential is injected, without any value.
func (c *Credential) describe() string {
	switch c.Style {
	case Header:
		return "header " + c.Header + ": " + c.Format
	case Query:
		return "query parameter " + c.Param + "={secret} (redacted from logged URLs)"
	case Basic:
		return "basic auth, user " + c.User + ", password {secret}"
	case Placeholder:
		s := "placeholder " + c.Placeholder + " replaced by {secret} in headers"
		if c.Env != "" {
			s += " (exec sets " + c.Env + ")"
		}
		return s
	case SigV4:
		s := "AWS SigV4 re-signed with access key id " + c.AccessKeyID + "; the agent signs with " + c.Placeholder
		if c.Env != "" {
			s += " (exec sets " + c.Env + ")"
		}
		return s
	case OAuth2:
		s := "Authorization: Bearer <token minted at " + c.TokenURL + " for client " + c.ClientID
		if len(c.Scopes) > 0 {
			s += ", scopes " + strings.Join(c.Scopes, " ")
		}
		return s + ">"
	}
	return c.Style.String()
}
