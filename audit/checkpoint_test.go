package audit

import (
	"bytes"
	"errors"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// TestCheckpointEveryK: with K = 4 a checkpoint follows every 4th record,
// Close adds a final one, and each is a valid C2SP checkpoint of the tree of
// the records before it.
func TestCheckpointEveryK(t *testing.T) {
	s := testSigner(t, testOrigin)
	path := tempLogPath(t)
	writeLog(t, path, 10, WithSigner(s), WithCheckpointEvery(4, 0))
	types := lineTypes(t, path)
	// r r r r C r r r r C r r C(close)
	if got, want := indexesOf(types, TypeCheckpoint), []int{4, 9, 12}; !slices.Equal(got, want) {
		t.Fatalf("checkpoints at %v, want %v (types %v)", got, want, types)
	}
	lines := readLines(t, path)
	v, err := note.NewVerifier(s.VerifierKey())
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range indexesOf(types, TypeCheckpoint) {
		rec, err := ParseRecord(lines[i])
		if err != nil {
			t.Fatal(err)
		}
		n, err := note.Open([]byte(rec.Detail), note.VerifierList(v))
		if err != nil {
			t.Fatalf("checkpoint %d: %v", i, err)
		}
		// Independent root: tlog over the leaf hashes of lines 0..i-1.
		var stored memHashes
		for j := range i {
			hs, err := tlog.StoredHashes(int64(j), lines[j], stored)
			if err != nil {
				t.Fatal(err)
			}
			stored = append(stored, hs...)
		}
		root, err := tlog.TreeHash(int64(i), stored)
		if err != nil {
			t.Fatal(err)
		}
		want := testOrigin + "\n" + strconv.Itoa(i) + "\n" + encodeHash(root) + "\n"
		if n.Text != want {
			t.Fatalf("checkpoint %d text %q, want %q", i, n.Text, want)
		}
		if !strings.HasPrefix(rec.Detail[len(want):], "\n\u2014 "+testOrigin+" ") {
			t.Fatalf("checkpoint %d is not a C2SP signed note: %q", i, rec.Detail)
		}
		if rec.Agent != "" || rec.Host != "" {
			t.Fatal("checkpoint record carries caller fields")
		}
	}
	sum, err := Verify(bytes.NewReader(mustRead(t, path)), WithVerifierKey(s.VerifierKey()))
	if err != nil {
		t.Fatal(err)
	}
	if sum.Records != 13 || sum.Checkpoints != 3 || sum.LastCheckpoint != 12 || sum.Unsealed != 0 {
		t.Fatalf("summary %+v", sum)
	}
	if !bytes.Equal(sum.LastCheckpointNote, []byte(mustParse(t, lines[12]).Detail)) {
		t.Fatal("summary does not carry the last checkpoint's note")
	}
}

func mustParse(t testing.TB, line []byte) LogRecord {
	t.Helper()
	r, err := ParseRecord(line)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestCheckpointInsideABatch: group-committed records get checkpoints at
// exact multiples of K too, in the same write.
func TestCheckpointInsideABatch(t *testing.T) {
	s := testSigner(t, testOrigin)
	path := tempLogPath(t)
	l, ff, _ := openFaulty(t, path, WithSigner(s), WithCheckpointEvery(3, 0))
	gate := make(chan struct{})
	ff.set(func(f *faultyFile) { f.writeGate = gate })
	errs := make(chan error, 8)
	go func() { _, err := l.Append(Record{Type: TypeStartup}); errs <- err }()
	waitFor(t, func() bool { return gateTaken(ff) })
	for range 7 {
		go func() { _, err := l.Append(Record{Type: TypeRequestAllow}); errs <- err }()
	}
	waitFor(t, func() bool { return len(l.reqs) == 7 })
	close(gate)
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	// startup | r r C r r r C r r r? -> records 0,1,2 then C at 3, ...
	types := lineTypes(t, path)
	if got, want := indexesOf(types, TypeCheckpoint), []int{3, 7, 10}; !slices.Equal(got, want) {
		t.Fatalf("checkpoints at %v, want %v (types %v)", got, want, types)
	}
	ff.set(func(f *faultyFile) {
		if f.syncs != 3 { // first batch, second batch, Close's checkpoint
			t.Errorf("%d fdatasyncs, want 3", f.syncs)
		}
	})
	if _, err := Verify(bytes.NewReader(mustRead(t, path)), WithVerifierKey(s.VerifierKey())); err != nil {
		t.Fatal(err)
	}
}

// TestCheckpointEveryT: the timer seals new records, and only when there
// are some.
func TestCheckpointEveryT(t *testing.T) {
	s := testSigner(t, testOrigin)
	path := tempLogPath(t)
	logger, _ := testLogger()
	l, err := Open(path, logger, WithSigner(s), WithCheckpointEvery(0, 20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	mustAppend(t, l, Record{Type: TypeStartup})
	waitFor(t, func() bool { return len(readLines(t, path)) == 2 })
	time.Sleep(100 * time.Millisecond) // five more ticks with nothing new
	if got := lineTypes(t, path); !slices.Equal(got, []string{TypeStartup, TypeCheckpoint}) {
		t.Fatalf("types %v, want startup then one checkpoint", got)
	}
	mustAppend(t, l, Record{Type: TypeRequestAllow})
	waitFor(t, func() bool { return len(readLines(t, path)) == 4 })
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	want := []string{TypeStartup, TypeCheckpoint, TypeRequestAllow, TypeCheckpoint}
	if got := lineTypes(t, path); !slices.Equal(got, want) {
		t.Fatalf("types %v, want %v (Close adds nothing when all is sealed)", got, want)
	}
}

// TestNoSignerNoCheckpoints keeps the old behaviour.
func TestNoSignerNoCheckpoints(t *testing.T) {
	path := tempLogPath(t)
	writeLog(t, path, 300, WithCheckpointEvery(1, time.Millisecond))
	if got := indexesOf(lineTypes(t, path), TypeCheckpoint); len(got) != 0 {
		t.Fatalf("checkpoints at %v without a signer", got)
	}
	sum := verifyFile(t, path)
	if sum.Checkpoints != 0 || sum.Unsealed != 300 || sum.LastCheckpoint != 0 {
		t.Fatalf("summary %+v", sum)
	}
}

// TestReopenContinuesTheTree: a log written over several sessions, with
// and without a signer, has checkpoints whose roots cover everything before
// them, and the unsealed count survives a reopen.
func TestReopenContinuesTheTree(t *testing.T) {
	s := testSigner(t, testOrigin)
	path := tempLogPath(t)
	writeLog(t, path, 5) // unsigned: 5 unsealed records
	logger, _ := testLogger()
	l, err := Open(path, logger, WithSigner(s), WithCheckpointEvery(8, 0))
	if err != nil {
		t.Fatal(err)
	}
	for range 3 { // 8 unsealed now: checkpoint at seq 8
		mustAppend(t, l, Record{Type: TypeRequestAllow})
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	writeLog(t, path, 2, WithSigner(s), WithCheckpointEvery(8, 0))
	types := lineTypes(t, path)
	if got, want := indexesOf(types, TypeCheckpoint), []int{8, 11}; !slices.Equal(got, want) {
		t.Fatalf("checkpoints at %v, want %v", got, want)
	}
	sum, err := Verify(bytes.NewReader(mustRead(t, path)), WithVerifierKey(s.VerifierKey()))
	if err != nil {
		t.Fatal(err)
	}
	if sum.Records != 12 || sum.LastCheckpoint != 11 || sum.Unsealed != 0 {
		t.Fatalf("summary %+v", sum)
	}
}

// TestOpenRefusesABadCheckpoint: Open checks checkpoint roots even without
// a key (it cannot check signatures).
func TestOpenRefusesABadCheckpoint(t *testing.T) {
	s := testSigner(t, testOrigin)
	path := tempLogPath(t)
	writeLog(t, path, 4, WithSigner(s), WithCheckpointEvery(2, 0))
	lines := readLines(t, path)
	// Re-sign checkpoint 2 over a wrong root with the right key and re-chain:
	// only the root check can catch it.
	forged := forgeCheckpoint(t, s, 2, tlog.Hash{1})
	lines = rechainFrom(t, lines, 2, func(i int, rec *LogRecord) {
		if i == 2 {
			rec.Detail = string(forged)
		}
	})
	if err := os.WriteFile(path, joinLines(lines), 0o600); err != nil {
		t.Fatal(err)
	}
	logger, _ := testLogger()
	_, err := Open(path, logger)
	var verr *VerifyError
	if !errors.As(err, &verr) || verr.Seq != 2 || !strings.Contains(verr.Reason, "root") {
		t.Fatalf("Open = %v, want a root mismatch at seq 2", err)
	}
}

func TestAppendRefusesReservedTypes(t *testing.T) {
	path := tempLogPath(t)
	logger, _ := testLogger()
	l, err := Open(path, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, typ := range []string{TypeCheckpoint, TypeSegment} {
		if _, err := l.Append(Record{Type: typ, Detail: "x"}); !errors.Is(err, errReserved) {
			t.Fatalf("Append(%s) = %v, want it refused", typ, err)
		}
	}
	if e := mustAppend(t, l, Record{Type: TypeStartup}); e.Seq != 0 {
		t.Fatalf("seq %d after refused records, want 0", e.Seq)
	}
}

func TestOpenOptionErrors(t *testing.T) {
	logger, _ := testLogger()
	bad := map[string]Option{
		"nil signer":         WithSigner(nil),
		"negative K":         WithCheckpointEvery(-1, time.Second),
		"negative T":         WithCheckpointEvery(1, -time.Second),
		"zero segment size":  WithSegmentSize(0),
		"negative retention": WithRetention(-1),
	}
	for name, opt := range bad {
		t.Run(name, func(t *testing.T) {
			path := tempLogPath(t)
			if _, err := Open(path, logger, opt); err == nil {
				t.Fatal("want an error")
			}
			if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
				t.Fatal("Open created the file despite bad options")
			}
		})
	}
}

// TestCheckpointFailureFailsTheBatch: a checkpoint is written with the
// records of its batch; if the write fails neither is kept, and the next
// batch carries the checkpoint.
func TestCheckpointFailureFailsTheBatch(t *testing.T) {
	s := testSigner(t, testOrigin)
	path := tempLogPath(t)
	l, ff, _ := openFaulty(t, path, WithSigner(s), WithCheckpointEvery(2, 0))
	mustAppend(t, l, Record{Type: TypeStartup})
	ff.set(func(f *faultyFile) { f.failSync = true })
	if _, err := l.Append(Record{Type: TypeRequestAllow}); !errors.Is(err, errInjected) {
		t.Fatalf("Append = %v, want the injected error", err)
	}
	ff.set(func(f *faultyFile) { f.failSync = false })
	e := mustAppend(t, l, Record{Type: TypeRequestAllow})
	if e.Seq != 1 {
		t.Fatalf("seq %d, want 1", e.Seq)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	want := []string{TypeStartup, TypeRequestAllow, TypeCheckpoint}
	if got := lineTypes(t, path); !slices.Equal(got, want) {
		t.Fatalf("types %v, want %v", got, want)
	}
	if _, err := Verify(bytes.NewReader(mustRead(t, path)), WithVerifierKey(s.VerifierKey())); err != nil {
		t.Fatal(err)
	}
}
