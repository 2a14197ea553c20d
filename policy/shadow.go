package policy

import "slices"

// shadowed reports every rule that can never decide anything because an earlier rule of the
// same agent (or, for a passthrough rule, any intercept rule) always matches first. Rules
// with errors of their own are skipped.
func (c *checker) shadowed(raw *rawPolicy) {
	valid := func(r *rawRule) bool {
		return r.name != "" && r.agent != "" && len(r.hosts) > 0 && !slices.Contains(r.hostOK, false) && len(r.ports) > 0
	}
	type indexed struct {
		i int
		r *rawRule
	}
	byAgent := make(map[string][]indexed)
	for i, r := range raw.rules {
		if valid(r) {
			byAgent[r.agent] = append(byAgent[r.agent], indexed{i, r})
		}
	}
	for j, b := range raw.rules {
		if !valid(b) {
			continue
		}
		for _, ai := range byAgent[b.agent] {
			i, a := ai.i, ai.r
			if i == j || !covers(a, b) {
				continue
			}
			switch {
			case i < j && a.mode == b.mode:
			case b.mode == Passthrough && a.mode == Intercept:
				// Decide prefers any intercept rule over a passthrough one.
			default:
				continue
			}
			line, _ := c.pos.lookup(a.path)
			c.errf(childPath(b.path, "name"), "rule %s can never match: rule %s (line %d) matches every request it would", quoteValue(b.name), quoteValue(a.name), line)
			break
		}
	}
}

// covers reports whether every request rule b matches is also matched by rule a (both of
// the same agent). Conditions do not matter: they are checked after the rule is chosen.
func covers(a, b *rawRule) bool {
	for _, h := range b.hosts {
		if !slices.ContainsFunc(a.hosts, func(p string) bool { return patternCovers(p, h) }) {
			return false
		}
	}
	for _, p := range b.ports {
		if !slices.Contains(a.ports, p) {
			return false
		}
	}
	if b.mode == Passthrough {
		return true // methods and paths do not apply
	}
	if a.methods != nil {
		if b.methods == nil {
			return false
		}
		for _, m := range b.methods {
			if !slices.Contains(a.methods, m) {
				return false
			}
		}
	}
	if a.paths != nil {
		if b.paths == nil {
			return false
		}
		for _, p := range b.paths {
			if !prefixMatch(a.paths, p) {
				return false
			}
		}
	}
	return true
}
