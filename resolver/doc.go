// Package resolver is wirken's DNS resolver for agents. The kernel steers
// every agent's DNS (UDP and TCP port 53, any address) to it; it learns which
// agent asked from the kernel's records (an Identifier), answers only names
// one of that agent's rules names (others get NXDOMAIN), forwards those to
// the configured upstream resolvers, and remembers, per agent, which
// addresses each name resolved to, for as long as the answer's TTL, so the
// proxy can require that a connection's SNI or Host is a name that agent
// resolved to that address (Resolved).
//
// It may import policy types only; hostagent wires it.
package resolver
