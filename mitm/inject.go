package mitm

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"golang.org/x/net/http/httpguts"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/wirken/wirken/policy"
)

// Limits checks the rule conditions that need counters. *policy.Meter implements it.
type Limits interface {
	// Admit returns nil or policy.ErrOutsideWindow, ErrRateLimited or ErrBudgetSpent.
	Admit(agent string, g policy.Grant) error
	// Spend counts the LLM tokens a response reported.
	Spend(agent string, g policy.Grant, tokens int64)
}

// PlaceholderFinder says which credential a placeholder stands for. A Policy that implements
// it (the daemon's does) lets the proxy refuse placeholders sent anywhere but their bound
// hosts.
type PlaceholderFinder interface {
	PlaceholderCredential(s string) *policy.Credential
}

// maxSignedBody bounds the request body wirken reads to hash for SigV4 when the agent did not
// send X-Amz-Content-Sha256.
const maxSignedBody = 64 << 20

// limitStatus maps a condition's refusal to the HTTP status the agent gets.
func limitStatus(err error) int {
	if errors.Is(err, policy.ErrBodyTooLarge) {
		return http.StatusRequestEntityTooLarge
	}
	return http.StatusTooManyRequests
}

// findPlaceholder returns the credential of the first placeholder in the request's headers or
// query, or nil.
func (p *Proxy) findPlaceholder(req *http.Request) *policy.Credential {
	f, ok := p.cfg.Policy.(PlaceholderFinder)
	if !ok {
		return nil
	}
	check := func(v string) *policy.Credential {
		for _, pl := range placeholderShapes {
			for rest := v; ; rest = rest[len(pl.prefix):] {
				i := strings.Index(rest, pl.prefix)
				if i < 0 {
					break
				}
				rest = rest[i:]
				if len(rest) < pl.length {
					break
				}
				if c := f.PlaceholderCredential(rest[:pl.length]); c != nil {
					return c
				}
			}
		}
		return nil
	}
	for _, vs := range req.Header {
		for _, v := range vs {
			if c := check(v); c != nil {
				return c
			}
		}
	}
	if q, err := url.QueryUnescape(req.URL.RawQuery); err == nil {
		return check(q)
	}
	return check(req.URL.RawQuery)
}

// placeholderShapes are the two forms of placeholder the policy generates.
var placeholderShapes = []struct {
	prefix string
	length int
}{
	{policy.PlaceholderPrefix, len(policy.PlaceholderPrefix) + 32},
	{policy.AccessKeyIDPrefix, 20},
}

// tlsClientConfig verifies an upstream (here: a token endpoint) for name against roots.
func tlsClientConfig(roots *x509.CertPool, name string) *tls.Config {
	return &tls.Config{ServerName: name, RootCAs: roots, MinVersion: tls.VersionTLS12}
}

// checkBody enforces a rule's body cap. A body of unknown length is read up to the cap, so
// nothing goes upstream unless all of it fits.
func checkBody(out *http.Request, max int64) error {
	if max <= 0 || out.Body == nil || out.Body == http.NoBody {
		return nil
	}
	if out.ContentLength > max {
		return policy.ErrBodyTooLarge
	}
	if out.ContentLength >= 0 {
		out.Body = struct {
			io.Reader
			io.Closer
		}{io.LimitReader(out.Body, max), out.Body}
		return nil
	}
	b, err := io.ReadAll(io.LimitReader(out.Body, max+1))
	if err != nil {
		return fmt.Errorf("reading request body: %w", err)
	}
	if int64(len(b)) > max {
		return policy.ErrBodyTooLarge
	}
	out.Body = io.NopCloser(bytes.NewReader(b))
	out.ContentLength = int64(len(b))
	return nil
}

// inject puts the credential c into out, the request that goes upstream. secret is valid only
// during the call. It returns a short reason (without any value) when the request cannot be
// sent with this credential.
func (p *Proxy) inject(out *http.Request, c *policy.Credential, secret []byte) error {
	switch c.Style {
	case policy.Header:
		dropAgentAuth(out)
		out.Header.Set(c.Header, c.Render(secret))
	case policy.Query:
		dropAgentAuth(out)
		out.URL.RawQuery = setQueryParam(out.URL.RawQuery, c.Param, string(secret))
	case policy.Basic:
		dropAgentAuth(out)
		out.SetBasicAuth(c.User, string(secret))
	case policy.Placeholder:
		out.Header.Del("Proxy-Authorization")
		found := false
		for k, vs := range out.Header {
			if c.SwapHeaders != nil && !slices.Contains(c.SwapHeaders, k) {
				continue
			}
			for i, v := range vs {
				if strings.Contains(v, c.Placeholder) {
					out.Header[k][i] = strings.ReplaceAll(v, c.Placeholder, string(secret))
					found = true
				}
			}
		}
		if !found {
			return errors.New("the request holds no placeholder of credential " + c.Name)
		}
	case policy.SigV4:
		return p.resign(out, c, secret)
	default:
		return errors.New("credential style " + c.Style.String() + " cannot be injected here")
	}
	return nil
}

