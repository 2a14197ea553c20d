package audit

import (
	"crypto/rand"
	"encoding/json"
	"testing"

	"golang.org/x/mod/sumdb/tlog"
)

const testOrigin = "wirken.test/host-1/audit"

// testSigner returns a signer with a random seed.
func testSigner(t testing.TB, origin string) *Signer {
	t.Helper()
	seed := make([]byte, SeedSize)
	if _, err := rand.Read(seed); err != nil {
		t.Fatal(err)
	}
	s, err := NewSigner(origin, seed)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// writeLog opens a log at path with opts, appends n request records one at
// a time, and closes it.
func writeLog(t testing.TB, path string, n int, opts ...Option) {
	t.Helper()
	logger, _ := testLogger()
	l, err := Open(path, logger, opts...)
	if err != nil {
		t.Fatal(err)
	}
	for range n {
		mustAppend(t, l, Record{Type: TypeRequestAllow, Agent: "agent-7", Host: "api.example.com"})
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

// lineTypes returns the type of each line of the log at path.
func lineTypes(t testing.TB, path string) []string {
	t.Helper()
	var types []string
	for _, ln := range readLines(t, path) {
		var rec struct {
			Type string `json:"type"`
		}
		if err := json.Unmarshal(ln, &rec); err != nil {
			t.Fatal(err)
		}
		types = append(types, rec.Type)
	}
	return types
}

// indexesOf returns the positions (seqs, for a log starting at 0) of lines
// of type typ.
func indexesOf(types []string, typ string) []int {
	var out []int
	for i, ty := range types {
		if ty == typ {
			out = append(out, i)
		}
	}
	return out
}

// forgeCheckpoint returns a checkpoint note for (size, root) signed by s.
func forgeCheckpoint(t testing.TB, s *Signer, size uint64, root tlog.Hash) []byte {
	t.Helper()
	n, err := s.signCheckpoint(checkpoint{origin: s.origin, size: size, root: root})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// rechainFrom re-encodes lines[from:] after mutate has changed them, with
// seq and prev recomputed, as an attacker who can write the file would.
// mutate may be nil.
func rechainFrom(t testing.TB, lines [][]byte, from int, mutate func(i int, rec *LogRecord)) [][]byte {
	t.Helper()
	out := cloneLines(lines)
	var prev tlog.Hash
	var seq uint64
	if from > 0 {
		last := mustParse(t, out[from-1])
		prev, seq = last.Hash, last.Seq+1
	} else if len(out) > 0 {
		seq = mustParse(t, out[0]).Seq
		prev = mustParse(t, out[0]).Prev
	}
	for i := from; i < len(out); i++ {
		rec := mustParse(t, out[i])
		if mutate != nil {
			mutate(i, &rec)
		}
		b, err := encodeRecord(rec.Record, seq, prev, rec.Time)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = b
		prev = tlog.RecordHash(b)
		seq++
	}
	return out
}
