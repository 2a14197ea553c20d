package audit

import (
	"bytes"
	"errors"
	"os"
	"slices"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"
)

// signedLogWithTail writes a signed log (checkpoints every 8 records, and at Close) of 21
// records, then 3 records unsigned: a tail after the last checkpoint.
func signedLogWithTail(t *testing.T) (s *Signer, path string, lines [][]byte, lastCP int) {
	t.Helper()
	s = testSigner(t, testOrigin)
	path = tempLogPath(t)
	writeLog(t, path, 21, WithSigner(s), WithCheckpointEvery(8, 0))
	writeLog(t, path, 3)
	cps := indexesOf(lineTypes(t, path), TypeCheckpoint)
	if len(cps) < 3 {
		t.Fatalf("checkpoints at %v", cps)
	}
	lines = readLines(t, path)
	lastCP = cps[len(cps)-1]
	if lastCP != len(lines)-4 {
		t.Fatalf("last checkpoint at line %d of %d, want 3 records after it", lastCP, len(lines))
	}
	return s, path, lines, lastCP
}

// TestQuickScanMatchesFullScan: the writer's quick scan ends where the full scan ends (size,
// seq, head, tree, records since the last checkpoint), and it did take its mark at the last
// checkpoint, so only the lines after it were decoded.
func TestQuickScanMatchesFullScan(t *testing.T) {
	s, path, lines, lastCP := signedLogWithTail(t)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	full, fsize, ftorn, err := scanForAppend(f, "")
	if err != nil {
		t.Fatal(err)
	}
	quick, qsize, qtorn, err := scanForAppend(f, s.VerifierKey())
	if err != nil {
		t.Fatal(err)
	}
	if qsize != fsize || qtorn != ftorn || quick.next != full.next || quick.head != full.head ||
		quick.sinceCP != full.sinceCP || !quick.tree.equal(&full.tree) || quick.line != full.line {
		t.Fatalf("quick scan ends at size %d torn %d seq %d since-checkpoint %d line %d; full scan at %d %d %d %d %d",
			qsize, qtorn, quick.next, quick.sinceCP, quick.line, fsize, ftorn, full.next, full.sinceCP, full.line)
	}
	if full.next != uint64(len(lines)) || full.sinceCP != 3 {
		t.Fatalf("full scan: seq %d, %d since the checkpoint; want %d, 3", full.next, full.sinceCP, len(lines))
	}

	keys, err := newKeyring([]string{s.VerifierKey()})
	if err != nil {
		t.Fatal(err)
	}
	q := &chain{quick: true, keys: keys}
	if _, _, err := q.scan(bytes.NewReader(mustRead(t, path)), true); err != nil {
		t.Fatal(err)
	}
	var wantAt int64
	for _, ln := range lines[:lastCP+1] {
		wantAt += int64(len(ln)) + 1
	}
	if q.mark == nil || q.markedAt != wantAt || q.mark.next != uint64(lastCP+1) || q.mark.line != lastCP+1 {
		t.Fatalf("quick scan marked %v at %d; want the last checkpoint (line %d) ending at %d", q.mark != nil, q.markedAt, lastCP+1, wantAt)
	}
}

