package mitm

import (
	"container/list"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/wirken/wirken/policy"
)

func (p *Proxy) serve(req *http.Request, s *session) *http.Response {
	o := s.origin
	host, port, ok := requestHost(req.Host)
	ev := Event{
		Agent: o.Agent, Dst: o.Dst, PID: o.PID, UID: o.UID, Comm: o.Comm,
		Method: req.Method, Host: host, Port: o.Dst.Port(), Path: req.URL.Path,
		URL: redactedURL(req, host, o.Dst.Port()),
	}
	// Binding: the Host header must be a plain name that names the server the TLS handshake
	// was for, on the port the agent connected to (no domain fronting).
	switch {
	case !ok:
		return p.refuse(req, ev, statusOf(ErrBadRequest), "", "malformed Host header")
	case req.Context().Value(ambiguousKey{}) != nil:
		return p.refuse(req, ev, statusOf(ErrBadRequest), "", "both Content-Length and Transfer-Encoding")
	case req.Method == http.MethodConnect:
		return p.refuse(req, ev, http.StatusForbidden, "", "CONNECT is not forwarded")
	case p.looped(req):
		return p.refuse(req, ev, statusOf(ErrLoop), "", "request came back to wirken (proxy loop)")
	case s.tls && host != s.sni:
		return p.refuse(req, ev, http.StatusForbidden, "", "Host does not match the TLS server name")
	case port != "" && port != strconv.Itoa(int(o.Dst.Port())):
		return p.refuse(req, ev, http.StatusForbidden, "", "Host port does not match the destination port")
	}
	g := p.cfg.Policy.Authorize(policy.Request{
		Agent: o.Agent, Method: req.Method, Host: host, Port: o.Dst.Port(), Path: req.URL.Path,
	})
	ev.Rule = g.Rule
	if resp := p.precheck(req, ev, g, host); resp != nil {
		return resp
	}
	if !g.Allow {
		return p.refuse(req, ev, http.StatusForbidden, g.Rule, g.Reason)
	}
	if !s.tls && !p.agentResolved(o, host) {
		return p.refuse(req, ev, http.StatusForbidden, g.Rule, unresolvedReason(o, host))
	}
	// Without TLS nothing proves the destination is the named host, so it must be one of the
	// host's addresses. Only names the policy allows are looked up.
	if !s.tls && !p.resolvesTo(req.Context(), host, o.Dst.Addr()) {
		return p.refuse(req, ev, http.StatusForbidden, g.Rule, "destination is not an address of "+host)
	}
	ev.Kind = "request.allow"
	if g.Credential != nil {
		if !s.tls {
			return p.refuse(req, ev, http.StatusForbidden, g.Rule, "credentials are only sent over TLS")
		}
		ev.Kind, ev.Credential = "credential.use", g.Credential.Name
	}
	// Under a token budget: a few requests in flight at once per agent and rule, as tokens are
	// counted only when a response ends.
	budgeted := g.Conditions != nil && g.Conditions.DailyTokens > 0
	release := func() {}
	if budgeted {
		if release = p.budgeted.acquire(budgetKey{o.Agent, g.Rule}, p.cfg.BudgetInFlight); release == nil {
			return p.refuse(req, ev, statusOf(ErrLimited), g.Rule, "too many requests in flight under the rule's token budget")
		}
	}
	handedOff := false // to the response body, which releases the slot when it ends
	defer func() {
		if !handedOff {
			release()
		}
	}()

	// A clone: the injected header must live only in the request that goes upstream.
	out := req.Clone(req.Context())
	out.RequestURI = ""
	out.Host = host // the checked name, not the agent's spelling of it
	if port != "" {
		out.Host = net.JoinHostPort(host, port)
	}
	// The scheme was set from the connection (onRequest).
	out.URL.Host = out.Host
	out.Close = false // an agent's Connection: close must not tear down the pooled upstream connection
	out.Header.Add("Via", p.via)
	sent := false
	defer func() {
		// A body buffered for re-signing that never went upstream gives its bytes back (the
		// transport closes the body of a request it was given, once sent or failed).
		if b, ok := out.Body.(*heldBody); ok && !sent {
			b.Close()
		}
	}()
	if budgeted {
		// Usage is read only from bodies wirken can decode: an agent asking for br or zstd
		// must not hide its token use.
		out.Header.Set("Accept-Encoding", "identity")
	}
	var secrets [][]byte // the injected values, masked in the response
	if c := g.Credential; c != nil {
		// The masker reads the body as it comes: an agent asking for gzip (or br, zstd) must
		// not get an echoed secret back compressed, where masking cannot see it. Set before
		// injection, which may sign the headers (SigV4).
		out.Header.Set("Accept-Encoding", "identity")
		var resp *http.Response
		if resp, secrets = p.injectCredential(req, out, c, host, &ev); resp != nil {
			return resp
		}
	}

	// The record is durable before anything goes upstream.
	spanCtx, finish, err := p.cfg.Recorder.Begin(req.Context(), ev)
	if err != nil {
		p.log.Error("audit log unavailable; refusing request", "agent", o.Agent, "host", host, "err", err)
		return errorResponse(req, statusOf(ErrAuditUnavailable), g.Rule, ErrAuditUnavailable.Error())
	}
	// net/http resends a request whose reused connection failed before an answer; each resend
	// is recorded before it leaves, as the first send was (resend.go).
	rs := &resends{p: p, ctx: req.Context(), ev: ev, finish: finish}
	out = out.WithContext(rs.trace(spanCtx))

	cred := ""
	if g.Credential != nil {
		cred = g.Credential.Name
	}
	sent = true
	tr := p.pool.transport(poolKey{o.Dst, s.sni, s.tls, cred})
	rs.tr = tr
	resp, err := tr.RoundTrip(out)
	finish = rs.finish
	if err != nil && rs.failed != nil {
		p.log.Error("audit log unavailable; refusing to resend a request", "agent", o.Agent, "host", host, "err", rs.failed)
		return errorResponse(req, statusOf(ErrAuditUnavailable), g.Rule, ErrAuditUnavailable.Error())
	}
	if err != nil {
		reason := upstreamReason(err)
		finish(Result{Status: http.StatusBadGateway, Err: errors.New(reason)})
		p.log.Warn("upstream request failed", "agent", o.Agent, "host", host, "dst", o.Dst, "reason", reason)
		return errorResponse(req, statusOf(ErrUpstream), g.Rule, ErrUpstream.Error()+": "+reason)
	}
	if len(secrets) > 0 {
		redactHeader(resp.Header, secrets)
		if resp.StatusCode != http.StatusSwitchingProtocols {
			resp.Body = newRedactingBody(resp.Body, resp, secrets)
		}
	}
	if rw, ok := resp.Body.(io.ReadWriteCloser); ok && resp.StatusCode == http.StatusSwitchingProtocols {
		// An upgraded connection (WebSocket) is relayed through the body as a ReadWriter.
		done := func(n int64, _ error) { finish(Result{Status: resp.StatusCode, Bytes: n}) }
		resp.Body = &upgradedBody{countingBody{ReadCloser: rw, done: done}, rw}
		return resp
	}
	// LLM APIs are reached with a credential or under a token budget: only those responses are
	// read for usage.
	var usage *usageReader
	if g.Credential != nil || budgeted {
		usage = newUsageReader(resp)
	}
	done := func(n int64, err error) {
		r := Result{Status: resp.StatusCode, Bytes: n}
		if err != nil {
			// The agent got a status and part of a body: the record says it was cut off.
			r.Err = fmt.Errorf("response cut off after %d bytes: %s", n, upstreamReason(err))
		}
		if usage != nil {
			r.Usage = usage.usage()
			p.spend(o.Agent, g, r.Usage)
		}
		if budgeted && r.Usage.InputTokens+r.Usage.OutputTokens == 0 && resp.StatusCode/100 == 2 {
			r.UsageMissing = true
			p.log.Warn("no token usage in a response under a token budget; nothing counted",
				"agent", o.Agent, "rule", g.Rule, "host", host, "content_type", resp.Header.Get("Content-Type"),
				"content_encoding", resp.Header.Get("Content-Encoding"))
		}
		release()
		finish(r)
	}
	handedOff = true
	resp.Body = &countingBody{ReadCloser: resp.Body, done: done, usage: usage}
	return resp
}