// dropAgentAuth removes the agent's own credentials: it holds no real secret, so anything it
// sends there is a dummy or an attempt to smuggle something out.
func dropAgentAuth(out *http.Request) {
	out.Header.Del("Authorization")
	out.Header.Del("Proxy-Authorization")
}

// setQueryParam replaces every occurrence of name in raw with name=value, keeping the other
// parameters exactly as the agent wrote them.
func setQueryParam(raw, name, value string) string {
	var kept []string
	if raw != "" {
		for _, part := range strings.Split(raw, "&") {
			k, _, _ := strings.Cut(part, "=")
			if uk, err := url.QueryUnescape(k); err == nil && uk == name || k == name {
				continue
			}
			kept = append(kept, part)
		}
	}
	kept = append(kept, url.QueryEscape(name)+"="+url.QueryEscape(value))
	return strings.Join(kept, "&")
}

// sigv4Scope is what the agent's Authorization header says about its signature.
type sigv4Scope struct {
	keyID, date, region, service string
}

// parseSigV4 reads "AWS4-HMAC-SHA256 Credential=KEY/DATE/REGION/SERVICE/aws4_request, ...".
func parseSigV4(h string) (sigv4Scope, bool) {
	rest, ok := strings.CutPrefix(h, "AWS4-HMAC-SHA256 ")
	if !ok {
		return sigv4Scope{}, false
	}
	for _, part := range strings.Split(rest, ",") {
		v, ok := strings.CutPrefix(strings.TrimSpace(part), "Credential=")
		if !ok {
			continue
		}
		f := strings.Split(v, "/")
		if len(f) != 5 || f[4] != "aws4_request" || f[2] == "" || f[3] == "" {
			return sigv4Scope{}, false
		}
		return sigv4Scope{keyID: f[0], date: f[1], region: f[2], service: f[3]}, true
	}
	return sigv4Scope{}, false
}

// resign replaces the agent's SigV4 signature (made with the placeholder key id and any
// secret key) by one made with the real key. Nothing of the agent's signature is checked: the
// placeholder only says which credential to use, and the policy already allowed the request.
func (p *Proxy) resign(out *http.Request, c *policy.Credential, secret []byte) error {
	if out.URL.Query().Has("X-Amz-Credential") {
		return errors.New("presigned URLs are not re-signed; sign requests in the Authorization header")
	}
	sc, ok := parseSigV4(out.Header.Get("Authorization"))
	if !ok {
		return errors.New("the request is not signed with AWS SigV4 (AWS4-HMAC-SHA256)")
	}
	if sc.keyID != c.Placeholder {
		return errors.New("the request is not signed with credential " + c.Name + "'s placeholder access key id")
	}
	payload := out.Header.Get("X-Amz-Content-Sha256")
	switch {
	case payload == "UNSIGNED-PAYLOAD", payload == "STREAMING-UNSIGNED-PAYLOAD-TRAILER":
		// The body is not covered by the signature: it goes as it is.
	case payload == streamingSigned:
		// Each chunk's signature chains from the header's: re-signed below, chunk by chunk.
	case strings.HasPrefix(payload, "STREAMING-"):
		return errors.New("streaming payloads " + payload + " are not supported; use " + streamingSigned + ", STREAMING-UNSIGNED-PAYLOAD-TRAILER or UNSIGNED-PAYLOAD")
	case payload != "":
		if len(payload) != 64 || strings.Trim(strings.ToLower(payload), "0123456789abcdef") != "" {
			return errors.New("invalid X-Amz-Content-Sha256")
		}
		// The upstream checks that the body matches the hash the agent declared.
	default:
		sum, err := p.hashBody(out)
		if err != nil {
			return err
		}
		payload = sum
	}
	out.Header.Del("Authorization")
	out.Header.Del("X-Amz-Date")
	out.Header.Del("X-Amz-Security-Token")
	creds := aws.Credentials{AccessKeyID: c.AccessKeyID, SecretAccessKey: string(secret)}
	err := v4.NewSigner().SignHTTP(out.Context(), creds, out, payload, sc.service, sc.region, time.Now(), func(o *v4.SignerOptions) {
		o.DisableURIPathEscaping = sc.service == "s3" // S3 signs the path as sent
	})
	if err != nil {
		return errors.New("re-signing failed")
	}
	if payload == streamingSigned && out.Body != nil && out.Body != http.NoBody {
		amzDate := out.Header.Get("X-Amz-Date")
		if len(amzDate) < 8 {
			return errors.New("re-signing failed")
		}
		date := amzDate[:8]
		key := signingKey(secret, date, sc.region, sc.service)
		scope := date + "/" + sc.region + "/" + sc.service + "/aws4_request"
		out.Body = newChunkResigner(out.Body, key, amzDate, scope, headerSignature(out.Header.Get("Authorization")))
	}
	return nil
}

