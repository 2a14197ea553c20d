package audit

import (
	"testing"
)

// BenchmarkAppend measures durable appends (write + fdatasync) on the file
// system holding the test's temp dir. Run with -benchtime and TMPDIR set to
// the disk the log will live on; tmpfs makes fdatasync free.
func BenchmarkAppend(b *testing.B) {
	rec := Record{
		Type: TypeCredentialUse, Agent: "agent-7", Rule: "llm", Credential: "anthropic-prod",
		Method: "POST", Host: "api.anthropic.com", Port: 443, Path: "/v1/messages",
		Dst: "160.79.104.10:443", Decision: "allow", PID: 4242, UID: 1001,
		TraceID: "c1d0a5f3b2e94c1d8e7f6a5b4c3d2e1f", SpanID: "b80e1f2a3b4c5d6e",
	}
	open := func(b *testing.B) *Log {
		logger, _ := testLogger()
		l, err := Open(tempLogPath(b), logger)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = l.Close() })
		return l
	}
	b.Run("serial", func(b *testing.B) {
		l := open(b)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := l.Append(rec); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		l := open(b)
		b.ReportAllocs()
		b.SetParallelism(32) // 32 goroutines per GOMAXPROCS: many agents at once
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := l.Append(rec); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