// requestHost splits a Host header into a lower-case name without a trailing dot and an
// optional numeric port. Anything but a plain host name or IP literal is refused.
func requestHost(h string) (host, port string, ok bool) {
	host = h
	if i := strings.LastIndexByte(h, ':'); i >= 0 && !strings.HasSuffix(h, "]") {
		host, port = h[:i], h[i+1:]
		if port == "" || len(port) > 5 || strings.Trim(port, "0123456789") != "" {
			return "", "", false
		}
	}
	if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		a, err := netip.ParseAddr(host[1 : len(host)-1])
		if err != nil || a.Zone() != "" {
			return "", "", false
		}
		return a.String(), port, true
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if host == "" || len(host) > 253 {
		return "", "", false
	}
	for _, c := range []byte(host) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return "", "", false
		}
	}
	if strings.Contains(host, "..") || strings.HasPrefix(host, ".") || strings.HasSuffix(host, ".") {
		return "", "", false
	}
	return host, port, true
}

func (p *Proxy) resolvesTo(ctx context.Context, host string, addr netip.Addr) bool {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.DialTimeout)
	defer cancel()
	var addrs []netip.Addr
	var err error
	if p.cfg.Addresses != nil {
		addrs, err = p.cfg.Addresses.LookupNetIP(ctx, host)
	} else {
		addrs, err = net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	}
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if a.Unmap() == addr.Unmap() {
			return true
		}
	}
	return false
}