// maxTokenEntries bounds the OAuth2 token cache (one entry per credential name).
const maxTokenEntries = 256

// tokens caches OAuth2 access tokens, one per credential name: a token minted for an earlier
// definition of the credential (another secret, endpoint, client or scopes) is dropped when
// the definition changes, and beyond maxTokenEntries the least recently used entry goes.
type tokens struct {
	mu  sync.Mutex
	m   map[string]*tokenEntry
	use uint64 // a counter standing in for the time of last use
}

// tokenEntry is one credential's token; its lock makes concurrent requests wait for one mint.
type tokenEntry struct {
	def  string // tokenKey of the definition the token was minted for
	used uint64 // under tokens.mu
	mu   sync.Mutex
	tok  *oauth2.Token
}

func tokenKey(c *policy.Credential) string {
	return strings.Join(append([]string{c.Name, c.Secret, c.TokenURL, c.ClientID}, c.Scopes...), "\x00")
}

// entry returns the cache entry for c's current definition.
func (t *tokens) entry(c *policy.Credential) *tokenEntry {
	def := tokenKey(c)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = make(map[string]*tokenEntry)
	}
	e := t.m[c.Name]
	if e == nil || e.def != def {
		if e == nil && len(t.m) >= maxTokenEntries {
			oldest := ""
			for name, o := range t.m {
				if oldest == "" || o.used < t.m[oldest].used {
					oldest = name
				}
			}
			delete(t.m, oldest)
		}
		e = &tokenEntry{def: def}
		t.m[c.Name] = e
	}
	t.use++
	e.used = t.use
	return e
}

// token returns a valid access token for c, minting one with the client-credentials grant when
// the cached one is missing or expires within 10 seconds. The client secret is read from the
// vault only while a token is minted, and is sent only to the token endpoint. ev is the request
// that needs the token; a mint is audited in its name.
func (p *Proxy) token(c *policy.Credential, ev Event) (string, error) {
	e := p.tokens.entry(c)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.tok.Valid() {
		return e.tok.AccessToken, nil
	}
	tok, err := p.mint(c, ev)
	if err != nil {
		return "", err
	}
	e.tok = tok
	return tok.AccessToken, nil
}

// mint asks the token endpoint for a new token, with a credential.mint audit record durable
// before the client secret leaves.
func (p *Proxy) mint(c *policy.Credential, ev Event) (*oauth2.Token, error) {
	u, err := url.Parse(c.TokenURL)
	if err != nil {
		return nil, errors.New("invalid token URL")
	}
	ev.Kind, ev.Method, ev.Host, ev.Path, ev.URL = "credential.mint", http.MethodPost, u.Hostname(), u.Path, "https://"+u.Host+u.Path
	ev.Credential, ev.Reason = c.Name, ""
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.DialTimeout+30*time.Second)
	defer cancel()
	ctx, finish, err := p.cfg.Recorder.Begin(ctx, ev)
	if err != nil {
		return nil, errors.New("audit log unavailable")
	}
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig:     tlsClientConfig(p.cfg.UpstreamRoots, u.Hostname()),
		TLSHandshakeTimeout: 10 * time.Second,
	}}
	defer client.CloseIdleConnections()
	ctx = context.WithValue(ctx, oauth2.HTTPClient, client)
	var tok *oauth2.Token
	opened := false
	err = p.cfg.Secrets.WithSecretVersion(c.Secret, u.Hostname(), func(secret []byte, _ int) error {
		opened = true
		cfg := clientcredentials.Config{
			ClientID: c.ClientID, ClientSecret: string(secret), TokenURL: c.TokenURL, Scopes: c.Scopes,
			AuthStyle: oauth2.AuthStyleInHeader,
		}
		var err error
		tok, err = cfg.Token(ctx)
		return err
	})
	var re *oauth2.RetrieveError
	switch {
	case !opened:
		finish(Result{Err: errors.New("client secret unavailable; nothing was sent")})
		return nil, fmt.Errorf("client secret unavailable: %w", err)
	case err == nil && (tok.AccessToken == "" || !httpguts.ValidHeaderFieldValue(tok.AccessToken)):
		// It would go in the Authorization header: a token with control characters in it
		// could not be sent (or would split the header), so the mint fails here, clearly.
		finish(Result{Status: http.StatusOK, Err: errors.New("token endpoint returned an access token that is not a valid header value")})
		return nil, errors.New("token endpoint returned an access token that is not a valid header value")
	case err == nil:
		finish(Result{Status: http.StatusOK})
		return tok, nil
	case errors.As(err, &re):
		finish(Result{Status: re.Response.StatusCode, Err: errors.New("token endpoint refused")})
		return nil, fmt.Errorf("token endpoint answered %d", re.Response.StatusCode)
	default:
		reason := "token endpoint unreachable: " + upstreamReason(err)
		finish(Result{Status: http.StatusBadGateway, Err: errors.New(reason)})
		return nil, errors.New(reason)
	}
}

