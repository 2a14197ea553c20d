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
func signedLogWithTail(t *testing.T) (path string, lines [][]byte, lastCP int) {
	t.Helper()
	s := testSigner(t, testOrigin)
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
	return path, lines, lastCP
}

// TestQuickScanMatchesFullScan: the writer's quick scan ends where the full scan ends (size,
// seq, head, tree, records since the last checkpoint), and it did take its mark at the last
// checkpoint, so only the lines after it were decoded.
func TestQuickScanMatchesFullScan(t *testing.T) {
	path, lines, lastCP := signedLogWithTail(t)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	full, fsize, ftorn, err := scanForAppend(f, false)
	if err != nil {
		t.Fatal(err)
	}
	quick, qsize, qtorn, err := scanForAppend(f, true)
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

	q := &chain{quick: true}
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
	s := testSigner(t, testOrigin)
	for _, tc := range []struct {
		name string
		line func(lastCP int) int
	}{
		{"first record", func(int) int { return 0 }},
		{"record between checkpoints", func(lastCP int) int { return lastCP - 2 }},
		{"record after the last checkpoint", func(lastCP int) int { return lastCP + 2 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, lines, lastCP := signedLogWithTail(t)
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
	s := testSigner(t, testOrigin)
	path, lines, _ := signedLogWithTail(t)
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
