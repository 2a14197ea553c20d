package audit

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
)

// withCreate replaces how the writer creates a new active file.
func withCreate(create func(path string) (file, error)) Option {
	return func(c *config) { c.create = create }
}

// appendN appends n request records and returns their entries.
func appendN(t testing.TB, l *Log, n int) []Entry {
	t.Helper()
	out := make([]Entry, 0, n)
	for i := range n {
		out = append(out, mustAppend(t, l, Record{Type: TypeRequestAllow, Agent: "agent-7", Detail: fmt.Sprintf("r%d", i)}))
	}
	return out
}

// segmentedLog writes n records into a log that rotates every 2 KiB.
func segmentedLog(t *testing.T, n int, opts ...Option) (string, []Entry) {
	t.Helper()
	path := tempLogPath(t)
	logger, _ := testLogger()
	l, err := Open(path, logger, append([]Option{WithSegmentSize(2048)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	entries := appendN(t, l, n)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return path, entries
}

func allLines(t testing.TB, paths []string) [][]byte {
	t.Helper()
	var out [][]byte
	for _, p := range paths {
		out = append(out, readLines(t, p)...)
	}
	return out
}

func TestSegmentRotation(t *testing.T) {
	for _, signed := range []bool{true, false} {
		t.Run(fmt.Sprintf("signed=%v", signed), func(t *testing.T) {
			var opts []Option
			var vopts []VerifyOption
			if signed {
				s := testSigner(t, testOrigin)
				opts = append(opts, WithSigner(s), WithCheckpointEvery(8, 0))
				vopts = append(vopts, WithVerifierKey(s.VerifierKey()))
			}
			path, entries := segmentedLog(t, 80, opts...)
			paths, err := SegmentPaths(path)
			if err != nil {
				t.Fatal(err)
			}
			if len(paths) < 4 {
				t.Fatalf("%d files, want several segments", len(paths))
			}
			base := strings.TrimSuffix(path, ".jsonl")
			for i, p := range paths[:len(paths)-1] {
				if want := fmt.Sprintf("%s.%06d.jsonl", base, i+1); p != want {
					t.Fatalf("segment %d is %s, want %s", i, p, want)
				}
			}
			if paths[len(paths)-1] != path {
				t.Fatal("the active file is not listed last")
			}
			// The entries Append returned are the lines, across files.
			lines := allLines(t, paths)
			var got []Entry
			for _, ln := range lines {
				r := mustParse(t, ln)
				if r.Type == TypeRequestAllow {
					got = append(got, Entry{Seq: r.Seq, Hash: r.Hash})
				}
			}
			if !slices.Equal(got, entries) {
				t.Fatal("the records in the segments are not the ones appended")
			}
			for i, p := range paths {
				types := lineTypes(t, p)
				if i > 0 && types[0] != TypeSegment {
					t.Fatalf("%s starts with %s", p, types[0])
				}
				if signed && i > 0 && types[1] != TypeCheckpoint {
					t.Fatalf("%s: the segment record is not signed right away", p)
				}
				if signed && i < len(paths)-1 && types[len(types)-1] != TypeCheckpoint {
					t.Fatalf("closed segment %s does not end with a checkpoint", p)
				}
				if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
					t.Fatalf("%s: mode %v, %v", p, fi.Mode(), err)
				}
			}
			sum, err := VerifyFiles(paths, vopts...)
			if err != nil {
				t.Fatal(err)
			}
			if sum.First != 0 || sum.Records != uint64(len(lines)) {
				t.Fatalf("summary %+v, want all %d records", sum, len(lines))
			}
			// Any suffix of the run verifies on its own, and so does the
			// concatenation as one stream.
			for k := 1; k < len(paths); k++ {
				s, err := VerifyFiles(paths[k:], vopts...)
				if err != nil {
					t.Fatalf("segments from %d: %v", k, err)
				}
				first := mustParse(t, readLines(t, paths[k])[0]).Seq
				if s.First != first || s.Records != sum.Records || s.Head != sum.Head {
					t.Fatalf("segments from %d: summary %+v", k, s)
				}
			}
			var readers []io.Reader
			for _, p := range paths {
				readers = append(readers, bytes.NewReader(mustRead(t, p)))
			}
			if s, err := Verify(io.MultiReader(readers...), vopts...); err != nil || s.Records != sum.Records {
				t.Fatalf("concatenation: %+v, %v", s, err)
			}
		})
	}
}

// TestSegmentReopen: a reopened log continues in the active segment and
// numbers new segments after the existing ones.
func TestSegmentReopen(t *testing.T) {
	s := testSigner(t, testOrigin)
	path, _ := segmentedLog(t, 40, WithSigner(s))
	before, _ := SegmentPaths(path)
	logger, _ := testLogger()
	l, err := Open(path, logger, WithSigner(s), WithSegmentSize(2048))
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, l, 40)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	after, _ := SegmentPaths(path)
	if len(after) <= len(before) || !slices.Equal(after[:len(before)-1], before[:len(before)-1]) {
		t.Fatalf("segments %v after reopening, were %v", after, before)
	}
	if _, err := VerifyFiles(after, WithVerifierKey(s.VerifierKey())); err != nil {
		t.Fatal(err)
	}
}

func TestSegmentRetention(t *testing.T) {
	s := testSigner(t, testOrigin)
	key := WithVerifierKey(s.VerifierKey())
	path, _ := segmentedLog(t, 100, WithSigner(s), WithCheckpointEvery(8, 0), WithRetention(2))
	paths, err := SegmentPaths(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) != 3 {
		t.Fatalf("files %v, want 2 closed segments and the active one", paths)
	}
	if strings.HasSuffix(paths[0], ".000001.jsonl") {
		t.Fatal("the oldest segment was kept")
	}
	sum, err := VerifyFiles(paths, key)
	if err != nil {
		t.Fatal(err)
	}
	if sum.First == 0 {
		t.Fatal("a run starting at a later segment reports First 0")
	}
	// A trusted checkpoint inside the retained run is checked...
	lines := allLines(t, paths)
	var inside []byte
	for _, ln := range lines {
		if r := mustParse(t, ln); r.Type == TypeCheckpoint && r.Seq > sum.First {
			inside = []byte(r.Detail)
			break
		}
	}
	if _, err := VerifyFiles(paths, key, WithTrustedCheckpoint(inside)); err != nil {
		t.Fatalf("trusted checkpoint inside the retained run: %v", err)
	}
	// ...one of exactly the first retained size is checked against the
	// segment record's frontier...
	first := mustParse(t, lines[0])
	var f frontier
	if f, err = parseFrontier(first.Detail); err != nil {
		t.Fatal(err)
	}
	atStart := forgeCheckpoint(t, s, first.Seq, f.root())
	if _, err := VerifyFiles(paths, key, WithTrustedCheckpoint(atStart)); err != nil {
		t.Fatalf("trusted checkpoint at the first retained seq: %v", err)
	}
	// ...and an older one cannot be.
	older := forgeCheckpoint(t, s, first.Seq-1, f.root())
	_, err = VerifyFiles(paths, key, WithTrustedCheckpoint(older))
	var verr *VerifyError
	if !errors.Is(err, ErrTrustedCheckpointTooOld) || errors.As(err, &verr) {
		t.Fatalf("VerifyFiles = %v, want ErrTrustedCheckpointTooOld", err)
	}
	// Rolling back the active file is caught against the last checkpoint.
	last := sum.LastCheckpointNote
	active := readLines(t, path)
	if err := os.WriteFile(path, joinLines(active[:2]), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = VerifyFiles(paths, key, WithTrustedCheckpoint(last))
	if !errors.As(err, &verr) || !errors.Is(err, ErrRolledBack) || verr.Path != path {
		t.Fatalf("VerifyFiles = %v, want ErrRolledBack in the active file", err)
	}
}

// TestSegmentBoundaryTampering: a boundary that does not chain is caught at
// the first line of the later file.
func TestSegmentBoundaryTampering(t *testing.T) {
	s := testSigner(t, testOrigin)
	key := WithVerifierKey(s.VerifierKey())
	path, _ := segmentedLog(t, 80, WithSigner(s), WithCheckpointEvery(8, 0))
	paths, err := SegmentPaths(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) < 4 {
		t.Fatalf("only %d files", len(paths))
	}
	firstSeq := func(p string) uint64 { return mustParse(t, readLines(t, p)[0]).Seq }
	// rewrite replaces file i's lines (in a copy of the run) and returns the
	// new run.
	copyRun := func(t *testing.T) []string {
		dir := t.TempDir()
		out := make([]string, len(paths))
		for i, p := range paths {
			out[i] = filepath.Join(dir, filepath.Base(p))
			if err := os.WriteFile(out[i], mustRead(t, p), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		return out
	}
	write := func(t *testing.T, p string, lines [][]byte) {
		if err := os.WriteFile(p, joinLines(lines), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name   string
		tamper func(t *testing.T, run []string) []string
		file   int // index in the original run of the file the error is in
		line   int
		seq    func() uint64
		reason string
	}{
		{
			name:   "a middle segment deleted",
			tamper: func(t *testing.T, run []string) []string { return slices.Delete(run, 1, 2) },
			file:   2, line: 1, seq: func() uint64 { return firstSeq(paths[1]) },
			reason: "seq is",
		},
		{
			name: "two segments swapped",
			tamper: func(t *testing.T, run []string) []string {
				run[1], run[2] = run[2], run[1]
				return run
			},
			file: 2, line: 1, seq: func() uint64 { return firstSeq(paths[1]) },
			reason: "seq is",
		},
		{
			name: "the end of a closed segment cut off",
			tamper: func(t *testing.T, run []string) []string {
				l := readLines(t, run[1])
				write(t, run[1], l[:len(l)-1])
				return run
			},
			file: 2, line: 1, seq: func() uint64 { return firstSeq(paths[2]) - 1 },
			reason: "seq is",
		},
		{
			name: "a segment record with a forged frontier, re-chained",
			tamper: func(t *testing.T, run []string) []string {
				l := readLines(t, run[2])
				write(t, run[2], rechainFrom(t, l, 0, func(i int, r *LogRecord) {
					if i == 0 {
						f, err := parseFrontier(r.Detail)
						if err != nil {
							t.Fatal(err)
						}
						f.nodes[0][0] ^= 1
						r.Detail = f.String()
					}
				}))
				return run
			},
			file: 2, line: 1, seq: func() uint64 { return firstSeq(paths[2]) },
			reason: "segment frontier is not the tree so far",
		},
		{
			name: "a segment record whose prev does not chain",
			tamper: func(t *testing.T, run []string) []string {
				l := readLines(t, run[2])
				r := mustParse(t, l[0])
				bad := r.Prev
				bad[0] ^= 1
				b, err := encodeRecord(r.Record, r.Seq, bad, r.Time)
				if err != nil {
					t.Fatal(err)
				}
				l[0] = b
				write(t, run[2], rechainFrom(t, l, 1, nil))
				return run
			},
			file: 2, line: 1, seq: func() uint64 { return firstSeq(paths[2]) },
			reason: "prev does not match",
		},
		{
			name: "a later file without its segment record",
			tamper: func(t *testing.T, run []string) []string {
				l := readLines(t, run[2])
				write(t, run[2], l[1:])
				return run
			},
			file: 2, line: 1, seq: func() uint64 { return firstSeq(paths[2]) },
			reason: "does not start with a segment record",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			run := copyRun(t)
			bad := run[tc.file]
			_, err := VerifyFiles(tc.tamper(t, run), key)
			var verr *VerifyError
			if !errors.As(err, &verr) {
				t.Fatalf("VerifyFiles = %v, want a *VerifyError", err)
			}
			if verr.Path != bad || verr.Line != tc.line || verr.Seq != tc.seq() {
				t.Fatalf("error at %s line %d seq %d, want %s line %d seq %d: %v",
					verr.Path, verr.Line, verr.Seq, bad, tc.line, tc.seq(), verr)
			}
			if !strings.Contains(verr.Reason, tc.reason) {
				t.Fatalf("reason %q, want it to mention %q", verr.Reason, tc.reason)
			}
		})
	}
}

// TestForgedFrontierFailsStandalone: a segment verified on its own relies
// on the checkpoint right after its segment record, which signs the
// frontier.
func TestForgedFrontierFailsStandalone(t *testing.T) {
	s := testSigner(t, testOrigin)
	path, _ := segmentedLog(t, 40, WithSigner(s), WithCheckpointEvery(8, 0))
	paths, _ := SegmentPaths(path)
	l := readLines(t, paths[1])
	forged := rechainFrom(t, l, 0, func(i int, r *LogRecord) {
		if i == 0 {
			f, _ := parseFrontier(r.Detail)
			f.nodes[0][0] ^= 1
			r.Detail = f.String()
		}
	})
	_, err := Verify(bytes.NewReader(joinLines(forged)), WithVerifierKey(s.VerifierKey()))
	var verr *VerifyError
	if !errors.As(err, &verr) || verr.Seq != mustParse(t, l[1]).Seq || !strings.Contains(verr.Reason, "checkpoint root") {
		t.Fatalf("Verify = %v, want the signed checkpoint after the segment record to fail", err)
	}
}

// TestSegmentRecoveryAfterCrash: a crash after the active file was renamed
// (or after the new one was created empty) leaves no active records; Open
// continues the chain from the newest closed segment and records that.
func TestSegmentRecoveryAfterCrash(t *testing.T) {
	for _, mode := range []string{"active missing", "active empty", "active torn"} {
		t.Run(mode, func(t *testing.T) {
			s := testSigner(t, testOrigin)
			path, _ := segmentedLog(t, 30, WithSigner(s))
			paths, _ := SegmentPaths(path)
			next := segmentPath(path, uint64(len(paths)))
			if err := os.Rename(path, next); err != nil {
				t.Fatal(err)
			}
			switch mode {
			case "active empty":
				if err := os.WriteFile(path, nil, 0o600); err != nil {
					t.Fatal(err)
				}
			case "active torn":
				if err := os.WriteFile(path, []byte(`{"v":1,"seq":`), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			logger, logs := testLogger()
			l, err := Open(path, logger, WithSigner(s), WithSegmentSize(2048))
			if err != nil {
				t.Fatal(err)
			}
			e := mustAppend(t, l, Record{Type: TypeStartup})
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			types := lineTypes(t, path)
			want := []string{TypeSegment, TypeCheckpoint, TypeRecovered, TypeStartup, TypeCheckpoint}
			if mode == "active torn" {
				want = slices.Insert(want, 2, TypeRecovered)
			}
			if !slices.Equal(types, want) {
				t.Fatalf("new active file %v, want %v", types, want)
			}
			all, _ := SegmentPaths(path)
			sum, err := VerifyFiles(all, WithVerifierKey(s.VerifierKey()))
			if err != nil {
				t.Fatal(err)
			}
			// Close sealed the startup record with a checkpoint.
			if sum.Records != e.Seq+2 || sum.Recovered != len(want)-4 {
				t.Fatalf("summary %+v", sum)
			}
			if !strings.Contains(logs.String(), "continued the chain") {
				t.Fatalf("recovery not logged: %s", logs.String())
			}
		})
	}
}

// TestSegmentStartFailureFailsClosed: while the new active file cannot be
// created, Appends fail; once it can, the log carries on.
func TestSegmentStartFailureFailsClosed(t *testing.T) {
	s := testSigner(t, testOrigin)
	path := tempLogPath(t)
	var fail atomic.Bool
	fail.Store(true)
	logger, logs := testLogger()
	create := func(p string) (file, error) {
		if fail.Load() {
			return nil, errInjected
		}
		return createActive(p)
	}
	l, err := Open(path, logger, WithSigner(s), WithSegmentSize(1024), withCreate(create))
	if err != nil {
		t.Fatal(err)
	}
	var last Entry
	for {
		e, err := l.Append(Record{Type: TypeRequestAllow})
		if err != nil {
			if !errors.Is(err, errInjected) {
				t.Fatalf("Append = %v, want the injected error", err)
			}
			break
		}
		if e.Seq > 100 {
			t.Fatal("no rotation happened")
		}
		last = e
	}
	for range 3 {
		if _, err := l.Append(Record{Type: TypeRequestAllow}); !errors.Is(err, errInjected) {
			t.Fatalf("Append while no segment can be started = %v", err)
		}
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("an active file exists although creating it failed")
	}
	fail.Store(false)
	e := mustAppend(t, l, Record{Type: TypeRequestAllow})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	paths, _ := SegmentPaths(path)
	sum, err := VerifyFiles(paths, WithVerifierKey(s.VerifierKey()))
	if err != nil {
		t.Fatal(err)
	}
	if e.Seq <= last.Seq || sum.Records <= e.Seq {
		t.Fatalf("entry %d after %d, summary %+v", e.Seq, last.Seq, sum)
	}
	if !strings.Contains(logs.String(), "rotation failed") {
		t.Fatalf("failure not logged: %s", logs.String())
	}
}

func TestSegmentPaths(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.jsonl")
	for _, name := range []string{
		"audit.000002.jsonl", "audit.000010.jsonl", "audit.1000000.jsonl", "audit.000001.jsonl",
		"audit.00001.jsonl", "audit.0000001.jsonl", "audit.000000.jsonl", "audit.x.jsonl",
		"audit.000003.jsonl.tmp", "other.000004.jsonl", "audit.jsonl.000005.jsonl",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "audit.000004.jsonl"), 0o700); err != nil {
		t.Fatal(err)
	}
	got, err := SegmentPaths(path)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"audit.000001.jsonl", "audit.000002.jsonl", "audit.000010.jsonl", "audit.1000000.jsonl"}
	for i := range want {
		want[i] = filepath.Join(dir, want[i])
	}
	if !slices.Equal(got, want) {
		t.Fatalf("SegmentPaths = %v, want %v (no active file yet)", got, want)
	}
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	got, _ = SegmentPaths(path)
	if got[len(got)-1] != path || len(got) != len(want)+1 {
		t.Fatalf("SegmentPaths = %v, want the active file last", got)
	}
}
