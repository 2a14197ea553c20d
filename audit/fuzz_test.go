package audit

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/wirken/wirken/internal/fuzzseed"
)

// FuzzVerify feeds arbitrary bytes to Verify. It must never panic, and what
// it says must be consistent with the input.
func FuzzVerify(f *testing.F) {
	seeds := fuzzseed.New(f)
	lines, _ := buildLog(f, 4)
	valid := joinLines(lines)
	seeds.Add(valid)
	seeds.Add([]byte{})
	seeds.Add([]byte("\n"))
	seeds.Add(valid[:len(valid)-1])
	seeds.Add(append(bytes.Clone(valid), valid...))
	seeds.Add([]byte(`{"v":1,"seq":0,"ts":"2026-11-25T18:00:03.123456Z","type":"startup","prev":""}` + "\n"))
	seeds.Add([]byte(`{"v":1,"seq":0,"ts":"2026-11-25T18:00:03.123456Z","type":"startup","prev":"","agent":"\u2028\ufffd<"}` + "\n"))
	// A signed, segmented log: checkpoints, and a file that starts with a
	// segment record.
	s := fuzzSigner(f)
	path := filepath.Join(f.TempDir(), "audit.jsonl")
	writeLog(f, path, 30, WithSigner(s), WithCheckpointEvery(4, 0), WithSegmentSize(1500))
	paths, err := SegmentPaths(path)
	if err != nil || len(paths) < 2 {
		f.Fatalf("segments %v, %v", paths, err)
	}
	for _, p := range paths {
		seeds.Add(mustRead(f, p))
	}
	key := WithVerifierKey(s.VerifierKey())
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, opts := range [][]VerifyOption{nil, {key}} {
			s, err := Verify(bytes.NewReader(data), opts...)
			nl := uint64(bytes.Count(data, []byte{'\n'}))
			firstLine, _, _ := bytes.Cut(data, []byte{'\n'})
			seeded := bytes.Contains(firstLine, []byte(`"type":"segment"`))
			if err != nil {
				var verr *VerifyError
				if !errors.As(err, &verr) {
					t.Fatalf("in-memory Verify returned a non-VerifyError: %v", err)
				}
				if verr.Line < 1 || uint64(verr.Line) > nl+1 || verr.Seq < uint64(verr.Line-1) || verr.Reason == "" {
					t.Fatalf("inconsistent error %+v for %d newlines", verr, nl)
				}
				if !seeded && verr.Seq != uint64(verr.Line-1) {
					t.Fatalf("error %+v: seq is not line-1 in a log starting at 0", verr)
				}
				continue
			}
			if s.Records-s.First != nl {
				t.Fatalf("%d records from %d but %d newlines", s.Records, s.First, nl)
			}
			if s.First > 0 && !seeded {
				t.Fatal("a log not starting with a segment record starts after seq 0")
			}
			if s.Unsealed > nl || (s.Checkpoints > 0 && s.LastCheckpoint+1+s.Unsealed != s.Records) {
				t.Fatalf("inconsistent summary %+v", s)
			}
			if len(data) > 0 && data[len(data)-1] != '\n' {
				t.Fatal("accepted a log without a trailing newline")
			}
			if nl == 0 {
				if s.Head != (tlog.Hash{}) {
					t.Fatal("empty log with a head")
				}
				continue
			}
			body := data[:len(data)-1]
			last := body[bytes.LastIndexByte(body, '\n')+1:]
			if s.Head != tlog.RecordHash(last) {
				t.Fatal("head is not the leaf hash of the last line")
			}
		}
	})
}

