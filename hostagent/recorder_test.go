package hostagent

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/wirken/wirken/audit"
	"github.com/wirken/wirken/mitm"
)

func TestRecorder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	l, err := audit.Open(path, logger)
	if err != nil {
		t.Fatal(err)
	}
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	reader := sdkmetric.NewManualReader()
	met, err := newMetrics(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)).Meter("test"))
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{log: l, tracer: tp.Tracer("test"), metrics: met, logger: logger}

	ev := mitm.Event{
		Kind: "credential.use", Agent: "demo", Dst: netip.MustParseAddrPort("127.0.0.2:443"),
		Method: "POST", Host: "api.example.test", Port: 443, Path: "/v1/chat",
		URL: "https://api.example.test/v1/chat", Rule: "r1", Credential: "api",
	}
	_, finish, err := r.Begin(context.Background(), ev)
	if err != nil {
		t.Fatal(err)
	}
	// The use record is on disk before Begin returns, i.e. before anything goes upstream.
	onDisk, _ := os.ReadFile(path)
	if !strings.Contains(string(onDisk), `"type":"credential.use"`) {
		t.Fatalf("credential.use not durable after Begin:\n%s", onDisk)
	}
	finish(mitm.Result{Status: 200, Bytes: 1234, Usage: mitm.Usage{Model: "gpt-test", InputTokens: 12, OutputTokens: 34}})
	r.Deny(context.Background(), mitm.Event{Kind: "request.deny", Agent: "demo", Method: "GET", Host: "api.example.test", Path: "/admin", Reason: "path not allowed"})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	f, _ := os.Open(path)
	sum, err := audit.Verify(f)
	f.Close()
	if err != nil || sum.Records != 3 {
		t.Fatalf("verify: %d records, %v; want 3 valid", sum.Records, err)
	}
	onDisk, _ = os.ReadFile(path)
	for _, want := range []string{`"type":"credential.result"`, `"status":200`, `"bytes":1234`, `"model":"gpt-test"`, `"tokens_in":12`, `"tokens_out":34`, `"type":"request.deny"`, `"decision":"deny"`} {
		if !strings.Contains(string(onDisk), want) {
			t.Errorf("audit log lacks %s", want)
		}
	}

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	counts := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					counts[m.Name] += p.Value
				}
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					counts[m.Name] += int64(p.Count)
				}
			}
		}
	}
	for name, want := range map[string]int64{"wirken.requests": 1, "wirken.denials": 1, "wirken.request.duration": 1, "wirken.audit.lag": 3} {
		if counts[name] != want {
			t.Errorf("metric %s = %d, want %d (all: %v)", name, counts[name], want, counts)
		}
	}

	spans := exp.GetSpans()
	if len(spans) != 2 {
		t.Fatalf("%d spans; want 2 (the request and the denial)", len(spans))
	}
	attrs := map[string]string{}
	for _, a := range spans[0].Attributes {
		attrs[string(a.Key)] = a.Value.Emit()
	}
	for k, want := range map[string]string{"wirken.agent": "demo", "wirken.credential": "api", "wirken.audit.seq": "0", "http.response.status_code": "200", "gen_ai.usage.output_tokens": "34"} {
		if attrs[k] != want {
			t.Errorf("span attribute %s = %q, want %q (all: %v)", k, attrs[k], want, attrs)
		}
	}
	if !strings.Contains(string(onDisk), spans[0].SpanContext.TraceID().String()) {
		t.Error("the audit record does not carry the span's trace id")
	}
}

type failingAppender struct{}

func (failingAppender) Append(audit.Record) (audit.Entry, error) {
	return audit.Entry{}, errors.New("no space left on device")
}

func (failingAppender) AppendAsync(_ audit.Record, done func(audit.Entry, error)) error {
	return errors.New("no space left on device")
}

func TestRecorderFailsClosed(t *testing.T) {
	met, _ := newMetrics(metricnoop.NewMeterProvider().Meter("t"))
	r := &recorder{log: failingAppender{}, tracer: sdktrace.NewTracerProvider().Tracer("t"), metrics: met, logger: slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))}
	_, finish, err := r.Begin(context.Background(), mitm.Event{Kind: "credential.use", Agent: "demo"})
	if err == nil || finish != nil {
		t.Fatal("Begin succeeded although the audit record could not be written")
	}
}

// A response under a token budget that reported no usage says so on its result record.
func TestRecorderUsageMissing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	logger := slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))
	l, err := audit.Open(path, logger)
	if err != nil {
		t.Fatal(err)
	}
	met, err := newMetrics(metricnoop.NewMeterProvider().Meter("test"))
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{log: l, tracer: sdktrace.NewTracerProvider().Tracer("test"), metrics: met, logger: logger}
	ev := mitm.Event{Kind: "request.allow", Agent: "demo", Method: "POST", Host: "api.example.test", Port: 443, Rule: "llm"}
	for _, missing := range []bool{true, false} {
		_, finish, err := r.Begin(context.Background(), ev)
		if err != nil {
			t.Fatal(err)
		}
		finish(mitm.Result{Status: 200, UsageMissing: missing})
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	onDisk, _ := os.ReadFile(path)
	if n := strings.Count(string(onDisk), `usage_missing`); n != 1 {
		t.Fatalf("%d records say usage_missing; want 1:\n%s", n, onDisk)
	}
}
