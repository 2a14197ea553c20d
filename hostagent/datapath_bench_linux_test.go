package hostagent

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/wirken/wirken/audit"
	"github.com/wirken/wirken/mitm"
	"github.com/wirken/wirken/policy"
	"github.com/wirken/wirken/vault"
)

// The benchmarks in this file run wirken's whole per-request data path in one process, without
// root: an agent client (keep-alive TLS) -> mitm.Proxy -> a TLS upstream on loopback, with the
// real policy, a real vault (aead seal), the real audit log (write + fdatasync, group-committed,
// in the test's temp dir) and the daemon's recorder with an OTel SDK tracer whose batched
// exporter drops the spans. Only the kernel side (eBPF steering) is replaced, by a fixed
// origin. `make bench` measures the same path through eBPF against peers; these numbers are
// for profiling (-cpuprofile) and for comparing one commit with the next.

const benchPolicy = `version = 1
[agents.demo]
user = "nobody"
[credentials.llm]
secret = "llm-key"
hosts = ["api.bench.test"]
header = "Authorization"
format = "Bearer {secret}"
[[rules]]
name = "llm"
agent = "demo"
hosts = ["api.bench.test"]
ports = [%d]
credential = "llm"
`

// benchRequest is a small JSON body shaped like an LLM call (about 1 KB, like bench/'s).
var benchRequest = []byte(`{"model":"bench-model","max_tokens":64,"messages":[{"role":"user","content":"` +
	string(bytes.Repeat([]byte("x"), 960)) + `"}]}`)

const benchAnswer = `{"id":"chatcmpl-bench","object":"chat.completion","model":"bench-model","choices":[{"index":0,"message":{"role":"assistant","content":"Hello from the benchmark upstream."},"finish_reason":"stop"}],"usage":{"prompt_tokens":42,"completion_tokens":24,"total_tokens":66}}`

// fixedSteering stands in for the eBPF origin map: every connection is agent demo's, to dst.
type fixedSteering struct{ dst netip.AddrPort }

func (s fixedSteering) Origin(_, _ netip.AddrPort) (mitm.Origin, error) {
	return mitm.Origin{Agent: "demo", Dst: s.dst, PID: 4242, UID: 1001, Comm: "bench"}, nil
}

// countingExporter drops spans and counts them, so memory does not grow with b.N.
type countingExporter struct{ n atomic.Int64 }

func (e *countingExporter) ExportSpans(_ context.Context, s []sdktrace.ReadOnlySpan) error {
	e.n.Add(int64(len(s)))
	return nil
}
func (e *countingExporter) Shutdown(context.Context) error { return nil }

type dataPath struct {
	client  *http.Client
	url     string
	spans   *countingExporter
	tp      *sdktrace.TracerProvider
	audit   *countingAppender
	canary  string
	upConns atomic.Int64 // connections the upstream accepted
	// direct is the same client going straight to the upstream: the baseline to compare with.
	direct *http.Client
}

// countingAppender counts the records the recorder made durable.
type countingAppender struct {
	l *audit.Log
	n atomic.Int64
}

func (a *countingAppender) AppendAsync(r audit.Record, done func(audit.Entry, error)) error {
	return a.l.AppendAsync(r, func(e audit.Entry, err error) {
		if err == nil {
			a.n.Add(1)
		}
		done(e, err)
	})
}

func (a *countingAppender) Append(r audit.Record) (audit.Entry, error) {
	e, err := a.l.Append(r)
	if err == nil {
		a.n.Add(1)
	}
	return e, err
}

