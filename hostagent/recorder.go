package hostagent

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/wirken/wirken/audit"
	"github.com/wirken/wirken/mitm"
)

// appender is the part of the audit log the recorder needs.
type appender interface {
	Append(audit.Record) (audit.Entry, error)
	AppendAsync(audit.Record, func(audit.Entry, error)) error
}

// recorder turns the proxy's events into durable audit records and OTel spans.
type recorder struct {
	log     appender
	tracer  trace.Tracer
	metrics *metrics
	logger  *slog.Logger
}

// append writes one record and measures how long it took to become durable.
func (r *recorder) append(rec audit.Record) (audit.Entry, error) {
	start := time.Now()
	ent, err := r.log.Append(rec)
	r.metrics.appended(start, err)
	return ent, err
}

// appendAsync queues one record without waiting for it; a failure is logged and counted.
func (r *recorder) appendAsync(rec audit.Record) {
	start, typ := time.Now(), rec.Type
	done := func(_ audit.Entry, err error) {
		r.metrics.appended(start, err)
		if err != nil {
			r.logger.Error("audit log write failed", "record", typ, "err", err)
		}
	}
	if err := r.log.AppendAsync(rec, done); err != nil {
		done(audit.Entry{}, err)
	}
}

func (r *recorder) record(e mitm.Event) audit.Record {
	rec := audit.Record{
		Type: e.Kind, Agent: e.Agent, Rule: e.Rule, Credential: e.Credential, CredVer: e.CredVer,
		Method: e.Method, Host: e.Host, Port: e.Port, Path: e.Path,
		Reason: e.Reason, PID: e.PID, UID: e.UID, Comm: e.Comm,
	}
	if e.Dst.IsValid() {
		rec.Dst = e.Dst.String()
	}
	return rec
}

// Deny records a refusal. Nothing went upstream, so a failed write is logged, not fatal.
func (r *recorder) Deny(ctx context.Context, e mitm.Event) {
	rec := r.record(e)
	rec.Decision = "deny"
	var span trace.Span
	if e.Method != "" {
		ctx, span = audit.StartSpan(ctx, r.tracer, r.spanStart(e))
		sc := span.SpanContext()
		rec.TraceID, rec.SpanID = sc.TraceID().String(), sc.SpanID().String()
	}
	r.metrics.denied(e.Agent, e.Kind)
	ent, err := r.append(rec)
	if err != nil {
		r.logger.Error("audit log write failed", "record", rec.Type, "err", err)
	}
	if span != nil {
		audit.EndSpan(span, 403, "deny", ent, err)
	}
}

// Begin makes the allow record durable before the request may go upstream.
func (r *recorder) Begin(ctx context.Context, e mitm.Event) (context.Context, func(mitm.Result), error) {
	rec := r.record(e)
	rec.Decision = "allow"
	ctx, span := audit.StartSpan(ctx, r.tracer, r.spanStart(e))
	sc := span.SpanContext()
	if sc.IsValid() {
		rec.TraceID, rec.SpanID = sc.TraceID().String(), sc.SpanID().String()
	}
	ent, err := r.append(rec)
	start := time.Now()
	if err != nil {
		r.logger.Error("AUDIT LOG UNAVAILABLE: refusing to forward requests until it can be written", "err", err)
		audit.EndSpan(span, 503, "deny", audit.Entry{}, err)
		return ctx, nil, fmt.Errorf("writing audit record: %w", err)
	}
	finish := func(out mitm.Result) {
		// credential.result closes a credential.use; request.result any other forwarded request.
		res := r.record(e)
		res.Type, res.Status, res.Bytes = "request.result", out.Status, out.Bytes
		if e.Kind == "credential.use" {
			res.Type = "credential.result"
		}
		res.TraceID, res.SpanID = rec.TraceID, rec.SpanID
		res.Detail = fmt.Sprintf("result of seq %d", ent.Seq)
		res.Model, res.TokensIn, res.TokensOut = out.Usage.Model, out.Usage.InputTokens, out.Usage.OutputTokens
		if out.Err != nil {
			res.Reason = out.Err.Error()
		}
		if out.UsageMissing && res.Reason == "" {
			res.Reason = "usage_missing: no token usage in the response; nothing counted against the budget"
		}
		// The response has reached the agent: the result record is queued, group-committed
		// with the next batch (and written by Close at shutdown), not waited for.
		r.appendAsync(res)
		r.metrics.finished(e.Agent, out.Status, start)
		if out.Usage.Found() {
			audit.SetUsage(span, out.Usage.Model, out.Usage.InputTokens, out.Usage.OutputTokens)
		}
		audit.EndSpan(span, out.Status, "allow", ent, out.Err)
	}
	return ctx, finish, nil
}

func (r *recorder) spanStart(e mitm.Event) audit.SpanStart {
	return audit.SpanStart{
		Method: e.Method, URL: e.URL, Host: e.Host, Port: int(e.Port),
		Agent: e.Agent, Rule: e.Rule, Credential: e.Credential, CredentialVersion: e.CredVer,
	}
}
