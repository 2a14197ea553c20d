// Package policy parses, validates and evaluates wirken's operator policy.
//
// A policy file (TOML) names agents, the credentials the proxy may inject
// and the rules that say which agent may reach which host:port, whether the
// connection is passed through or intercepted, and which methods, paths and
// credential apply. Parse validates the whole file and reports every problem
// as file:line:column errors; a valid file compiles into an immutable
// *Policy whose Decide (per connection) and Authorize (per HTTP request)
// answer without allocating on the allow path. Everything not allowed by a
// rule is denied.
//
// Credentials have an injection style (header, query, basic, placeholder,
// sigv4, oauth2) and are bound to hosts and optionally ports, methods and
// paths. Rules may carry Conditions (a time window, a rate, a body cap, a
// daily LLM token budget); a Meter keeps their counters, saves and restores
// them, and refuses with ErrOutsideWindow, ErrRateLimited or ErrBudgetSpent.
// Explain says in words what the policy does with one request.
//
// The package is pure Go and imports nothing else from this module. mitm/
// imports its types; hostagent/ and cmd/wirken load policies with it.
// Policy files carry secret names, never secret values; Render receives a
// value only for the duration of the call and does not keep it.
package policy
