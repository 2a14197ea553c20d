package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// setupTracing builds the tracer provider from the standard OTEL_* variables: spans are exported
// over OTLP when an OTLP endpoint is configured (OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT), with the protocol from OTEL_EXPORTER_OTLP_PROTOCOL
// (grpc or http/protobuf, the default). OTEL_TRACES_EXPORTER=none turns export off. Export is
// batched, so it never blocks the data path.
func setupTracing(ctx context.Context, log *slog.Logger) (trace.TracerProvider, func(context.Context) error, error) {
	off := func(context.Context) error { return nil }
	if strings.TrimSpace(os.Getenv("OTEL_TRACES_EXPORTER")) == "none" {
		return noop.NewTracerProvider(), off, nil
	}
	if os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" {
		log.Info("no OTLP endpoint configured; spans are not exported (set OTEL_EXPORTER_OTLP_ENDPOINT)")
		return noop.NewTracerProvider(), off, nil
	}
	proto := os.Getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if proto == "" {
		proto = os.Getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	var (
		exp sdktrace.SpanExporter
		err error
	)
	switch proto {
	case "", "http/protobuf":
		exp, err = otlptracehttp.New(ctx)
	case "grpc":
		exp, err = otlptracegrpc.New(ctx)
	default:
		return nil, nil, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL=%q: want grpc or http/protobuf", proto)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("creating OTLP exporter: %w", err)
	}
	if os.Getenv("OTEL_SERVICE_NAME") == "" {
		// resource.Default reads it (with OTEL_RESOURCE_ATTRIBUTES) on first use.
		os.Setenv("OTEL_SERVICE_NAME", "wirken")
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(resource.Default()))
	otel.SetTracerProvider(tp)
	return tp, tp.Shutdown, nil
}
