package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/wirken/wirken/hostagent"
)

// setupTelemetry builds the tracer and meter providers from the standard OTEL_* variables.
// Spans and metrics go out over OTLP when an endpoint is configured (OTEL_EXPORTER_OTLP_ENDPOINT,
// or the per-signal _TRACES_/_METRICS_ variant), with the protocol from
// OTEL_EXPORTER_OTLP_PROTOCOL (grpc, or http/protobuf by default); OTEL_TRACES_EXPORTER=none and
// OTEL_METRICS_EXPORTER=none turn a signal off. Export is batched and periodic, so it never
// blocks the data path; the exporters read the rest of the OTEL_* variables themselves.
//
// promAddr, if set, also serves the metrics for Prometheus at http://promAddr/metrics.
func setupTelemetry(ctx context.Context, log *slog.Logger, promAddr string) (hostagent.Telemetry, func(context.Context) error, error) {
	tel := hostagent.Telemetry{Logger: log, Tracer: tracenoop.NewTracerProvider(), Meter: metricnoop.NewMeterProvider()}
	for _, sig := range []string{"TRACES", "METRICS"} {
		if p, ok := exportProtocol(sig); ok && p != "grpc" && p != "http/protobuf" {
			return tel, func(context.Context) error { return nil }, fmt.Errorf("OTLP protocol %q for %s: want grpc or http/protobuf", p, strings.ToLower(sig))
		}
	}
	var shutdowns []func(context.Context) error
	shutdown := func(ctx context.Context) error {
		var errs []error
		for _, f := range shutdowns {
			errs = append(errs, f(ctx))
		}
		return errors.Join(errs...)
	}
	if os.Getenv("OTEL_SERVICE_NAME") == "" {
		// resource.Default reads it (with OTEL_RESOURCE_ATTRIBUTES) on first use.
		os.Setenv("OTEL_SERVICE_NAME", "wirken")
	}

	if proto, ok := exportProtocol("TRACES"); ok {
		var exp sdktrace.SpanExporter
		var err error
		switch proto {
		case "grpc":
			exp, err = otlptracegrpc.New(ctx)
		default:
			exp, err = otlptracehttp.New(ctx)
		}
		if err != nil {
			return tel, shutdown, fmt.Errorf("creating OTLP trace exporter: %w", err)
		}
		tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(resource.Default()))
		otel.SetTracerProvider(tp)
		tel.Tracer = tp
		shutdowns = append(shutdowns, tp.Shutdown)
		log.Info("exporting spans over OTLP", "protocol", proto)
	}
	var readers []sdkmetric.Option
	if promAddr != "" {
		reader, stop, err := servePrometheus(promAddr, log)
		if err != nil {
			return tel, shutdown, err
		}
		readers = append(readers, sdkmetric.WithReader(reader))
		shutdowns = append(shutdowns, stop)
	}
	if proto, ok := exportProtocol("METRICS"); ok {
		var exp sdkmetric.Exporter
		var err error
		switch proto {
		case "grpc":
			exp, err = otlpmetricgrpc.New(ctx)
		default:
			exp, err = otlpmetrichttp.New(ctx)
		}
		if err != nil {
			return tel, shutdown, fmt.Errorf("creating OTLP metric exporter: %w", err)
		}
		readers = append(readers, sdkmetric.WithReader(sdkmetric.NewPeriodicReader(exp)))
	}
	if len(readers) > 0 {
		mp := sdkmetric.NewMeterProvider(append(readers, sdkmetric.WithResource(resource.Default()))...)
		otel.SetMeterProvider(mp)
		tel.Meter = mp
		// The provider stops first, so the Prometheus server (stopped after) serves to the end.
		shutdowns = append([]func(context.Context) error{mp.Shutdown}, shutdowns...)
	}
	if _, t := exportProtocol("TRACES"); !t {
		log.Info("spans are not exported: set OTEL_EXPORTER_OTLP_ENDPOINT to send them to a collector")
	}
	return tel, shutdown, nil
}

// exportProtocol says whether a signal (TRACES or METRICS) is to be exported and over which protocol.
func exportProtocol(name string) (string, bool) {
	if strings.TrimSpace(os.Getenv("OTEL_"+name+"_EXPORTER")) == "none" {
		return "", false
	}
	if os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && os.Getenv("OTEL_EXPORTER_OTLP_"+name+"_ENDPOINT") == "" {
		return "", false
	}
	proto := os.Getenv("OTEL_EXPORTER_OTLP_" + name + "_PROTOCOL")
	if proto == "" {
		proto = os.Getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	if proto == "" {
		proto = "http/protobuf"
	}
	return proto, true
}
