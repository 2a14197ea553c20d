package vault

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Binding says which hosts a secret may be sent to. Each entry is an exact
// host name or IP address ("api.example.com", "10.0.0.7"), or "*.suffix",
// which matches any subdomain of suffix at any depth but not suffix itself.
// Names are compared case-insensitively and without a trailing dot; IDNs must
// be given in punycode. An empty list means any host.
type Binding struct {
	Hosts []string
}

const maxBindingHosts = 64

// normalizeBinding validates hosts and returns them lower-cased, sorted and
// without duplicates: the canonical form stored in the file and hashed into
// the value's additional data. It never returns nil.
func normalizeBinding(hosts []string) ([]string, error) {
	if len(hosts) > maxBindingHosts {
		return nil, fmt.Errorf("%w: binding has %d hosts, at most %d allowed", ErrInvalid, len(hosts), maxBindingHosts)
	}
	out := make([]string, 0, len(hosts))
	for i, h := range hosts {
		n, err := normalizePattern(h)
		if err != nil {
			return nil, fmt.Errorf("binding host %d %q: %w", i, truncate(h, 80), err)
		}
		out = append(out, n)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// normalizePattern normalizes one binding entry: a host or "*.suffix".
func normalizePattern(p string) (string, error) {
	rest, wild := strings.CutPrefix(p, "*.")
	h, err := normalizeHost(rest)
	if err != nil {
		return "", err
	}
	if !wild {
		return h, nil
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return "", fmt.Errorf("%w: a wildcard cannot cover an IP address", ErrInvalid)
	}
	return "*." + h, nil
}

// normalizeHost validates a host name or IP address (no port, no brackets)
// and returns its canonical form: ASCII lower case without a trailing dot;
// IP addresses in netip form, IPv4-mapped IPv6 addresses as IPv4.
func normalizeHost(h string) (string, error) {
	if len(h) > 254 {
		return "", fmt.Errorf("%w: host longer than 253 characters", ErrInvalid)
	}
	upper := false
	for i := range len(h) {
		c := h[i]
		if c >= 0x80 {
			return "", fmt.Errorf("%w: host must be ASCII (use punycode)", ErrInvalid)
		}
		upper = upper || 'A' <= c && c <= 'Z'
	}
	if upper { // per request, a name is nearly always lower case already: no copy then
		h = strings.ToLower(h)
	}
	h = strings.TrimSuffix(h, ".")
	if mayBeIP(h) { // else skip ParseAddr, whose error would be allocated per request
		if addr, err := netip.ParseAddr(h); err == nil {
			if addr.Zone() != "" {
				return "", fmt.Errorf("%w: IP address with a zone", ErrInvalid)
			}
			return addr.Unmap().String(), nil
		}
	}
	if err := checkDNSName(h); err != nil {
		return "", err
	}
	return h, nil
}

// mayBeIP is false for strings netip.ParseAddr certainly refuses: an IPv4 address ends with a
// digit and an IPv6 address has a colon.
func mayBeIP(h string) bool {
	return strings.IndexByte(h, ':') >= 0 || h != "" && '0' <= h[len(h)-1] && h[len(h)-1] <= '9'
}

// checkDNSName accepts lower-case names of 1..253 characters whose labels are
// 1..63 of [a-z0-9_-], not starting or ending with '-'.
func checkDNSName(h string) error {
	if h == "" {
		return fmt.Errorf("%w: empty host", ErrInvalid)
	}
	if len(h) > 253 {
		return fmt.Errorf("%w: host longer than 253 characters", ErrInvalid)
	}
	for label := range strings.SplitSeq(h, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("%w: host label empty or longer than 63 characters", ErrInvalid)
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("%w: host label starts or ends with '-'", ErrInvalid)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("%w: host contains character %q", ErrInvalid, c)
			}
		}
	}
	return nil
}

// bindingAllows reports whether host (already normalized) is within the
// normalized binding hosts. An empty binding allows every host.
func bindingAllows(hosts []string, host string) bool {
	if len(hosts) == 0 {
		return true
	}
	isIP := false
	if mayBeIP(host) {
		_, ipErr := netip.ParseAddr(host)
		isIP = ipErr == nil
	}
	for _, p := range hosts {
		if p == host {
			return true
		}
		if suffix, ok := strings.CutPrefix(p, "*"); ok && !isIP {
			// suffix is ".example.com": host must end with it and have at least one more label.
			if len(host) > len(suffix) && strings.HasSuffix(host, suffix) {
				return true
			}
		}
	}
	return false
}

// bindingDigest is the hex SHA-256 of the canonical JSON of a normalized
// binding, {"hosts":[...]}; it goes into the additional data of the value.
func bindingDigest(hosts []string) (string, error) {
	if hosts == nil {
		return "", errors.New("binding digest: nil hosts")
	}
	j, err := json.Marshal(struct {
		Hosts []string `json:"hosts"`
	}{hosts})
	if err != nil {
		return "", fmt.Errorf("encoding binding: %w", err)
	}
	sum := sha256.Sum256(j)
	return hex.EncodeToString(sum[:]), nil
}

// truncate shortens s for error messages.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
