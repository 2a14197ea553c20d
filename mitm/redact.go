package mitm

import (
	"bytes"
	"encoding/base64"
	"io"
	"net/http"
	"net/url"
	"strings"
	"unsafe"

	"github.com/wirken/wirken/policy"
)

// An upstream that echoes a request back (a debugging endpoint, an error message quoting the
// Authorization header) would hand the agent the secret wirken injected. The forms of the
// injected secret that went upstream are therefore masked in the response's header fields and
// body: each byte becomes '*', so lengths (and Content-Length) stay as they were. What cannot
// be seen is not masked: a compressed body (a credentialed request asks the upstream for
// identity; one that compresses anyway is not unpacked), a WebSocket relay after the upgrade,
// a value shorter than minRedactLen (masking it would garble ordinary text), and a secret
// fetched in pieces shorter than itself (Range requests).

// minRedactLen is the shortest injected value that is masked.
const minRedactLen = 8

// redactForms are the forms of secret that inject sends upstream for credential c (and the
// raw value, which any upstream may quote): fresh copies, as secret is valid only during the
// vault's callback.
func redactForms(c *policy.Credential, secret []byte) [][]byte {
	forms := [][]byte{bytes.Clone(secret)}
	switch c.Style {
	case policy.Basic:
		forms = append(forms, []byte(base64.StdEncoding.EncodeToString([]byte(c.User+":"+string(secret)))))
	case policy.Query:
		forms = append(forms, []byte(url.QueryEscape(string(secret))))
	}
	var out [][]byte
	for _, f := range forms {
		if len(f) >= minRedactLen {
			out = append(out, f)
		}
	}
	return out
}

// mask overwrites every occurrence of each secret in b with '*'.
func mask(b []byte, secrets [][]byte) {
	for _, s := range secrets {
		for i := 0; ; {
			j := bytes.Index(b[i:], s)
			if j < 0 {
				break
			}
			copy(b[i+j:i+j+len(s)], bytes.Repeat([]byte{'*'}, len(s)))
			i += j + len(s)
		}
	}
}

// redactHeader masks the secrets in every header value.
func redactHeader(h http.Header, secrets [][]byte) {
	for k, vs := range h {
		for i, v := range vs {
			for _, s := range secrets {
				// unsafe.String: a read-only view of s (never empty), not a copy per header value.
				if len(v) >= len(s) && strings.Contains(v, unsafe.String(&s[0], len(s))) {
					v = strings.ReplaceAll(v, string(s), strings.Repeat("*", len(s)))
				}
			}
			h[k][i] = v
		}
	}
}

// redactingBody masks the secrets in a streamed body. It holds back only the bytes at the end
// of what has arrived that could begin a secret, so a stream (SSE) is not delayed otherwise.
type redactingBody struct {
	io.ReadCloser
	resp    *http.Response // its Trailer is filled in by the transport at the end of the body
	secrets [][]byte
	buf     []byte // arrived, masked, not yet returned
	ready   int    // buf[:ready] may be returned
	err     error  // from the upstream body, returned once buf is drained
	scratch []byte
}

func newRedactingBody(body io.ReadCloser, resp *http.Response, secrets [][]byte) *redactingBody {
	return &redactingBody{ReadCloser: body, resp: resp, secrets: secrets}
}

// Read masks the body and, once the upstream body has ended (when the transport has filled in
// the trailers, before anyone can read them), the trailers.
func (b *redactingBody) Read(p []byte) (int, error) {
	n, err := b.read(p)
	if err != nil && b.resp != nil {
		redactHeader(b.resp.Trailer, b.secrets)
	}
	return n, err
}

func (b *redactingBody) read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if len(b.buf) == 0 && b.err == nil {
		// Nothing held back: read straight into p.
		n, err := b.ReadCloser.Read(p)
		mask(p[:n], b.secrets)
		k := 0
		if err == nil {
			k = partial(p[:n], b.secrets)
		}
		if k < n || err != nil {
			b.buf = append(b.buf, p[n-k:n]...)
			b.err = err
			if k > 0 {
				err = nil
			}
			return n - k, err
		}
		b.buf = append(b.buf, p[:n]...) // all of it could begin a secret: wait for more
	}
	for b.ready == 0 && b.err == nil {
		if len(b.scratch) < len(p) {
			b.scratch = make([]byte, max(len(p), 4096))
		}
		n, err := b.ReadCloser.Read(b.scratch[:len(p)])
		b.buf = append(b.buf, b.scratch[:n]...)
		b.err = err
		mask(b.buf, b.secrets)
		b.ready = len(b.buf)
		if err == nil {
			b.ready -= partial(b.buf, b.secrets)
		}
	}
	if b.ready == 0 {
		b.buf = nil
		return 0, b.err
	}
	n := copy(p, b.buf[:b.ready])
	b.buf, b.ready = b.buf[n:], b.ready-n
	return n, nil
}

// partial is the length of the longest end of buf that is a proper beginning of a secret.
func partial(buf []byte, secrets [][]byte) int {
	longest := 0
	for _, s := range secrets {
		for k := min(len(s)-1, len(buf)); k > longest; k-- {
			if bytes.Equal(buf[len(buf)-k:], s[:k]) {
				longest = k
				break
			}
		}
	}
	return longest
}
