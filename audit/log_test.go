package audit

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"
)

// readLines returns the log's lines without their '\n'.
func readLines(t testing.TB, path string) [][]byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) == 0 {
		return nil
	}
	if data[len(data)-1] != '\n' {
		t.Fatal("log does not end with a newline")
	}
	return bytes.Split(data[:len(data)-1], []byte{'\n'})
}

func TestAppendReopenContinue(t *testing.T) {
	path := tempLogPath(t)
	logger, _ := testLogger()
	var entries []Entry
	sessions := [][]Record{
		{{Type: TypeStartup}, {Type: TypeCredentialUse, Agent: "a1", Credential: "c1"}, {Type: TypeShutdown}},
		{{Type: TypeStartup}, {Type: TypeRequestDeny, Agent: "a2", Reason: "no rule"}},
		{},
		{{Type: TypeStartup}},
	}
	for i, recs := range sessions {
		l, err := Open(path, logger)
		if err != nil {
			t.Fatalf("session %d: Open: %v", i, err)
		}
		for _, r := range recs {
			entries = append(entries, mustAppend(t, l, r))
		}
		if err := l.Close(); err != nil {
			t.Fatalf("session %d: Close: %v", i, err)
		}
	}
	for i, e := range entries {
		if e.Seq != uint64(i) {
			t.Fatalf("entry %d has seq %d", i, e.Seq)
		}
	}
	lines := readLines(t, path)
	if len(lines) != len(entries) {
		t.Fatalf("%d lines, want %d (Open/Close must append nothing)", len(lines), len(entries))
	}
	for i, ln := range lines {
		if got := tlog.RecordHash(ln); got != entries[i].Hash {
			t.Fatalf("entry %d hash does not match line", i)
		}
	}
	s := verifyFile(t, path)
	if s.Records != uint64(len(entries)) || s.Head != entries[len(entries)-1].Hash {
		t.Fatalf("summary %+v, want %d records ending in the last entry", s, len(entries))
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Fatalf("mode %v, want 0600", perm)
	}
}

func TestOpenTightensPermissions(t *testing.T) {
	path := tempLogPath(t)
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil { // umask-proof
		t.Fatal(err)
	}
	logger, logs := testLogger()
	l, err := Open(path, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Fatalf("mode %v, want 0600", perm)
	}
	if !strings.Contains(logs.String(), "permissions tightened") {
		t.Fatalf("no warning logged: %s", logs.String())
	}
}

