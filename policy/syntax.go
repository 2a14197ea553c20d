package policy

import (
	"path"
	"strconv"
	"strings"
)

// maxHostLen is the longest DNS name accepted (RFC 1035, without the final dot).
const maxHostLen = 253

// validName reports whether s matches ^[a-z][a-z0-9_-]{0,62}$, the pattern
// for agent, credential, secret and rule names (an agent name becomes a
// cgroup directory name).
func validName(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

const namePattern = "^[a-z][a-z0-9_-]{0,62}$"

// validUser reports whether s is a plausible unix user: a name matching
// ^[a-z_][a-z0-9_.-]{0,31}$ or a numeric uid.
func validUser(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	if _, err := strconv.ParseUint(s, 10, 32); err == nil {
		return true
	}
	if !(s[0] >= 'a' && s[0] <= 'z' || s[0] == '_') {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

// validCgroup reports whether s is an absolute, clean path without control
// characters.
func validCgroup(s string) bool {
	if len(s) > 4096 || !strings.HasPrefix(s, "/") || path.Clean(s) != s {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return false
		}
	}
	return true
}

// isTokenChar reports whether c may appear in an HTTP token (RFC 9110 tchar).
func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isTokenChar(s[i]) {
			return false
		}
	}
	return true
}

// reservedHeaders may not be set by a credential: they frame the message or
// route it, and setting them would enable smuggling or domain fronting.
var reservedHeaders = []string{
	"connection", "content-length", "host", "keep-alive", "proxy-connection",
	"te", "trailer", "transfer-encoding", "upgrade",
}

func reservedHeader(h string) bool {
	for _, r := range reservedHeaders {
		if strings.EqualFold(h, r) {
			return true
		}
	}
	return false
}

// hasCTL reports whether s holds an ASCII control character other than tab.
func hasCTL(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 && c != '\t' || c == 0x7f {
			return true
		}
	}
	return false
}

// checkHostSyntax reports whether h (without a trailing dot) is a DNS name
// wirken accepts: 1 to 253 bytes, labels of 1 to 63 letters, digits, '-' or
// '_'. Upper-case letters are accepted; callers lower-case as needed.
func checkHostSyntax(h string) bool {
	if len(h) == 0 || len(h) > maxHostLen {
		return false
	}
	label := 0
	for i := 0; i < len(h); i++ {
		c := h[i]
		switch {
		case c == '.':
			if label == 0 {
				return false
			}
			label = 0
			continue
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			return false
		}
		label++
		if label > 63 {
			return false
		}
	}
	return label > 0
}

// hasUpper reports whether s holds an ASCII upper-case letter.
func hasUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			return true
		}
	}
	return false
}

// normHost returns the request host lower-cased and without a trailing dot,
// and whether it is a valid DNS name. It allocates only when h holds an
// upper-case letter.
func normHost(h string) (string, bool) {
	h = strings.TrimSuffix(h, ".")
	if !checkHostSyntax(h) {
		return "", false
	}
	if hasUpper(h) {
		h = strings.ToLower(h)
	}
	return h, true
}

// normPattern validates a host pattern from the policy ("api.example.com" or
// "*.example.com") and returns it lower-cased without a trailing dot.
func normPattern(p string) (string, bool) {
	p = strings.TrimSuffix(p, ".")
	if rest, ok := strings.CutPrefix(p, "*."); ok {
		if !checkHostSyntax(rest) {
			return "", false
		}
		return "*." + strings.ToLower(rest), true
	}
	if !checkHostSyntax(p) {
		return "", false
	}
	return strings.ToLower(p), true
}

// MatchHost reports whether host is matched by pattern. A pattern is an exact
// DNS name or "*." followed by a name, which matches any subdomain of that
// name at any depth but not the name itself. Comparison ignores ASCII case
// and one trailing dot on either side. A host that is not a valid DNS name
// (empty, a port suffix, a space, an IPv6 literal) never matches. MatchHost
// does not allocate.
func MatchHost(pattern, host string) bool {
	pattern = strings.TrimSuffix(pattern, ".")
	host = strings.TrimSuffix(host, ".")
	if !checkHostSyntax(host) {
		return false
	}
	if suffix, ok := strings.CutPrefix(pattern, "*"); ok {
		return len(suffix) > 1 && suffix[0] == '.' && suffix[1] != '.' &&
			len(host) > len(suffix) &&
			equalFoldASCII(host[len(host)-len(suffix):], suffix)
	}
	return equalFoldASCII(pattern, host)
}

// equalFoldASCII is strings.EqualFold for ASCII only: no Unicode folding
// (U+212A KELVIN SIGN is not "k").
func equalFoldASCII(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// matchNorm is MatchHost for a normalized pattern and a normalized host.
func matchNorm(pattern, host string) bool {
	if suffix, ok := strings.CutPrefix(pattern, "*"); ok {
		return len(host) > len(suffix) && strings.HasSuffix(host, suffix)
	}
	return pattern == host
}

// patternCovers reports whether every host matched by inner is matched by
// outer. Both are normalized patterns.
func patternCovers(outer, inner string) bool {
	if !strings.HasPrefix(inner, "*.") {
		return matchNorm(outer, inner)
	}
	if !strings.HasPrefix(outer, "*.") {
		return false
	}
	// *.a.b covers *.a.b and *.x.a.b.
	return inner == outer || strings.HasSuffix(inner[1:], outer[1:])
}

// cleanPath reports whether p is an absolute request path whose meaning
// cannot change under normalization: no empty, "." or ".." segments, no
// backslash, no percent-encoded '.', '/' or '\', no control characters,
// '?' or '#'. It accepts decoded (url.URL.Path) and escaped paths alike.
// Prefix rules apply only to clean paths.
func cleanPath(p string) bool {
	if p == "" || p[0] != '/' {
		return false
	}
	segStart := 1
	for i := 1; i <= len(p); i++ {
		if i == len(p) || p[i] == '/' {
			switch p[segStart:i] {
			case ".", "..":
				return false
			case "":
				if i < len(p) { // "//"; a trailing "/" is fine
					return false
				}
			}
			segStart = i + 1
			continue
		}
		switch c := p[i]; {
		case c < 0x20 || c == 0x7f || c == '\\' || c == '?' || c == '#':
			return false
		case c == '%':
			if i+2 >= len(p) {
				return false
			}
			switch p[i+1 : i+3] {
			case "2e", "2E", "2f", "2F", "5c", "5C":
				return false
			}
		}
	}
	return true
}
