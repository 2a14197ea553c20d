package audit

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"
)

// syncBuffer is a bytes.Buffer safe for the writer goroutine's logging.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func testLogger() (*slog.Logger, *syncBuffer) {
	buf := &syncBuffer{}
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

// canary returns a unique random value that must never leak anywhere.
func canary(t testing.TB) string {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "AVCANARY-" + hex.EncodeToString(b)
}

func fixedClock() func() time.Time {
	ts := time.Date(2026, 11, 25, 18, 0, 3, 123456789, time.UTC)
	return func() time.Time { return ts }
}

// faultyFile wraps a real file and fails on demand.
type faultyFile struct {
	osFile
	mu           sync.Mutex
	failWrite    bool // write half the bytes, then fail
	failSync     bool
	failTruncate bool
	syncs        int
	writeGate    chan struct{} // if set, the next Write waits for it
}

var errInjected = errors.New("injected I/O failure")

func (f *faultyFile) set(fn func(f *faultyFile)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *faultyFile) Write(b []byte) (int, error) {
	f.mu.Lock()
	gate := f.writeGate
	f.writeGate = nil
	f.mu.Unlock()
	if gate != nil {
		<-gate
	}
	f.mu.Lock()
	fail := f.failWrite
	f.mu.Unlock()
	if fail {
		n, _ := f.osFile.Write(b[:len(b)/2])
		return n, errInjected
	}
	return f.osFile.Write(b)
}

func (f *faultyFile) Datasync() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.syncs++
	if f.failSync {
		return errInjected
	}
	return f.osFile.Datasync()
}

func (f *faultyFile) Truncate(size int64) error {
	f.mu.Lock()
	fail := f.failTruncate
	f.mu.Unlock()
	if fail {
		return errInjected
	}
	return f.osFile.Truncate(size)
}

// openFaulty opens path through a faultyFile with a fixed clock.
func openFaulty(t *testing.T, path string, opts ...Option) (*Log, *faultyFile, *syncBuffer) {
	t.Helper()
	l, ff, buf, err := openFaultyWith(t, path, func(*faultyFile) {}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return l, ff, buf
}

// openFaultyWith sets faults before the log is opened.
func openFaultyWith(t *testing.T, path string, fault func(*faultyFile), opts ...Option) (*Log, *faultyFile, *syncBuffer, error) {
	t.Helper()
	osf, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	ff := &faultyFile{osFile: osFile{osf}}
	ff.set(fault)
	logger, buf := testLogger()
	cfg, err := newConfig(append([]Option{withClock(fixedClock())}, opts...))
	if err != nil {
		t.Fatal(err)
	}
	l, err := newLog(ff, path, logger, cfg)
	return l, ff, buf, err
}

func tempLogPath(t testing.TB) string {
	t.Helper()
	return filepath.Join(t.TempDir(), "audit.jsonl")
}

func mustAppend(t testing.TB, l *Log, r Record) Entry {
	t.Helper()
	e, err := l.Append(r)
	if err != nil {
		t.Fatalf("Append(%s): %v", r.Type, err)
	}
	return e
}

func verifyFile(t testing.TB, path string) Summary {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s, err := Verify(f)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	return s
}

func fileSize(t testing.TB, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// chainAt returns a chain in the middle of a log: the next record is seq,
// chained to prev.
func chainAt(seq uint64, prev tlog.Hash) *chain {
	c := &chain{started: true}
	c.next, c.head = seq, prev
	return c
}

// withClock replaces the writer's clock.
func withClock(now func() time.Time) Option {
	return func(c *config) { c.now = now }
}
