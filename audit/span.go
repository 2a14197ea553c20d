package audit

import (
	"context"
	"math"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// wirken.* span attributes.
const (
	attrAgent         = attribute.Key("wirken.agent")
	attrRule          = attribute.Key("wirken.rule")
	attrCredential    = attribute.Key("wirken.credential")
	attrDecision      = attribute.Key("wirken.decision")
	attrAuditSeq      = attribute.Key("wirken.audit.seq")
	attrAuditLeafHash = attribute.Key("wirken.audit.leaf_hash")
)

// knownMethods are the methods the HTTP semantic conventions call known;
// any other is reported as _OTHER.
var knownMethods = map[string]bool{
	"CONNECT": true, "DELETE": true, "GET": true, "HEAD": true, "OPTIONS": true,
	"PATCH": true, "POST": true, "PUT": true, "TRACE": true, "QUERY": true,
}

// SpanStart describes an upstream request. URL must already be redacted
// (no userinfo, no injected query parameters). Credential is the credential's
// name, never its value. Empty fields and a zero Port are left off the span.
type SpanStart struct {
	Method     string
	URL        string
	Host       string
	Port       int
	Agent      string
	Rule       string
	Credential string
	// CredentialVersion is the vault version of the credential's secret (0 if none).
	CredentialVersion int
}

// StartSpan starts one CLIENT span for an upstream request, named after the
// HTTP method ("HTTP" when the method is not a known one, as the semantic
// conventions ask). A nil tracer yields a non-recording span.
func StartSpan(ctx context.Context, t trace.Tracer, s SpanStart) (context.Context, trace.Span) {
	if t == nil {
		t = noop.NewTracerProvider().Tracer("")
	}
	if ctx == nil {
		ctx = context.Background()
	}
	name := s.Method
	attrs := make([]attribute.KeyValue, 0, 8)
	if knownMethods[s.Method] {
		attrs = append(attrs, semconv.HTTPRequestMethodKey.String(s.Method))
	} else {
		name = "HTTP"
		attrs = append(attrs, semconv.HTTPRequestMethodOther)
		if s.Method != "" {
			attrs = append(attrs, semconv.HTTPRequestMethodOriginal(s.Method))
		}
	}
	if s.URL != "" {
		attrs = append(attrs, semconv.URLFull(s.URL))
	}
	if s.Host != "" {
		attrs = append(attrs, semconv.ServerAddress(s.Host))
	}
	if s.Port > 0 {
		attrs = append(attrs, semconv.ServerPort(s.Port))
	}
	attrs = appendIfSet(attrs, attrAgent, s.Agent)
	attrs = appendIfSet(attrs, attrRule, s.Rule)
	attrs = appendIfSet(attrs, attrCredential, s.Credential)
	if s.CredentialVersion > 0 {
		attrs = append(attrs, attribute.Int("wirken.credential.version", s.CredentialVersion))
	}
	return t.Start(ctx, name, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
}

// EndSpan records the outcome and ends span. It sets
// http.response.status_code (when status > 0), wirken.decision (when set),
// wirken.audit.seq and wirken.audit.leaf_hash (when e is not the zero
// Entry), and, for err != nil or status >= 500, error.type and an Error
// status. The error's message is never put on the span (it may hold a URL
// or upstream text); only its type is.
func EndSpan(span trace.Span, status int, decision string, e Entry, err error) {
	if span == nil {
		return
	}
	attrs := make([]attribute.KeyValue, 0, 5)
	if status > 0 {
		attrs = append(attrs, semconv.HTTPResponseStatusCode(status))
	}
	attrs = appendIfSet(attrs, attrDecision, decision)
	if !e.isZero() {
		seq := int64(math.MaxInt64)
		if e.Seq <= math.MaxInt64 {
			seq = int64(e.Seq)
		}
		attrs = append(attrs, attrAuditSeq.Int64(seq), attrAuditLeafHash.String(e.HashString()))
	}
	switch {
	case err != nil:
		et := semconv.ErrorType(err)
		attrs = append(attrs, et)
		span.SetStatus(codes.Error, et.Value.AsString())
	case status >= 500:
		attrs = append(attrs, semconv.ErrorTypeKey.String(strconv.Itoa(status)))
		span.SetStatus(codes.Error, "")
	}
	span.SetAttributes(attrs...)
	span.End()
}

func appendIfSet(attrs []attribute.KeyValue, k attribute.Key, v string) []attribute.KeyValue {
	if v == "" {
		return attrs
	}
	return append(attrs, k.String(v))
}

// SetUsage records what an LLM API response reported, with the OpenTelemetry GenAI attribute
// names.
func SetUsage(span trace.Span, model string, inputTokens, outputTokens int64) {
	if span == nil {
		return
	}
	if model != "" {
		span.SetAttributes(attribute.String("gen_ai.response.model", model))
	}
	if inputTokens > 0 {
		span.SetAttributes(attribute.Int64("gen_ai.usage.input_tokens", inputTokens))
	}
	if outputTokens > 0 {
		span.SetAttributes(attribute.Int64("gen_ai.usage.output_tokens", outputTokens))
	}
}