func (p *Proxy) refuse(req *http.Request, ev Event, status int, rule, reason string) *http.Response {
	ev.Kind, ev.Rule, ev.Reason = "request.deny", rule, reason
	p.log.Info("request denied", "agent", ev.Agent, "method", ev.Method, "host", ev.Host, "path", ev.Path, "reason", reason)
	p.cfg.Recorder.Deny(req.Context(), ev)
	return errorResponse(req, status, rule, reason)
}

// redactedURL is the request URL without its query string (which may carry an injected key in
// later injection styles) and without user info.
func redactedURL(req *http.Request, host string, port uint16) string {
	scheme := "https"
	if req.URL.Scheme == "http" {
		scheme = "http"
	}
	hp := host
	if (scheme == "https" && port != 443) || (scheme == "http" && port != 80) {
		hp = net.JoinHostPort(host, strconv.Itoa(int(port)))
	}
	return scheme + "://" + hp + req.URL.EscapedPath()
}

// upstreamReason turns an upstream error into a short reason that carries no URL or header.
func upstreamReason(err error) string {
	var (
		uae x509.UnknownAuthorityError
		hne x509.HostnameError
		cie x509.CertificateInvalidError
		rhe tls.RecordHeaderError
	)
	switch {
	case errors.As(err, &uae), errors.As(err, &cie):
		return "upstream certificate not trusted"
	case errors.As(err, &hne):
		return "upstream certificate does not match the server name"
	case errors.As(err, &rhe):
		return "upstream did not speak TLS"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, syscall.ETIMEDOUT):
		return "timeout"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed by upstream"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	return "upstream error"
}

// countingBody reports how many bytes went through once the body is finished.
type countingBody struct {
	io.ReadCloser
	n     int64
	err   error // how the upstream's body ended, if not cleanly
	once  sync.Once
	done  func(int64, error)
	usage *usageReader // nil unless the response may carry LLM usage
	after func()       // if set, runs once the body is finished, after done
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	if b.usage != nil && n > 0 {
		b.usage.write(p[:n])
	}
	if err != nil {
		if err != io.EOF {
			b.err = err
		}
		b.end()
	}
	return n, err
}

func (b *countingBody) Close() error {
	err := b.ReadCloser.Close()
	b.end()
	return err
}

func (b *countingBody) end() {
	b.once.Do(func() {
		b.done(b.n, b.err)
		if b.after != nil {
			b.after()
		}
	})
}

