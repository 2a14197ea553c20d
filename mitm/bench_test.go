package mitm

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
)

// countingRecorder records nothing but counts, so a benchmark's memory does not grow with b.N.
type countingRecorder struct{ begun, finished, denied atomic.Int64 }

func (r *countingRecorder) Deny(context.Context, Event) { r.denied.Add(1) }

func (r *countingRecorder) Begin(ctx context.Context, _ Event) (context.Context, func(Result), error) {
	r.begun.Add(1)
	return ctx, func(Result) { r.finished.Add(1) }, nil
}

// benchmarkProxy measures one request through the whole per-request path (agent TLS, policy,
// secret injection, audit begin/finish, pooled upstream TLS, response streamed back) with a
// loopback upstream in the same process. The agent connection is kept alive, as an SDK's is.
// Allocations include the in-process agent client and upstream.
// With direct set, the client goes straight to the upstream instead: the baseline to divide by.
func benchmarkProxy(b *testing.B, agentH2, upH2, parallel, direct bool) {
	rec := &countingRecorder{}
	h := newHarness(b, func(c *Config) { c.Recorder = rec })
	body := []byte(`{"id":"x","choices":[{"text":"ok"}]}`)
	up := h.upstream(b, upH2, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+h.canary && !direct {
			w.WriteHeader(500)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	})
	c := h.client("api.example.test")
	if agentH2 {
		c = h.h2client()
	}
	tr := c.Transport.(*http.Transport)
	tr.MaxIdleConnsPerHost = 64
	if direct {
		// The baseline: the same client straight to the upstream, trusting its CA.
		addr := up.Listener.Addr().String()
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		}
		tr.TLSClientConfig.RootCAs = x509.NewCertPool()
		tr.TLSClientConfig.RootCAs.AppendCertsFromPEM(h.upCA.CertPEM())
	}
	do := func() error {
		resp, err := c.Get("https://api.example.test/v1/chat")
		if err != nil {
			return err
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || n != int64(len(body)) {
			return fmt.Errorf("status %d, %d bytes", resp.StatusCode, n)
		}
		return nil
	}
	if err := do(); err != nil { // warm: leaf minted, connections open
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	if parallel {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := do(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	} else {
		for range b.N {
			if err := do(); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.StopTimer()
	if !direct && rec.begun.Load() < int64(b.N) || rec.denied.Load() != 0 {
		b.Fatalf("recorded %d requests and %d denials for %d", rec.begun.Load(), rec.denied.Load(), b.N)
	}
}

func BenchmarkProxyH1(b *testing.B)         { benchmarkProxy(b, false, false, false, false) }
func BenchmarkProxyH2(b *testing.B)         { benchmarkProxy(b, true, true, false, false) }
func BenchmarkProxyH1Parallel(b *testing.B) { benchmarkProxy(b, false, false, true, false) }
func BenchmarkProxyH2Parallel(b *testing.B) { benchmarkProxy(b, true, true, true, false) }
func BenchmarkDirectH1(b *testing.B)        { benchmarkProxy(b, false, false, false, true) }
func BenchmarkDirectH2(b *testing.B)        { benchmarkProxy(b, true, true, false, true) }
