package audit

import (
	"bytes"
	"testing"
)

var benchRecord = Record{
	Type: TypeCredentialUse, Agent: "agent-7", Rule: "llm", Credential: "anthropic-prod",
	Method: "POST", Host: "api.anthropic.com", Port: 443, Path: "/v1/messages",
	Dst: "160.79.104.10:443", Decision: "allow", PID: 4242, UID: 1001,
	TraceID: "c1d0a5f3b2e94c1d8e7f6a5b4c3d2e1f", SpanID: "b80e1f2a3b4c5d6e",
}

// BenchmarkAppend measures durable appends (write + fdatasync) on the file
// system holding the test's temp dir, without and with signed checkpoints
// (defaults: every 256 records and every second; 64 MiB segments). Run with
// -benchtime and TMPDIR set to the disk the log will live on; tmpfs makes
// fdatasync free.
func BenchmarkAppend(b *testing.B) {
	configs := []struct {
		name string
		opts func(b *testing.B) []Option
	}{
		{"plain", func(*testing.B) []Option { return nil }},
		{"checkpoints", func(b *testing.B) []Option { return []Option{WithSigner(testSigner(b, testOrigin))} }},
		{"checkpoints-every-16", func(b *testing.B) []Option {
			return []Option{WithSigner(testSigner(b, testOrigin)), WithCheckpointEvery(16, DefaultCheckpointInterval)}
		}},
	}
	open := func(b *testing.B, opts []Option) *Log {
		logger, _ := testLogger()
		l, err := Open(tempLogPath(b), logger, opts...)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = l.Close() })
		return l
	}
	for _, c := range configs {
		b.Run(c.name+"/serial", func(b *testing.B) {
			l := open(b, c.opts(b))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := l.Append(benchRecord); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(c.name+"/parallel", func(b *testing.B) {
			l := open(b, c.opts(b))
			b.ReportAllocs()
			b.SetParallelism(32) // 32 goroutines per GOMAXPROCS: many agents at once
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := l.Append(benchRecord); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkVerify measures verifying a signed log (checkpoint every 256),
// per record.
func BenchmarkVerify(b *testing.B) {
	s := testSigner(b, testOrigin)
	path := tempLogPath(b)
	logger, _ := testLogger()
	l, err := Open(path, logger, WithSigner(s), WithCheckpointEvery(256, 0))
	if err != nil {
		b.Fatal(err)
	}
	const n = 20000
	errs := make(chan error, 64)
	for range 64 { // concurrent, so that building the log is quick
		go func() {
			var err error
			for range n / 64 {
				if _, err = l.Append(benchRecord); err != nil {
					break
				}
			}
			errs <- err
		}()
	}
	for range 64 {
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		b.Fatal(err)
	}
	data := mustRead(b, path)
	key := WithVerifierKey(s.VerifierKey())
	b.SetBytes(int64(len(data)))
	var records uint64
	for b.Loop() {
		sum, err := Verify(bytes.NewReader(data), key)
		if err != nil {
			b.Fatal(err)
		}
		records = sum.Records
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(records), "ns/record")
}

// BenchmarkFrontierAdd is the per-record cost of keeping the tree.
func BenchmarkFrontierAdd(b *testing.B) {
	var f frontier
	h := leafHash(0)
	for b.Loop() {
		f.add(h)
	}
}