// TestOpenQuickScanRefusesTampering: a signed log changed before its last checkpoint, or after
// it, or with a forged line that only looks like a checkpoint, is refused at Open with the exact
// seq, and the file is left as it was.
func TestOpenQuickScanRefusesTampering(t *testing.T) {
	for _, tc := range []struct {
		name string
		line func(lastCP int) int
	}{
		{"first record", func(int) int { return 0 }},
		{"record between checkpoints", func(lastCP int) int { return lastCP - 2 }},
		{"record after the last checkpoint", func(lastCP int) int { return lastCP + 2 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, path, lines, lastCP := signedLogWithTail(t)
			i := tc.line(lastCP)
			lines[i] = bytes.Replace(lines[i], []byte(`"agent-7"`), []byte(`"agent-8"`), 1)
			if err := os.WriteFile(path, joinLines(lines), 0o600); err != nil {
				t.Fatal(err)
			}
			before := fileSize(t, path)
			logger, _ := testLogger()
			_, err := Open(path, logger, WithSigner(s))
			var verr *VerifyError
			if !errors.As(err, &verr) || verr.Seq != uint64(i)+1 || verr.Line != i+2 {
				t.Fatalf("Open = %v, want the record after line %d refused (its prev no longer matches)", err, i+1)
			}
			if fileSize(t, path) != before {
				t.Fatal("Open modified a log it refused")
			}
		})
	}
	// An attacker who can write the file but has no key: a record after the last checkpoint
	// changed (not re-chained), and a checkpoint appended whose root covers the changed bytes,
	// signed by the attacker's key. The quick pass would mark that checkpoint and only hash the
	// changed record; its signature is checked, so Open falls back to the full scan.
	t.Run("a forged checkpoint appended after a changed record", func(t *testing.T) {
		s, path, lines, lastCP := signedLogWithTail(t)
		i := lastCP + 2
		lines[i] = bytes.Replace(lines[i], []byte(`"agent-7"`), []byte(`"agent-8"`), 1)
		var stored memHashes
		for j, ln := range lines {
			hs, err := tlog.StoredHashes(int64(j), ln, stored)
			if err != nil {
				t.Fatal(err)
			}
			stored = append(stored, hs...)
		}
		root, err := tlog.TreeHash(int64(len(lines)), stored)
		if err != nil {
			t.Fatal(err)
		}
		attacker := testSigner(t, testOrigin)
		forged, err := encodeRecord(Record{Type: TypeCheckpoint, Detail: string(forgeCheckpoint(t, attacker, uint64(len(lines)), root))},
			uint64(len(lines)), tlog.RecordHash(lines[len(lines)-1]), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, joinLines(append(lines, forged)), 0o600); err != nil {
			t.Fatal(err)
		}
		logger, _ := testLogger()
		_, err = Open(path, logger, WithSigner(s))
		var verr *VerifyError
		if !errors.As(err, &verr) || verr.Seq != uint64(i)+1 {
			t.Fatalf("Open = %v, want the record after line %d refused", err, i+1)
		}
	})
	t.Run("the quotes of a checkpoint inside a record's detail", func(t *testing.T) {
		b, err := encodeRecord(Record{Type: TypeRequestAllow, Detail: `x"type":"checkpoint"`}, 5, tlog.Hash{7}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if ownRecord(b) {
			t.Fatalf("%s taken for the log's own record", b)
		}
	})
}

// TestOpenQuickScanTornTail: a torn line after the last checkpoint of a signed log is cut
// off and recorded, and the log still verifies.
func TestOpenQuickScanTornTail(t *testing.T) {
	s, path, lines, _ := signedLogWithTail(t)
	torn := []byte(`{"v":1,"seq":`)
	if err := os.WriteFile(path, append(joinLines(lines), torn...), 0o600); err != nil {
		t.Fatal(err)
	}
	logger, _ := testLogger()
	l, err := Open(path, logger, WithSigner(s))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	types := lineTypes(t, path)
	if !slices.Contains(types[len(lines):], TypeRecovered) {
		t.Fatalf("after the torn tail: %v", types[len(lines):])
	}
	if sum := verifyFile(t, path); sum.Records != uint64(len(types)) {
		t.Fatalf("verified %d records of %d", sum.Records, len(types))
	}
}

// TestOpenQuickScanOtherKey: a log whose checkpoints were signed with another key (the root key
// was rotated since) still opens, by the full scan, and continues the same chain.
func TestOpenQuickScanOtherKey(t *testing.T) {
	_, path, lines, _ := signedLogWithTail(t)
	logger, _ := testLogger()
	l, err := Open(path, logger, WithSigner(testSigner(t, testOrigin)))
	if err != nil {
		t.Fatal(err)
	}
	if e := mustAppend(t, l, Record{Type: TypeRequestAllow}); e.Seq != uint64(len(lines)) {
		t.Fatalf("appended at seq %d, want %d", e.Seq, len(lines))
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if sum := verifyFile(t, path); sum.Records != uint64(len(readLines(t, path))) {
		t.Fatalf("verified %d records", sum.Records)
	}
}
