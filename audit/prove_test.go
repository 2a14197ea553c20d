package audit

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/tlog"
)

// TestProveEveryRecord proves every sealed record of a signed log against
// the latest checkpoint covering it and checks each proof independently,
// also after a round trip through the text form.
func TestProveEveryRecord(t *testing.T) {
	lines, s := signedLog(t) // checkpoints at 4, 9, 14, 19, 24 (the last line)
	data := joinLines(lines)
	last := checkpointNote(t, lines[24])
	for seq := range uint64(24) {
		p, err := Prove(bytes.NewReader(data), seq)
		if err != nil {
			t.Fatalf("seq %d: %v", seq, err)
		}
		if !bytes.Equal(p.Record, lines[seq]) || p.LeafHash != tlog.RecordHash(lines[seq]) || p.Seq != seq {
			t.Fatalf("seq %d: proof is for another record", seq)
		}
		if !bytes.Equal(p.Checkpoint, last) {
			t.Fatalf("seq %d: not proved against the latest checkpoint", seq)
		}
		if err := CheckProof(p, s.VerifierKey()); err != nil {
			t.Fatalf("seq %d: %v", seq, err)
		}
		text, err := p.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		var q Proof
		if err := q.UnmarshalText(text); err != nil {
			t.Fatalf("seq %d: %v\n%s", seq, err, text)
		}
		if err := CheckProof(q, s.VerifierKey()); err != nil {
			t.Fatalf("seq %d after the text round trip: %v", seq, err)
		}
		again, _ := q.MarshalText()
		if !bytes.Equal(again, text) {
			t.Fatalf("seq %d: the text form does not round-trip", seq)
		}
	}
	// The last line is the newest checkpoint itself: nothing covers it yet.
	if _, err := Prove(bytes.NewReader(data), 24); !errors.Is(err, ErrNotSealed) {
		t.Fatalf("Prove(24) = %v, want ErrNotSealed", err)
	}
	if _, err := Prove(bytes.NewReader(data), 25); err == nil || errors.Is(err, ErrNotSealed) {
		t.Fatalf("Prove(25) = %v, want an out-of-range error", err)
	}
	// A log that does not verify proves nothing.
	bad := cloneLines(lines)
	bad[3] = replaceIn(t, bad[3], "agent-7", "agent-8")
	var verr *VerifyError
	if _, err := Prove(bytes.NewReader(joinLines(bad)), 1); !errors.As(err, &verr) || verr.Seq != 4 {
		t.Fatalf("Prove on a tampered log = %v, want the VerifyError at seq 4", err)
	}
}

func TestProveTextForm(t *testing.T) {
	lines, _ := signedLog(t)
	p, err := Prove(bytes.NewReader(joinLines(lines)), 6)
	if err != nil {
		t.Fatal(err)
	}
	text, _ := p.MarshalText()
	want := proofHeader + "\nseq 6\nleaf " + encodeHash(p.LeafHash) + "\nrecord " + string(lines[6]) + "\nhashes "
	if !strings.HasPrefix(string(text), want) || !strings.HasSuffix(string(text), string(p.Checkpoint)) {
		t.Fatalf("text form:\n%s", text)
	}
	bad := map[string]string{
		"empty":             "",
		"other header":      strings.Replace(string(text), "v1", "v2", 1),
		"seq not a number":  strings.Replace(string(text), "seq 6", "seq six", 1),
		"seq leading zero":  strings.Replace(string(text), "seq 6", "seq 06", 1),
		"bad leaf":          strings.Replace(string(text), "leaf ", "leaf x", 1),
		"missing record":    strings.Replace(string(text), "record ", "recrd ", 1),
		"too many hashes":   strings.Replace(string(text), "hashes ", "hashes 9", 1),
		"hash count 65":     strings.Replace(string(text), "hashes 5", "hashes 65", 1),
		"no checkpoint":     string(text[:bytes.Index(text, []byte("checkpoint\n"))]),
		"empty checkpoint":  string(text[:bytes.Index(text, []byte("checkpoint\n"))+len("checkpoint\n")]),
		"CRLF line endings": strings.ReplaceAll(string(text), "\n", "\r\n"),
	}
	for name, in := range bad {
		t.Run(name, func(t *testing.T) {
			var q Proof
			if err := q.UnmarshalText([]byte(in)); err == nil {
				t.Fatalf("accepted:\n%s", in)
			}
		})
	}
	if _, err := (Proof{Record: []byte("a\nb")}).MarshalText(); err == nil {
		t.Fatal("MarshalText accepted a record with a newline")
	}
}

