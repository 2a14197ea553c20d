package hostagent

import (
	"context"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// metrics are the daemon's OTel instruments. They are recorded through the API only; cmd/
// decides where they go.
type metrics struct {
	requests  metric.Int64Counter     // requests sent upstream, by agent and outcome
	denials   metric.Int64Counter     // refusals, by agent and kind
	duration  metric.Float64Histogram // time from the audit record to the end of the response
	auditLag  metric.Float64Histogram // time to make one audit record durable
	auditFail metric.Int64Counter     // audit writes that failed (each one a refused request)
	counts    *counters               // the same totals per agent, for wirken status
}

func newMetrics(m metric.Meter) (*metrics, error) {
	var out metrics
	var err error
	if out.requests, err = m.Int64Counter("wirken.requests",
		metric.WithDescription("Requests forwarded upstream"), metric.WithUnit("{request}")); err != nil {
		return nil, fmt.Errorf("creating metric: %w", err)
	}
	if out.denials, err = m.Int64Counter("wirken.denials",
		metric.WithDescription("Connections and requests refused"), metric.WithUnit("{decision}")); err != nil {
		return nil, fmt.Errorf("creating metric: %w", err)
	}
	if out.duration, err = m.Float64Histogram("wirken.request.duration",
		metric.WithDescription("Time from the durable audit record to the end of the upstream response"), metric.WithUnit("s"),
		metric.WithExplicitBucketBoundaries(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)); err != nil {
		return nil, fmt.Errorf("creating metric: %w", err)
	}
	if out.auditLag, err = m.Float64Histogram("wirken.audit.lag",
		metric.WithDescription("Time to make an audit record durable (write + fdatasync, group-committed)"), metric.WithUnit("s"),
		metric.WithExplicitBucketBoundaries(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1)); err != nil {
		return nil, fmt.Errorf("creating metric: %w", err)
	}
	if out.auditFail, err = m.Int64Counter("wirken.audit.failures",
		metric.WithDescription("Audit records that could not be written"), metric.WithUnit("{record}")); err != nil {
		return nil, fmt.Errorf("creating metric: %w", err)
	}
	return &out, nil
}

func (m *metrics) denied(agent, kind string) {
	m.counts.add(agent, 0, 1)
	m.denials.Add(context.Background(), 1, metric.WithAttributes(attribute.String("wirken.agent", agent), attribute.String("wirken.decision.kind", kind)))
}

func (m *metrics) appended(start time.Time, err error) {
	if err != nil {
		m.auditFail.Add(context.Background(), 1)
		return
	}
	m.auditLag.Record(context.Background(), time.Since(start).Seconds())
}

func (m *metrics) finished(agent string, status int, start time.Time) {
	m.counts.add(agent, 1, 0)
	attrs := metric.WithAttributes(attribute.String("wirken.agent", agent), attribute.Int("http.response.status_code", status))
	m.requests.Add(context.Background(), 1, attrs)
	m.duration.Record(context.Background(), time.Since(start).Seconds(), attrs)
}