// newDataPath wires the proxy as the daemon does. With otel false the tracer is a no-op (the
// daemon's default without an OTLP endpoint).
func newDataPath(b *testing.B, otel bool) *dataPath {
	b.Helper()
	dir := b.TempDir()
	ctx := context.Background()
	logger := slog.New(slog.NewTextHandler(benchLogOut, nil))
	dp := &dataPath{canary: "WKBENCH-" + fmt.Sprint(time.Now().UnixNano())}

	// The upstream: TLS with a certificate for api.bench.test from its own CA.
	upCA := benchCA(b, dir, "up", "bench upstream CA")
	leaf, err := upCA.Leaf("api.bench.test")
	if err != nil {
		b.Fatal(err)
	}
	var bad atomic.Int64
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		if r.Header.Get("Authorization") != "Bearer "+dp.canary || n != int64(len(benchRequest)) {
			bad.Add(1)
			w.WriteHeader(500)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, benchAnswer)
	}))
	up.TLS = &tls.Config{Certificates: []tls.Certificate{*leaf}}
	up.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			dp.upConns.Add(1)
		}
	}
	// Goroutines inherit pprof labels: with -cpuprofile, `go tool pprof -tagfocus side=proxy`
	// shows the proxy's share (its upstream transport and audit writer included) alone.
	side("upstream")
	up.StartTLS()
	side("proxy")
	b.Cleanup(up.Close)
	b.Cleanup(func() {
		if n := bad.Load(); n != 0 {
			b.Errorf("the upstream saw %d requests without the injected credential or body", n)
		}
	})
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(upCA.CertPEM())

	upAddr := netip.MustParseAddrPort(up.Listener.Addr().String())
	pol, err := policy.Parse("bench.toml", fmt.Appendf(nil, benchPolicy, upAddr.Port()))
	if err != nil {
		b.Fatal(err)
	}

	keyFile := filepath.Join(dir, "vault.key")
	if err := vault.CreateAEADKeyFile(keyFile); err != nil {
		b.Fatal(err)
	}
	seal, err := vault.AEADSeal(ctx, keyFile)
	if err != nil {
		b.Fatal(err)
	}
	vpath := filepath.Join(dir, "vault.wkv")
	if err := vault.Create(ctx, vpath, seal); err != nil {
		b.Fatal(err)
	}
	v, err := vault.Open(ctx, vpath, seal)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(v.Close)
	if _, err := v.Put(ctx, "llm-key", []byte(dp.canary), vault.Binding{Hosts: []string{"api.bench.test"}}); err != nil {
		b.Fatal(err)
	}

	l, err := audit.Open(filepath.Join(dir, "audit.jsonl"), logger)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	dp.audit = &countingAppender{l: l}

	var tracer trace.Tracer = tracenoop.NewTracerProvider().Tracer(instrumentation)
	if otel {
		dp.spans = &countingExporter{}
		dp.tp = sdktrace.NewTracerProvider(sdktrace.WithBatcher(dp.spans))
		b.Cleanup(func() { dp.tp.Shutdown(context.Background()) })
		tracer = dp.tp.Tracer(instrumentation)
	}
	met, err := newMetrics(metricnoop.NewMeterProvider().Meter(instrumentation))
	if err != nil {
		b.Fatal(err)
	}
	met.counts = &counters{}

	proxy, err := mitm.New(mitm.Config{
		CA:            benchCA(b, dir, "wirken", "bench wirken CA"),
		UpstreamRoots: roots,
		Steering:      fixedSteering{dst: upAddr},
		Policy:        pol,
		Secrets:       v,
		Recorder:      &recorder{log: dp.audit, tracer: tracer, metrics: met, logger: logger},
		Logger:        logger,
	})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go proxy.Serve(ln)
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		proxy.Shutdown(ctx)
	})

	// The agent: trusts the wirken CA, dials the proxy as the connect4 redirect would.
	proxyCA, err := mitm.LoadCA(filepath.Join(dir, "wirken.pem"), filepath.Join(dir, "wirken-key.pem"))
	if err != nil {
		b.Fatal(err)
	}
	agentRoots := x509.NewCertPool()
	agentRoots.AppendCertsFromPEM(proxyCA.CertPEM())
	addr := ln.Addr().String()
	dp.client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		},
		TLSClientConfig:     &tls.Config{RootCAs: agentRoots, ServerName: "api.bench.test"},
		MaxIdleConnsPerHost: 256,
	}}
	b.Cleanup(dp.client.CloseIdleConnections)
	dp.direct = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", upAddr.String())
		},
		TLSClientConfig:     &tls.Config{RootCAs: roots, ServerName: "api.bench.test"},
		MaxIdleConnsPerHost: 256,
	}}
	b.Cleanup(dp.direct.CloseIdleConnections)
	side("client")
	dp.url = "https://api.bench.test/v1/chat/completions"
	return dp
}