func TestOpenRejects(t *testing.T) {
	logger, _ := testLogger()
	t.Run("nil logger", func(t *testing.T) {
		if _, err := Open(tempLogPath(t), nil); err == nil {
			t.Fatal("want an error")
		}
	})
	t.Run("directory", func(t *testing.T) {
		if _, err := Open(t.TempDir(), logger); err == nil {
			t.Fatal("want an error")
		}
	})
	t.Run("tampered log", func(t *testing.T) {
		path := tempLogPath(t)
		l, err := Open(path, logger)
		if err != nil {
			t.Fatal(err)
		}
		for range 3 {
			mustAppend(t, l, Record{Type: TypeStartup, Agent: "aaa"})
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		data, _ := os.ReadFile(path)
		data = bytes.Replace(data, []byte(`"aaa"`), []byte(`"bbb"`), 1)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		before := fileSize(t, path)
		_, err = Open(path, logger)
		var verr *VerifyError
		if !errors.As(err, &verr) || verr.Seq != 1 {
			t.Fatalf("Open = %v, want a *VerifyError at seq 1", err)
		}
		if fileSize(t, path) != before {
			t.Fatal("Open modified a log it refused")
		}
	})
	t.Run("already open", func(t *testing.T) {
		if runtime.GOOS != "linux" {
			t.Skip("flock is Linux-only")
		}
		path := tempLogPath(t)
		l, err := Open(path, logger)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Open(path, logger); err == nil {
			t.Fatal("second Open of the same log succeeded")
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		l2, err := Open(path, logger)
		if err != nil {
			t.Fatalf("Open after Close: %v", err)
		}
		_ = l2.Close()
	})
}

func TestCloseSemantics(t *testing.T) {
	path := tempLogPath(t)
	logger, _ := testLogger()
	l, err := Open(path, logger)
	if err != nil {
		t.Fatal(err)
	}
	mustAppend(t, l, Record{Type: TypeStartup})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append(Record{Type: TypeShutdown}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close = %v, want ErrClosed", err)
	}
	if err := l.Close(); !errors.Is(err, ErrClosed) {
		t.Fatalf("second Close = %v, want ErrClosed", err)
	}
	if n := len(readLines(t, path)); n != 1 {
		t.Fatalf("%d lines, want 1", n)
	}
}

func TestAppendRejectsBadRecordWithoutUsingASeq(t *testing.T) {
	path := tempLogPath(t)
	logger, logs := testLogger()
	l, err := Open(path, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c := canary(t)
	mustAppend(t, l, Record{Type: TypeStartup})
	bad := []Record{
		{Type: "", Detail: c},
		{Type: "BAD TYPE", Detail: c},
		{Type: TypeRequestAllow, Path: "/" + c + strings.Repeat("x", maxLineBytes)},
	}
	for _, r := range bad {
		_, err := l.Append(r)
		if err == nil {
			t.Fatalf("Append accepted a bad record of type %q", r.Type)
		}
		if strings.Contains(err.Error(), c) {
			t.Fatal("error leaks the record's content")
		}
	}
	e := mustAppend(t, l, Record{Type: TypeShutdown})
	if e.Seq != 1 {
		t.Fatalf("seq after rejected records = %d, want 1", e.Seq)
	}
	if strings.Contains(logs.String(), c) {
		t.Fatal("log output leaks the record's content")
	}
	verifyFile(t, path)
}

func TestConcurrentAppend(t *testing.T) {
	const goroutines, perG = 100, 20
	path := tempLogPath(t)
	logger, _ := testLogger()
	l, err := Open(path, logger)
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		entries = make(map[string]Entry)
		errs    = make(chan error, goroutines)
	)
	for g := range goroutines {
		wg.Go(func() {
			for i := range perG {
				id := fmt.Sprintf("%d/%d", g, i)
				e, err := l.Append(Record{Type: TypeRequestAllow, Agent: fmt.Sprintf("agent-%d", g), Detail: id})
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				entries[id] = e
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	const total = goroutines * perG
	s := verifyFile(t, path)
	if s.Records != total {
		t.Fatalf("%d records, want %d", s.Records, total)
	}
	seen := make(map[string]bool)
	for i, ln := range readLines(t, path) {
		var rec struct {
			Seq    uint64 `json:"seq"`
			Detail string `json:"detail"`
		}
		if err := json.Unmarshal(ln, &rec); err != nil {
			t.Fatal(err)
		}
		if seen[rec.Detail] {
			t.Fatalf("record %s written twice", rec.Detail)
		}
		seen[rec.Detail] = true
		e, ok := entries[rec.Detail]
		if !ok {
			t.Fatalf("line %d: record %q was never appended", i, rec.Detail)
		}
		if e.Seq != rec.Seq || e.Hash != tlog.RecordHash(ln) {
			t.Fatalf("record %s: Append returned %+v, but line has seq %d", rec.Detail, e, rec.Seq)
		}
	}
	if len(seen) != total {
		t.Fatalf("%d distinct records, want %d", len(seen), total)
	}
}

// TestGroupCommit holds the first write open while 50 more Appends queue
// up, and checks they then go out in one write and one fdatasync.
func TestGroupCommit(t *testing.T) {
	path := tempLogPath(t)
	l, ff, _ := openFaulty(t, path)
	gate := make(chan struct{})
	ff.set(func(f *faultyFile) { f.writeGate = gate })
	const queued = 50
	results := make(chan error, queued+1)
	go func() {
		_, err := l.Append(Record{Type: TypeStartup})
		results <- err
	}()
	waitFor(t, func() bool { return len(l.reqs) == 0 && gateTaken(ff) })
	for range queued {
		go func() {
			_, err := l.Append(Record{Type: TypeRequestAllow})
			results <- err
		}()
	}
	waitFor(t, func() bool { return len(l.reqs) == queued })
	close(gate)
	for range queued + 1 {
		if err := <-results; err != nil {
			t.Fatal(err)
		}
	}
	ff.set(func(f *faultyFile) {
		if f.syncs != 2 {
			t.Errorf("%d fdatasyncs for 51 records, want 2 (one per batch)", f.syncs)
		}
	})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if s := verifyFile(t, path); s.Records != queued+1 {
		t.Fatalf("%d records, want %d", s.Records, queued+1)
	}
}

func gateTaken(ff *faultyFile) bool {
	ff.mu.Lock()
	defer ff.mu.Unlock()
	return ff.writeGate == nil
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 10s")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestTornTailRecovery(t *testing.T) {
	tests := []struct {
		name string
		tail func(next []byte) []byte // bytes left after the last good line
	}{
		{"half a record", func(next []byte) []byte { return next[:len(next)/2] }},
		{"a whole record without its newline", func(next []byte) []byte { return next }},
		{"one byte", func(next []byte) []byte { return next[:1] }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := tempLogPath(t)
			logger, logs := testLogger()
			l, err := Open(path, logger)
			if err != nil {
				t.Fatal(err)
			}
			var last Entry
			for range 3 {
				last = mustAppend(t, l, Record{Type: TypeRequestAllow})
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			good := fileSize(t, path)
			next, err := encodeRecord(Record{Type: TypeRequestAllow}, 3, last.Hash, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			tail := tc.tail(next)
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.Write(tail); err != nil {
				t.Fatal(err)
			}
			_ = f.Close()
			if _, err := Verify(bytes.NewReader(mustRead(t, path))); err == nil {
				t.Fatal("Verify accepted a torn log")
			}

			l, err = Open(path, logger)
			if err != nil {
				t.Fatalf("Open of a torn log: %v", err)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			s := verifyFile(t, path)
			if s.Records != 4 {
				t.Fatalf("%d records, want 3 + recovered", s.Records)
			}
			lines := readLines(t, path)
			if int64(len(bytes.Join(lines[:3], []byte{'\n'}))+1) != good {
				t.Fatal("the good prefix changed")
			}
			var rec struct {
				Seq   uint64 `json:"seq"`
				Type  string `json:"type"`
				Bytes int64  `json:"bytes"`
			}
			if err := json.Unmarshal(lines[3], &rec); err != nil {
				t.Fatal(err)
			}
			if rec.Type != TypeRecovered || rec.Seq != 3 || rec.Bytes != int64(len(tail)) {
				t.Fatalf("recovery record %+v, want recovered seq 3 bytes %d", rec, len(tail))
			}
			if !strings.Contains(logs.String(), fmt.Sprintf("dropped_bytes=%d", len(tail))) {
				t.Fatalf("truncation not logged: %s", logs.String())
			}
		})
	}
}

func mustRead(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestWriteFailureRecovers injects I/O failures and checks that Append
// fails closed, leaves the file at its durable length, does not advance
// seq, and that the log heals itself when the fault goes away.
func TestWriteFailureRecovers(t *testing.T) {
	tests := []struct {
		name  string
		fault func(f *faultyFile)
	}{
		{"partial write", func(f *faultyFile) { f.failWrite = true }},
		{"fdatasync fails", func(f *faultyFile) { f.failSync = true }},
		{"write and truncate fail", func(f *faultyFile) { f.failWrite, f.failTruncate = true, true }},
		{"sync and truncate fail", func(f *faultyFile) { f.failSync, f.failTruncate = true, true }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := tempLogPath(t)
			l, ff, logs := openFaulty(t, path)
			c := canary(t)
			first := mustAppend(t, l, Record{Type: TypeStartup})
			durable := fileSize(t, path)

			ff.set(tc.fault)
			// Hold the write so several Appends share the failing batch.
			gate := make(chan struct{})
			ff.set(func(f *faultyFile) { f.writeGate = gate })
			const n = 10
			errs := make(chan error, n)
			appendAsync := func(i int) {
				go func() {
					_, err := l.Append(Record{Type: TypeCredentialUse, Detail: fmt.Sprintf("%s-%d", c, i)})
					errs <- err
				}()
			}
			// The first Append holds the write; the other n-1 queue up
			// behind it and then fail together as one batch.
			appendAsync(0)
			waitFor(t, func() bool { return gateTaken(ff) })
			for i := 1; i < n; i++ {
				appendAsync(i)
			}
			waitFor(t, func() bool { return len(l.reqs) == n-1 })
			close(gate)
			for range n {
				err := <-errs
				if !errors.Is(err, errInjected) {
					t.Fatalf("Append during the fault = %v, want the injected error", err)
				}
				if strings.Contains(err.Error(), c) {
					t.Fatal("error leaks record content")
				}
			}
			ff.set(func(f *faultyFile) { f.failWrite, f.failSync = false, false })
			ff.mu.Lock()
			truncFails := ff.failTruncate
			ff.mu.Unlock()
			if !truncFails {
				if got := fileSize(t, path); got != durable {
					t.Fatalf("file is %d bytes after the failure, want the durable %d", got, durable)
				}
			} else {
				// While truncation fails, the log must refuse to write.
				if _, err := l.Append(Record{Type: TypeRequestAllow}); !errors.Is(err, errInjected) {
					t.Fatalf("Append while the file cannot be cut back = %v, want an error", err)
				}
				ff.set(func(f *faultyFile) { f.failTruncate = false })
			}

			e := mustAppend(t, l, Record{Type: TypeRequestAllow})
			if e.Seq != first.Seq+1 {
				t.Fatalf("seq after recovery = %d, want %d", e.Seq, first.Seq+1)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			s := verifyFile(t, path)
			if s.Records != 2 || s.Head != e.Hash {
				t.Fatalf("summary %+v, want 2 records ending in %x", s, e.Hash)
			}
			if strings.Contains(logs.String(), c) {
				t.Fatal("log output leaks record content")
			}
			if !strings.Contains(logs.String(), "audit log write failed") {
				t.Fatalf("failure not logged: %s", logs.String())
			}
		})
	}
}

// TestOpenDoesNotDropCompleteLines makes sure only bytes after the last
// '\n' count as torn.
func TestOpenDoesNotDropCompleteLines(t *testing.T) {
	path := tempLogPath(t)
	logger, _ := testLogger()
	l, err := Open(path, logger)
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		mustAppend(t, l, Record{Type: TypeRequestAllow})
	}
	_ = l.Close()
	before := mustRead(t, path)
	l, err = Open(path, logger)
	if err != nil {
		t.Fatal(err)
	}
	_ = l.Close()
	if !bytes.Equal(before, mustRead(t, path)) {
		t.Fatal("reopening a clean log changed it")
	}
	sc := bufio.NewScanner(bytes.NewReader(before))
	n := 0
	for sc.Scan() {
		n++
	}
	if n != 5 {
		t.Fatalf("%d lines, want 5", n)
	}
}

// TestTornTailRecoveryFailsClosed: if the torn tail cannot be repaired and
// recorded, Open fails rather than hand out a log that would break the chain.
// When the cut succeeded but the record could not be written, the drop is
// still in the operator's log output.
func TestTornTailRecoveryFailsClosed(t *testing.T) {
	const torn = `{"v":1,"se`
	tests := []struct {
		name        string
		fault       func(f *faultyFile)
		wantRecords uint64 // after a later, healthy Open
	}{
		// The tail is still there, so the next Open repairs and records it.
		{"truncate fails", func(f *faultyFile) { f.failTruncate = true }, 2},
		// The tail is gone but the record is not: only slog has the drop.
		{"sync fails", func(f *faultyFile) { f.failSync = true }, 1},
		{"write fails", func(f *faultyFile) { f.failWrite = true }, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := tempLogPath(t)
			l, _, _ := openFaulty(t, path)
			mustAppend(t, l, Record{Type: TypeStartup})
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.Write([]byte(torn)); err != nil {
				t.Fatal(err)
			}
			_ = f.Close()
			_, _, logs, err := openFaultyWith(t, path, tc.fault)
			if !errors.Is(err, errInjected) {
				t.Fatalf("open with a failing repair = %v, want the injected error", err)
			}
			if tc.wantRecords == 1 && !strings.Contains(logs.String(), fmt.Sprintf("dropped_bytes=%d", len(torn))) {
				t.Fatalf("the drop is recorded nowhere: %s", logs.String())
			}
			// With the fault gone the log opens and verifies.
			l, _, _ = openFaulty(t, path)
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			if s := verifyFile(t, path); s.Records != tc.wantRecords {
				t.Fatalf("%d records, want %d", s.Records, tc.wantRecords)
			}
		})
	}
}

// TestCloseCutsBackAnUnrepairedFailure: a failed write whose cleanup also
// failed is cleaned up by Close.
func TestCloseCutsBackAnUnrepairedFailure(t *testing.T) {
	path := tempLogPath(t)
	l, ff, _ := openFaulty(t, path)
	mustAppend(t, l, Record{Type: TypeStartup})
	durable := fileSize(t, path)
	ff.set(func(f *faultyFile) { f.failWrite, f.failTruncate = true, true })
	if _, err := l.Append(Record{Type: TypeRequestAllow}); err == nil {
		t.Fatal("Append succeeded during a write fault")
	}
	if fileSize(t, path) == durable {
		t.Fatal("the fault left no partial bytes; the test proves nothing")
	}
	ff.set(func(f *faultyFile) { f.failWrite, f.failTruncate = false, false })
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if got := fileSize(t, path); got != durable {
		t.Fatalf("file is %d bytes after Close, want the durable %d", got, durable)
	}
	verifyFile(t, path)
}
