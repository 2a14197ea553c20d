package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"golang.org/x/mod/sumdb/tlog"
)

// upstreamError is an error type whose message may carry anything.
type upstreamError struct{ msg string }

func (e upstreamError) Error() string { return e.msg }

func TestSpans(t *testing.T) {
	c := canary(t)
	entry := Entry{Seq: 41, Hash: tlog.Hash{1, 2, 3}}
	start := SpanStart{
		Method: "POST", URL: "https://api.anthropic.com/v1/messages", Host: "api.anthropic.com", Port: 443,
		Agent: "agent-7", Rule: "llm", Credential: "anthropic-prod",
	}
	baseAttrs := map[string]any{
		"http.request.method": "POST",
		"url.full":            "https://api.anthropic.com/v1/messages",
		"server.address":      "api.anthropic.com",
		"server.port":         int64(443),
		"wirken.agent":        "agent-7",
		"wirken.rule":         "llm",
		"wirken.credential":   "anthropic-prod",
	}
	with := func(extra map[string]any, drop ...string) map[string]any {
		m := make(map[string]any)
		for k, v := range baseAttrs {
			m[k] = v
		}
		for k, v := range extra {
			m[k] = v
		}
		for _, k := range drop {
			delete(m, k)
		}
		return m
	}
	tests := []struct {
		name       string
		start      SpanStart
		status     int
		decision   string
		entry      Entry
		err        error
		wantName   string
		wantAttrs  map[string]any
		wantStatus codes.Code
		wantDesc   string
	}{
		{
			name: "success", start: start, status: 200, decision: "allow", entry: entry,
			wantName: "POST",
			wantAttrs: with(map[string]any{
				"http.response.status_code": int64(200), "wirken.decision": "allow",
				"wirken.audit.seq": int64(41), "wirken.audit.leaf_hash": entry.HashString(),
			}),
			wantStatus: codes.Unset,
		},
		{
			name: "4xx leaves the status unset (only err or >= 500 is an error)", start: start, status: 404, decision: "allow", entry: entry,
			wantName: "POST",
			wantAttrs: with(map[string]any{
				"http.response.status_code": int64(404), "wirken.decision": "allow",
				"wirken.audit.seq": int64(41), "wirken.audit.leaf_hash": entry.HashString(),
			}),
			wantStatus: codes.Unset,
		},
		{
			name: "upstream 503", start: start, status: 503, decision: "allow", entry: entry,
			wantName: "POST",
			wantAttrs: with(map[string]any{
				"http.response.status_code": int64(503), "wirken.decision": "allow", "error.type": "503",
				"wirken.audit.seq": int64(41), "wirken.audit.leaf_hash": entry.HashString(),
			}),
			wantStatus: codes.Error,
		},
		{
			name: "transport error: type only, never the message", start: start, decision: "allow", entry: entry,
			err:      fmt.Errorf("dialing upstream: %w", upstreamError{msg: "refused, key=" + c}),
			wantName: "POST",
			wantAttrs: with(map[string]any{
				"wirken.decision": "allow", "error.type": "github.com/wirken/wirken/audit.upstreamError",
				"wirken.audit.seq": int64(41), "wirken.audit.leaf_hash": entry.HashString(),
			}),
			wantStatus: codes.Error, wantDesc: "github.com/wirken/wirken/audit.upstreamError",
		},
		{
			name: "zero entry and empty decision are left off", start: start, status: 200,
			wantName:   "POST",
			wantAttrs:  with(map[string]any{"http.response.status_code": int64(200)}),
			wantStatus: codes.Unset,
		},
		{
			name:     "seq 0 with a hash is recorded",
			start:    SpanStart{Method: "GET"},
			entry:    Entry{Seq: 0, Hash: tlog.Hash{9}},
			wantName: "GET",
			wantAttrs: map[string]any{
				"http.request.method": "GET", "wirken.audit.seq": int64(0),
				"wirken.audit.leaf_hash": Entry{Hash: tlog.Hash{9}}.HashString(),
			},
			wantStatus: codes.Unset,
		},
		{
			name:     "unknown method",
			start:    SpanStart{Method: "FROB", Host: "h"},
			status:   200,
			wantName: "HTTP",
			wantAttrs: map[string]any{
				"http.request.method": "_OTHER", "http.request.method_original": "FROB",
				"server.address": "h", "http.response.status_code": int64(200),
			},
			wantStatus: codes.Unset,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			exp := tracetest.NewInMemoryExporter()
			tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
			defer func() { _ = tp.Shutdown(context.Background()) }()
			ctx, span := StartSpan(context.Background(), tp.Tracer("wirken-test"), tc.start)
			if !trace.SpanFromContext(ctx).SpanContext().Equal(span.SpanContext()) {
				t.Fatal("returned context does not carry the span")
			}
			EndSpan(span, tc.status, tc.decision, tc.entry, tc.err)
			spans := exp.GetSpans()
			if len(spans) != 1 {
				t.Fatalf("%d spans, want 1", len(spans))
			}
			s := spans[0]
			if s.Name != tc.wantName || s.SpanKind != trace.SpanKindClient {
				t.Fatalf("span %q kind %v, want %q client", s.Name, s.SpanKind, tc.wantName)
			}
			got := attrMap(s.Attributes)
			if len(got) != len(tc.wantAttrs) {
				t.Errorf("attributes %v, want %v", got, tc.wantAttrs)
			}
			for k, v := range tc.wantAttrs {
				if got[k] != v {
					t.Errorf("attribute %s = %#v, want %#v", k, got[k], v)
				}
			}
			if s.Status.Code != tc.wantStatus || s.Status.Description != tc.wantDesc {
				t.Errorf("status %v %q, want %v %q", s.Status.Code, s.Status.Description, tc.wantStatus, tc.wantDesc)
			}
			raw, err := json.Marshal(s)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(raw), c) {
				t.Fatal("span leaks the canary")
			}
		})
	}
}

func attrMap(kvs []attribute.KeyValue) map[string]any {
	m := make(map[string]any, len(kvs))
	for _, kv := range kvs {
		m[string(kv.Key)] = kv.Value.AsInterface()
	}
	return m
}

func TestSpanNilInputsDoNotPanic(t *testing.T) {
	//nolint:staticcheck // a nil context is exactly what is being tested
	ctx, span := StartSpan(nil, nil, SpanStart{Method: "GET"})
	if ctx == nil || span == nil {
		t.Fatal("StartSpan returned nil")
	}
	if span.IsRecording() {
		t.Fatal("a nil tracer must give a non-recording span")
	}
	EndSpan(span, 500, "allow", Entry{Seq: 1}, errors.New("x"))
	EndSpan(nil, 200, "allow", Entry{}, nil)
}
