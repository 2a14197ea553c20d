package mitm

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// RuleHeader names the rule behind a response wirken generated itself.
const RuleHeader = "X-Wirken-Rule"

// Why wirken answers a request itself. Each maps to one status (statusOf); a refusal's body
// starts with "wirken:" and RuleHeader names the rule, so an agent and its operator can tell
// why.
var (
	// ErrLimited is a rate limit or budget that is spent (429). A Policy, Secrets or injection
	// step returns it (wrapped) to have the request answered 429 Too Many Requests.
	ErrLimited = errors.New("limit reached")
	// ErrAuditUnavailable: the audit record could not be written, so nothing is sent (503).
	ErrAuditUnavailable = errors.New("audit log unavailable")
	// ErrUpstream: the upstream could not be reached or failed (502).
	ErrUpstream = errors.New("upstream failed")
	// ErrBadRequest: the request is malformed or ambiguous (400).
	ErrBadRequest = errors.New("bad request")
	// ErrLoop: the request would come back to wirken itself (508).
	ErrLoop = errors.New("proxy loop")
)

// statusOf maps why a request is refused to the status the agent sees. Anything else is a
// policy refusal (403).
func statusOf(err error) int {
	switch {
	case errors.Is(err, ErrLimited):
		return http.StatusTooManyRequests
	case errors.Is(err, ErrAuditUnavailable), errors.Is(err, ErrBusy):
		return http.StatusServiceUnavailable
	case errors.Is(err, ErrUpstream):
		return http.StatusBadGateway
	case errors.Is(err, ErrBadRequest):
		return http.StatusBadRequest
	case errors.Is(err, ErrLoop):
		return http.StatusLoopDetected
	}
	return http.StatusForbidden
}

// errorResponse is the one place wirken's own answers are built.
func errorResponse(req *http.Request, status int, rule, reason string) *http.Response {
	body := "wirken: " + reason + "\n"
	h := http.Header{}
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	if rule != "" {
		h.Set(RuleHeader, rule)
	}
	return &http.Response{
		StatusCode:    status,
		Status:        fmt.Sprintf("%d %s", status, http.StatusText(status)),
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h,
		Body:          io.NopCloser(strings.NewReader(body)),
		ContentLength: int64(len(body)),
		Request:       req,
	}
}