// fuzzSigner is a fixed signer, so that fuzz seeds stay valid across runs.
func fuzzSigner(t testing.TB) *Signer {
	s, err := NewSigner(testOrigin, bytes.Repeat([]byte{42}, SeedSize))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// FuzzTamper flips bits in a valid log: any change before the last line is
// caught, and a change in the last line that still verifies moves the head
// (so a witness holding the head sees it).
func FuzzTamper(f *testing.F) {
	seeds := fuzzseed.New(f)
	lines, hashes := buildLog(f, 6)
	valid := joinLines(lines)
	lastStart := len(valid) - len(lines[len(lines)-1]) - 1
	seeds.Add(uint(0), byte(1))
	seeds.Add(uint(len(valid)/2), byte(0x20))
	seeds.Add(uint(lastStart+20), byte(1))
	seeds.Add(uint(len(valid)-1), byte('\n'))
	f.Fuzz(func(t *testing.T, pos uint, xor byte) {
		if xor == 0 {
			return
		}
		data := bytes.Clone(valid)
		i := int(pos % uint(len(data)))
		data[i] ^= xor
		s, err := Verify(bytes.NewReader(data))
		if err != nil {
			return
		}
		if i < lastStart {
			t.Fatalf("flipping byte %d (before the last line) was not detected", i)
		}
		if s.Head == hashes[len(hashes)-1] {
			t.Fatal("a changed log verified with the same head")
		}
	})
}

// FuzzEncodeRoundTrip checks that whatever a caller puts in a Record, the
// writer's line verifies (it is canonical) or is rejected cleanly.
func FuzzEncodeRoundTrip(f *testing.F) {
	seeds := fuzzseed.New(f)
	seeds.Add("credential.use", "agent-7", "/v1/messages?x=<y>&z", "d\u2028\xff", uint16(443), int64(-1))
	seeds.Add("", "", "", "", uint16(0), int64(0))
	f.Fuzz(func(t *testing.T, typ, agent, path, detail string, port uint16, n int64) {
		var prev tlog.Hash
		prev[0] = 7
		r := Record{Type: typ, Agent: agent, Path: path, Detail: detail, Port: port, Bytes: n, Status: int(n)}
		b, err := encodeRecord(r, 1, prev, time.Unix(0, n).UTC())
		if err != nil {
			return
		}
		if bytes.IndexByte(b, '\n') >= 0 {
			t.Fatal("encoded line contains a newline")
		}
		c := chainAt(1, prev)
		if verr := c.add(b); verr != nil {
			t.Fatalf("writer output does not verify: %v\n%s", verr, b)
		}
	})
}

// FuzzParseRecord: ParseRecord never panics, and whatever it accepts is the
// canonical encoding of what it returned.
func FuzzParseRecord(f *testing.F) {
	seeds := fuzzseed.New(f)
	lines, _ := buildLog(f, 3)
	for _, ln := range lines {
		seeds.Add(ln)
	}
	seeds.Add([]byte(`{"v":1,"seq":0,"ts":"2026-11-25T18:00:03.123456Z","type":"startup","prev":""}`))
	seeds.Add([]byte(`{"v":1,"seq":1,"ts":"2026-11-25T18:00:03.123456Z","type":"x","prev":"AAAA"}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		r, err := ParseRecord(line)
		if err != nil {
			return
		}
		b, err := encodeRecord(r.Record, r.Seq, r.Prev, r.Time)
		if err != nil {
			t.Fatalf("accepted a record that does not encode: %v", err)
		}
		if !bytes.Equal(b, bytes.TrimSuffix(line, []byte{'\n'})) {
			t.Fatalf("accepted a non-canonical line:\n%s\n%s", line, b)
		}
		if r.Hash != tlog.RecordHash(b) {
			t.Fatal("hash is not the line's leaf hash")
		}
	})
}

// FuzzReadLines: the line reader passes on exactly the complete lines, and
// TailOffset agrees with it.
func FuzzReadLines(f *testing.F) {
	seeds := fuzzseed.New(f)
	seeds.Add([]byte("a\nbb\n"), 1)
	seeds.Add([]byte("a\n\npartial"), 2)
	seeds.Add([]byte(""), 0)
	seeds.Add([]byte("\n\n\n"), 5)
	f.Fuzz(func(t *testing.T, data []byte, n int) {
		if n < 0 || n > 1000 {
			return
		}
		path := filepath.Join(t.TempDir(), "log")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		var got [][]byte
		next, err := ReadLines(path, 0, func(line []byte) error {
			got = append(got, bytes.Clone(line))
			return nil
		})
		complete := data[:bytes.LastIndexByte(data, '\n')+1]
		tooLong := false
		for _, ln := range bytes.Split(complete, []byte{'\n'}) {
			tooLong = tooLong || len(ln) > maxLineBytes
		}
		if err != nil {
			if !tooLong && len(data)-len(complete) <= maxLineBytes {
				t.Fatalf("ReadLines: %v", err)
			}
			return
		}
		if next != int64(len(complete)) {
			t.Fatalf("next offset %d, want %d", next, len(complete))
		}
		if !bytes.Equal(joinLines(got), complete) {
			t.Fatal("lines passed on are not the complete lines")
		}
		off, err := TailOffset(path, n)
		if err != nil {
			t.Fatal(err)
		}
		var tail [][]byte
		if _, err := ReadLines(path, off, func(line []byte) error {
			tail = append(tail, bytes.Clone(line))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		want := got[max(len(got)-n, 0):]
		if len(tail) != len(want) || !bytes.Equal(joinLines(tail), joinLines(want)) {
			t.Fatalf("TailOffset(%d) gives %d lines, want %d", n, len(tail), len(want))
		}
	})
}

// FuzzProofText: UnmarshalText never panics, accepts only what MarshalText
// gives back unchanged, and CheckProof never panics on what it accepts.
func FuzzProofText(f *testing.F) {
	seeds := fuzzseed.New(f)
	s := fuzzSigner(f)
	path := filepath.Join(f.TempDir(), "audit.jsonl")
	writeLog(f, path, 10, WithSigner(s), WithCheckpointEvery(4, 0))
	p, err := Prove(bytes.NewReader(mustRead(f, path)), 3)
	if err != nil {
		f.Fatal(err)
	}
	text, _ := p.MarshalText()
	seeds.Add(text)
	seeds.Add([]byte(proofHeader + "\nseq 0\n"))
	f.Fuzz(func(t *testing.T, text []byte) {
		var q Proof
		if err := q.UnmarshalText(text); err != nil {
			return
		}
		again, err := q.MarshalText()
		if err != nil {
			t.Fatalf("decoded proof does not encode: %v", err)
		}
		if !bytes.Equal(again, text) {
			t.Fatalf("text form does not round-trip:\n%q\n%q", text, again)
		}
		_ = CheckProof(q, s.VerifierKey())
	})
}

// FuzzCheckpointNote: opening a checkpoint note, with or without a key,
// never panics, and what opens is in canonical form.
func FuzzCheckpointNote(f *testing.F) {
	seeds := fuzzseed.New(f)
	s := fuzzSigner(f)
	seeds.Add(forgeCheckpoint(f, s, 12, tlog.Hash{1, 2}))
	seeds.Add([]byte("o\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n\u2014 o AAAAAAAA\n"))
	keys, err := newKeyring([]string{s.VerifierKey()})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		for _, k := range []*keyring{nil, keys} {
			cp, err := k.open(msg)
			if err != nil {
				continue
			}
			if !strings.HasPrefix(string(msg), cp.text()) || cp.size == 0 {
				t.Fatalf("opened a non-canonical checkpoint %+v from %q", cp, msg)
			}
		}
	})
}

// FuzzFrontier: parseFrontier never panics and accepts only canonical
// encodings.
func FuzzFrontier(f *testing.F) {
	seeds := fuzzseed.New(f)
	var fr frontier
	for i := range 11 {
		fr.add(leafHash(i))
	}
	seeds.Add(fr.String())
	seeds.Add("1 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
	f.Fuzz(func(t *testing.T, s string) {
		got, err := parseFrontier(s)
		if err != nil {
			return
		}
		if got.String() != s {
			t.Fatalf("accepted a non-canonical frontier %q", s)
		}
	})
}
