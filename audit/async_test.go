package audit

import (
	"errors"
	"testing"
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