// precheck runs after Authorize: a placeholder may only travel toward a host its credential
// is bound to, with the rule that injects that credential; a granted request must meet its
// rule's conditions. It returns the refusal, or nil to go on.
func (p *Proxy) precheck(req *http.Request, ev Event, g policy.Grant, host string) *http.Response {
	if pc := p.findPlaceholder(req); pc != nil && (!g.Allow || g.Credential != pc) {
		return p.refuse(req, ev, http.StatusForbidden, g.Rule, "placeholder of credential "+pc.Name+" sent to "+host+", where that credential is not injected")
	}
	if !g.Allow || g.Conditions == nil {
		return nil
	}
	if err := checkBody(req, g.Conditions.MaxBody); err != nil {
		if !errors.Is(err, policy.ErrBodyTooLarge) {
			return p.refuse(req, ev, http.StatusBadRequest, g.Rule, "reading request body failed")
		}
		return p.refuse(req, ev, limitStatus(err), g.Rule, err.Error())
	}
	if err := p.cfg.Limits.Admit(ev.Agent, g); err != nil {
		resp := p.refuse(req, ev, limitStatus(err), g.Rule, err.Error())
		var le *policy.LimitError
		if errors.As(err, &le) && le.RetryAfter > 0 {
			// Whole seconds, rounded up: an agent that waits this long is admitted.
			resp.Header.Set("Retry-After", strconv.FormatInt(int64((le.RetryAfter+time.Second-1)/time.Second), 10))
		}
		return resp
	}
	return nil
}

// injectCredential puts g's credential into out. On failure it records the refusal and
// returns the response for the agent. It also returns the injected values to mask in the
// response (redact.go).
func (p *Proxy) injectCredential(req, out *http.Request, c *policy.Credential, host string, ev *Event) (*http.Response, [][]byte) {
	var err error
	var forms [][]byte
	if c.Style == policy.OAuth2 {
		var tok string
		if tok, err = p.token(c, *ev); err == nil {
			dropAgentAuth(out)
			out.Header.Set("Authorization", "Bearer "+tok)
			forms = redactForms(c, []byte(tok))
		}
	} else {
		var injErr error
		err = p.cfg.Secrets.WithSecretVersion(c.Secret, host, func(secret []byte, version int) error {
			ev.CredVer = version
			if injErr = p.inject(out, c, secret); injErr == nil {
				forms = redactForms(c, secret)
			}
			return nil
		})
		if err == nil && injErr != nil {
			return p.refuse(req, *ev, statusOf(injErr), ev.Rule, injErr.Error()), nil
		}
	}
	if err != nil {
		p.log.Error("credential unavailable", "agent", ev.Agent, "credential", c.Name, "err", err)
		d := *ev
		d.Kind, d.Reason = "request.deny", "credential unavailable: "+err.Error()
		p.cfg.Recorder.Deny(req.Context(), d)
		if errors.Is(err, ErrLimited) {
			return errorResponse(req, statusOf(err), ev.Rule, ErrLimited.Error()), nil
		}
		return errorResponse(req, http.StatusServiceUnavailable, ev.Rule, "credential unavailable"), nil
	}
	return nil, forms
}

// spend counts the tokens an LLM response reported against the rule's daily budget.
func (p *Proxy) spend(agent string, g policy.Grant, u Usage) {
	if g.Conditions != nil && g.Conditions.DailyTokens > 0 && u.Found() {
		p.cfg.Limits.Spend(agent, g, u.InputTokens+u.OutputTokens)
	}
}