func benchCA(b *testing.B, dir, name, cn string) *mitm.CA {
	b.Helper()
	cert, key := filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	if err := mitm.GenerateCA(cert, key, cn); err != nil {
		b.Fatal(err)
	}
	ca, err := mitm.LoadCA(cert, key)
	if err != nil {
		b.Fatal(err)
	}
	return ca
}

// side labels the calling goroutine, and those it starts, for CPU profiles.
func side(name string) {
	pprof.SetGoroutineLabels(pprof.WithLabels(context.Background(), pprof.Labels("side", name)))
}

// processCPU is the user+system CPU time this process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func (dp *dataPath) post() error {
	return dp.postWith(dp.client)
}

func (dp *dataPath) postWith(c *http.Client) error {
	req, err := http.NewRequest(http.MethodPost, dp.url, bytes.NewReader(benchRequest))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if c == dp.direct { // what the proxy would inject
		req.Header.Set("Authorization", "Bearer "+dp.canary)
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	n, _ := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || n != int64(len(benchAnswer)) {
		return fmt.Errorf("status %d, %d bytes", resp.StatusCode, n)
	}
	return nil
}

// BenchmarkDataPath is one keep-alive POST through the proxy with policy, vault, audit and
// (in the otel variants) spans all on; the direct variants send the same request (with the
// header already in it) straight to the upstream, the baseline to divide by. Allocations and
// cpu-ns/op include the in-process client and upstream.
func BenchmarkDataPath(b *testing.B) {
	for _, c := range []struct {
		name                   string
		otel, parallel, direct bool
	}{
		{"serial", true, false, false},
		{"parallel", true, true, false},
		{"serial-nootel", false, false, false},
		{"direct-serial", false, false, true},
		{"direct-parallel", false, true, true},
	} {
		b.Run(c.name, func(b *testing.B) {
			dp := newDataPath(b, c.otel)
			client := dp.client
			if c.direct {
				client = dp.direct
			}
			// Warm: leaf minted, the agent's 50 connections and the upstream pool open.
			var wg sync.WaitGroup
			errs := make(chan error, 50)
			for range 50 {
				wg.Go(func() { errs <- dp.postWith(client) })
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					b.Fatal(err)
				}
			}
			before, conns0 := dp.audit.n.Load(), dp.upConns.Load()
			cpu0 := processCPU(b)
			b.ReportAllocs()
			b.ResetTimer()
			if c.parallel {
				b.SetParallelism(25) // 50 agent connections on 2 cores, as bench/ uses
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if err := dp.postWith(client); err != nil {
							b.Error(err)
							return
						}
					}
				})
			} else {
				for range b.N {
					if err := dp.postWith(client); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.StopTimer()
			// The process's CPU (proxy, agent client and upstream together) per request: the
			// in-process counterpart of bench/'s proxy CPU-µs per request.
			b.ReportMetric(float64(processCPU(b)-cpu0)/float64(b.N), "cpu-ns/op")
			// Upstream connections opened while measuring: 0 when the pools keep them alive.
			b.ReportMetric(float64(dp.upConns.Load()-conns0), "upstream-conns")
			// Result records are queued, not waited for: give the writer a moment.
			for i := 0; i < 500 && !c.direct && dp.audit.n.Load()-before < int64(2*b.N); i++ {
				time.Sleep(10 * time.Millisecond)
			}
			if after := dp.audit.n.Load(); !c.direct && after-before < int64(2*b.N) { // a use and a result record per request
				b.Fatalf("audit log grew by %d records for %d requests", after-before, b.N)
			}
			if dp.tp != nil && !c.direct {
				dp.tp.ForceFlush(context.Background())
				if got := dp.spans.n.Load(); got < int64(b.N) {
					b.Fatalf("%d spans exported for %d requests", got, b.N)
				}
			}
		})
	}
}

var benchLogOut io.Writer = io.Discard