// upgradedBody is a counted body that can also be written to, as goproxy needs for a
// "101 Switching Protocols" response.
type upgradedBody struct {
	countingBody
	w io.Writer
}

func (b *upgradedBody) Write(p []byte) (int, error) { return b.w.Write(p) }

// maxTransports bounds the upstream pool: destinations are the agents' choice.
const maxTransports = 1024

// pool keeps one upstream transport per (destination, server name, TLS, credential): every
// connection it makes goes to the address the agent asked for, TLS is verified for the name
// the agent asked for, and connections that carried one credential (whose header may sit in an
// HTTP/2 HPACK table) are never reused for another, and can be closed when it rotates. It holds at most max transports; the least recently used one is dropped (its idle
// connections closed; requests in flight finish).
type pool struct {
	roots         *x509.CertPool
	dialTimeout   time.Duration
	headerTimeout time.Duration
	max           int
	mu            sync.Mutex
	m             map[poolKey]*list.Element
	lru           list.List // of *poolEntry, most recent first
}

type poolKey struct {
	dst  netip.AddrPort
	sni  string
	tls  bool
	cred string // credential name, "" for none
}

type poolEntry struct {
	key poolKey
	t   *http.Transport
}

func newPool(roots *x509.CertPool, dialTimeout, headerTimeout time.Duration, max int) *pool {
	return &pool{roots: roots, dialTimeout: dialTimeout, headerTimeout: headerTimeout, max: max, m: make(map[poolKey]*list.Element)}
}

func (p *pool) transport(k poolKey) *http.Transport {
	p.mu.Lock()
	defer p.mu.Unlock()
	if el := p.m[k]; el != nil {
		p.lru.MoveToFront(el)
		return el.Value.(*poolEntry).t
	}
	if p.lru.Len() >= p.max {
		oldest := p.lru.Back()
		e := oldest.Value.(*poolEntry)
		e.t.CloseIdleConnections()
		p.lru.Remove(oldest)
		delete(p.m, e.key)
	}
	d := &net.Dialer{Timeout: p.dialTimeout, KeepAlive: 30 * time.Second}
	addr := k.dst.String()
	t := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", addr)
		},
		MaxIdleConnsPerHost: 1024, // net/http's default keeps 2 per host: far too few (perf.md)
		// A burst beyond an HTTP/2 upstream's stream limit (250 for Go servers) made net/http
		// dial a new connection for nearly every waiting request: 10,805 upstream connections
		// for a burst of 10,000, until the daemon ran out of descriptors and answered 502
		// (TestLoad10k). With a bound, the waiting requests share the connections that come up
		// (HTTP/2) or queue for a free one (HTTP/1.1).
		MaxConnsPerHost:       1024,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: p.headerTimeout,
		DisableCompression:    true,
		// HTTP/2 where the upstream offers it (one multiplexed connection, more when its stream
		// limit is reached), HTTP/1.1 otherwise; WebSocket upgrades always go over HTTP/1.1.
		ForceAttemptHTTP2: true,
	}
	if k.tls {
		t.TLSClientConfig = &tls.Config{
			ServerName:         k.sni,
			RootCAs:            p.roots,
			MinVersion:         tls.VersionTLS12,
			ClientSessionCache: tls.NewLRUClientSessionCache(256), // resumption: no full handshake per new connection,
		}
	}
	p.m[k] = p.lru.PushFront(&poolEntry{key: k, t: t})
	return t
}

// closeIdle closes the idle upstream connections of the given credentials, or of all when
// none are named.
func (p *pool) closeIdle(creds ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for el := p.lru.Front(); el != nil; el = el.Next() {
		e := el.Value.(*poolEntry)
		if len(creds) == 0 || slices.Contains(creds, e.key.cred) {
			e.t.CloseIdleConnections()
		}
	}
}

// looped says whether req already went through this proxy: it carries the Via marker this
// proxy adds to every request it sends upstream.
func (p *Proxy) looped(req *http.Request) bool {
	for _, v := range req.Header.Values("Via") {
		if strings.Contains(v, p.via) {
			return true
		}
	}
	return false
}
