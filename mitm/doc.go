// Package mitm is wirken's transparent proxy: it accepts the connections the kernel steered to
// it, learns which agent made them and where they were going, peeks at the TLS ClientHello for
// the server name, and then denies, splices (passthrough) or intercepts each connection.
// Intercepted connections are served by goproxy (github.com/elazarl/goproxy), HTTP/1.1 or
// HTTP/2 as the agent's ALPN chooses, after wirken terminated the agent's TLS with a leaf
// minted from the wirken CA: an HTTP/1.x connection goes through goproxy's MITM loop (as if
// the agent had sent CONNECT), an h2 connection's streams through goproxy's handler (serve.go
// says why). Each request or h2 stream reaches goproxy's request hook, where it is authorized,
// audited before it goes anywhere, given the one credential it needs and forwarded, streaming
// both ways, over a pooled, verified upstream connection (h2 where the upstream offers it) to
// the original destination; goproxy writes the answer back.
// inject.go holds the injection mechanics of every credential style (header, query, basic auth,
// placeholder swap, SigV4 re-signing, OAuth2 client-credentials tokens) and the checks of rule
// conditions (Limits).
//
// The package declares the small interfaces it needs (Steering, Policy, Secrets, Recorder, Limits, PlaceholderFinder) and
// imports only the policy package's types from this module. hostagent wires it together.
package mitm
