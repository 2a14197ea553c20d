package audit

import (
	"errors"
	"testing"
	"time"
)

// TestAppendAsync: queued records are group-committed in order with waited-for ones, each
// callback learns its entry once the record is durable, Close writes what is still queued,
// and after Close AppendAsync refuses.
func TestAppendAsync(t *testing.T) {
	path := tempLogPath(t)
	l, ff, _ := openFaulty(t, path)
	gate := make(chan struct{})
	ff.set(func(f *faultyFile) { f.writeGate = gate })
	first := make(chan error, 1)
	go func() {
		_, err := l.Append(Record{Type: TypeStartup})
		first <- err
	}()
	waitFor(t, func() bool { return len(l.reqs) == 0 && gateTaken(ff) })
	const queued = 20
	got := make(chan Entry, queued)
	for range queued {
		err := l.AppendAsync(Record{Type: TypeRequestResult}, func(e Entry, err error) {
			if err != nil {
				t.Error(err)
			}
			got <- e
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(got) != 0 {
		t.Fatal("a callback ran before its record was written")
	}
	if err := l.AppendAsync(Record{Type: TypeCheckpoint}, nil); err == nil {
		t.Error("AppendAsync took a reserved type")
	}
	close(gate)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil { // writes what is still queued
		t.Fatal(err)
	}
	if len(got) != queued {
		t.Fatalf("%d callbacks, want %d", len(got), queued)
	}
	for i := range uint64(queued) {
		if e := <-got; e.Seq != i+1 {
			t.Fatalf("callback %d has seq %d", i, e.Seq)
		}
	}
	ff.set(func(f *faultyFile) {
		if f.syncs != 2 {
			t.Errorf("%d fdatasyncs for 21 records, want 2 (one per batch)", f.syncs)
		}
	})
	if s := verifyFile(t, path); s.Records != queued+1 {
		t.Fatalf("%d records, want %d", s.Records, queued+1)
	}
	if err := l.AppendAsync(Record{Type: TypeShutdown}, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("AppendAsync after Close = %v, want ErrClosed", err)
	}
}

// TestAsyncLinger: a result record queued alone waits for the next waited-for record and
// shares its fdatasync; one left alone is still written once the linger ends, without Close;
// with no linger it is written at once on its own.
func TestAsyncLinger(t *testing.T) {
	syncs := func(ff *faultyFile) (n int) {
		ff.set(func(f *faultyFile) { n = f.syncs })
		return n
	}
	written := func(l *Log) chan Entry {
		c := make(chan Entry, 1)
		if err := l.AppendAsync(Record{Type: TypeRequestResult}, func(e Entry, err error) {
			if err != nil {
				t.Error(err)
			}
			c <- e
		}); err != nil {
			t.Fatal(err)
		}
		return c
	}

	l, ff, _ := openFaulty(t, tempLogPath(t), WithAsyncLinger(time.Hour))
	res := written(l)
	e := mustAppend(t, l, Record{Type: TypeStartup}) // within the linger: the same batch
	if r := <-res; r.Seq != 0 || e.Seq != 1 {
		t.Fatalf("seqs %d, %d; want the queued record first", r.Seq, e.Seq)
	}
	if n := syncs(ff); n != 1 {
		t.Fatalf("%d fdatasyncs for a lingering record and the next waited-for one, want 1", n)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	l, ff, _ = openFaulty(t, tempLogPath(t), WithAsyncLinger(20*time.Millisecond))
	start := time.Now()
	res = written(l)
	select {
	case <-res:
	case <-time.After(10 * time.Second):
		t.Fatal("a lingering record alone was never written")
	}
	if waited := time.Since(start); waited < 20*time.Millisecond {
		t.Errorf("written after %v, before the 20ms linger ended", waited)
	}
	if n := syncs(ff); n != 1 {
		t.Errorf("%d fdatasyncs, want 1", n)
	}
	l.Close()

	l, ff, _ = openFaulty(t, tempLogPath(t), WithAsyncLinger(0))
	<-written(l)
	mustAppend(t, l, Record{Type: TypeStartup})
	if n := syncs(ff); n != 2 {
		t.Errorf("no linger: %d fdatasyncs for two records written apart, want 2", n)
	}
	l.Close()

	if _, err := newConfig([]Option{WithAsyncLinger(-time.Second)}); err == nil {
		t.Error("a negative linger was taken")
	}
}
