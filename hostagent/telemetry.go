package hostagent

import (
	"log/slog"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// instrumentation names wirken's tracer and meter.
const instrumentation = "github.com/wirken/wirken"

// Telemetry is where the daemon's logs, spans and metrics go. cmd/ builds it from the
// configuration and the standard OTEL_* variables.
type Telemetry struct {
	Logger *slog.Logger
	Tracer trace.TracerProvider
	Meter  metric.MeterProvider
}