// TestCheckProofRejects: every part of a proof matters.
func TestCheckProofRejects(t *testing.T) {
	lines, s := signedLog(t)
	other := testSigner(t, testOrigin)
	good, err := Prove(bytes.NewReader(joinLines(lines)), 6)
	if err != nil {
		t.Fatal(err)
	}
	cp := mustCheckpoint(t, lines[24])
	mod := func(f func(p *Proof)) Proof {
		p := good
		p.Record = bytes.Clone(good.Record)
		p.Hashes = append(tlog.RecordProof(nil), good.Hashes...)
		p.Checkpoint = bytes.Clone(good.Checkpoint)
		f(&p)
		return p
	}
	tests := map[string]struct {
		p   Proof
		key string
	}{
		"another verifier key": {good, other.VerifierKey()},
		"not a key":            {good, "nope"},
		"record changed":       {mod(func(p *Proof) { p.Record = replaceIn(t, p.Record, "agent-7", "agent-8") }), s.VerifierKey()},
		"record changed with its hash": {mod(func(p *Proof) {
			p.Record = replaceIn(t, p.Record, "agent-7", "agent-8")
			p.LeafHash = tlog.RecordHash(p.Record)
		}), s.VerifierKey()},
		"leaf hash changed":               {mod(func(p *Proof) { p.LeafHash[0] ^= 1 }), s.VerifierKey()},
		"seq changed":                     {mod(func(p *Proof) { p.Seq = 7 }), s.VerifierKey()},
		"another record of the log":       {mod(func(p *Proof) { p.Record = lines[7]; p.LeafHash = tlog.RecordHash(lines[7]); p.Seq = 7 }), s.VerifierKey()},
		"a proof hash changed":            {mod(func(p *Proof) { p.Hashes[0][0] ^= 1 }), s.VerifierKey()},
		"a proof hash dropped":            {mod(func(p *Proof) { p.Hashes = p.Hashes[1:] }), s.VerifierKey()},
		"checkpoint signed by another":    {mod(func(p *Proof) { p.Checkpoint = forgeCheckpoint(t, other, cp.size, cp.root) }), s.VerifierKey()},
		"checkpoint of another root":      {mod(func(p *Proof) { p.Checkpoint = forgeCheckpoint(t, s, cp.size, tlog.Hash{3}) }), s.VerifierKey()},
		"checkpoint too small for seq":    {mod(func(p *Proof) { p.Checkpoint = forgeCheckpoint(t, s, 6, cp.root) }), s.VerifierKey()},
		"record not canonical":            {mod(func(p *Proof) { p.Record = append(p.Record, ' ') }), s.VerifierKey()},
		"checkpoint under another origin": {mod(func(p *Proof) { p.Checkpoint = forgeCheckpoint(t, testSigner(t, "x"), cp.size, cp.root) }), s.VerifierKey()},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if err := CheckProof(tc.p, tc.key); err == nil {
				t.Fatal("CheckProof accepted it")
			}
		})
	}
}

// TestProveAcrossSegments: a record in a retained segment is proved against
// the latest checkpoint, in a later segment, without the earlier segments.
func TestProveAcrossSegments(t *testing.T) {
	s := testSigner(t, testOrigin)
	path, entries := segmentedLog(t, 100, WithSigner(s), WithCheckpointEvery(8, 0), WithRetention(3))
	paths, err := SegmentPaths(path)
	if err != nil {
		t.Fatal(err)
	}
	sum, err := VerifyFiles(paths)
	if err != nil {
		t.Fatal(err)
	}
	proved := 0
	for _, e := range entries {
		p, err := ProveFiles(paths, e.Seq)
		if e.Seq < sum.First {
			if err == nil {
				t.Fatalf("proved seq %d, before the first retained %d", e.Seq, sum.First)
			}
			continue
		}
		if err != nil {
			t.Fatalf("seq %d: %v", e.Seq, err)
		}
		if p.LeafHash != e.Hash || !bytes.Equal(p.Checkpoint, sum.LastCheckpointNote) {
			t.Fatalf("seq %d: wrong leaf or checkpoint", e.Seq)
		}
		if err := CheckProof(p, s.VerifierKey()); err != nil {
			t.Fatalf("seq %d: %v", e.Seq, err)
		}
		proved++
	}
	if proved == 0 || proved == len(entries) {
		t.Fatalf("proved %d of %d records; the test needs some before and after the retained run", proved, len(entries))
	}
	if _, err := ProveFiles(nil, 0); err == nil {
		t.Fatal("ProveFiles with no files succeeded")
	}
}
