package audit

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/tlog"
)

// signedLog writes 20 request records with a checkpoint every 4 and returns
// its lines (checkpoints at 4, 9, 14, 19 and 24, the last line) and signer.
func signedLog(t *testing.T) ([][]byte, *Signer) {
	t.Helper()
	s := testSigner(t, testOrigin)
	path := tempLogPath(t)
	writeLog(t, path, 20, WithSigner(s), WithCheckpointEvery(4, 0))
	if got, want := indexesOf(lineTypes(t, path), TypeCheckpoint), []int{4, 9, 14, 19, 24}; !slices.Equal(got, want) {
		t.Fatalf("checkpoints at %v, want %v", got, want)
	}
	return readLines(t, path), s
}

func checkpointNote(t testing.TB, line []byte) []byte {
	t.Helper()
	r := mustParse(t, line)
	if r.Type != TypeCheckpoint {
		t.Fatalf("line %d is a %s, not a checkpoint", r.Seq, r.Type)
	}
	return []byte(r.Detail)
}

// TestTamperTable: each attack on a signed log is detected at the right
// seq, with the right reason.
func TestTamperTable(t *testing.T) {
	base, signer := signedLog(t)
	other := testSigner(t, testOrigin) // same origin, another key
	key := WithVerifierKey(signer.VerifierKey())
	lastNote := checkpointNote(t, base[24])
	setAgent := func(i int, agent string) func(int, *LogRecord) {
		return func(j int, r *LogRecord) {
			if j == i {
				r.Agent = agent
			}
		}
	}
	tests := []struct {
		name   string
		tamper func(t *testing.T, l [][]byte) [][]byte
		opts   []VerifyOption
		torn   bool // the file does not end with '\n'
		seq    uint64
		reason string
		is     error
	}{
		{
			name: "flip a byte in a record",
			tamper: func(t *testing.T, l [][]byte) [][]byte {
				l[6] = replaceIn(t, l[6], "agent-7", "agent-8")
				return l
			},
			seq: 7, reason: "prev does not match",
		},
		{
			name: "flip a byte and re-chain everything after it",
			tamper: func(t *testing.T, l [][]byte) [][]byte {
				return rechainFrom(t, l, 6, setAgent(6, "agent-8"))
			},
			seq: 9, reason: "checkpoint root is not the tree hash of records 0..8",
		},
		{
			name: "flip a byte and re-chain, checked without the key",
			tamper: func(t *testing.T, l [][]byte) [][]byte {
				return rechainFrom(t, l, 6, setAgent(6, "agent-8"))
			},
			opts: []VerifyOption{},
			seq:  9, reason: "checkpoint root is not the tree hash of records 0..8",
		},
		{
			name:   "delete a record",
			tamper: func(t *testing.T, l [][]byte) [][]byte { return slices.Delete(l, 6, 7) },
			seq:    6, reason: "seq is 7, want 6",
		},
		{
			name: "delete a record and re-chain",
			tamper: func(t *testing.T, l [][]byte) [][]byte {
				return rechainFrom(t, slices.Delete(l, 6, 7), 6, nil)
			},
			seq: 8, reason: "checkpoint size is 9, want its seq 8",
		},
		{
			name: "reorder two records",
			tamper: func(t *testing.T, l [][]byte) [][]byte {
				l[6], l[7] = l[7], l[6]
				return l
			},
			seq: 6, reason: "seq is 7, want 6",
		},
		{
			name: "reorder two records and re-chain",
			tamper: func(t *testing.T, l [][]byte) [][]byte {
				l[6] = replaceIn(t, l[6], "agent-7", "agent-6") // make them differ
				l[6], l[7] = l[7], l[6]
				return rechainFrom(t, l, 6, nil)
			},
			seq: 9, reason: "checkpoint root is not the tree hash of records 0..8",
		},
		{
			name: "insert a copy of a record",
			tamper: func(t *testing.T, l [][]byte) [][]byte {
				return slices.Insert(l, 7, bytes.Clone(l[6]))
			},
			seq: 7, reason: "seq is 6, want 7",
		},
		{
			name: "insert a forged record and re-chain",
			tamper: func(t *testing.T, l [][]byte) [][]byte {
				l = slices.Insert(l, 6, bytes.Clone(l[6]))
				return rechainFrom(t, l, 6, setAgent(6, "forged"))
			},
			seq: 10, reason: "checkpoint size is 9, want its seq 10",
		},
		{
			name: "truncate in the middle of a line",
			tamper: func(t *testing.T, l [][]byte) [][]byte {
				l[12] = l[12][:len(l[12])/2]
				return l[:13]
			},
			torn: true,
			seq:  12, reason: "missing trailing newline",
		},
		{
			name: "edit a checkpoint's size",
			tamper: func(t *testing.T, l [][]byte) [][]byte {
				return rechainFrom(t, l, 9, func(i int, r *LogRecord) {
					if i == 9 {
						r.Detail = strings.Replace(r.Detail, "\n9\n", "\n8\n", 1)
					}
				})
			},
			seq: 9, reason: "checkpoint signature does not verify",
		},
		{
			name: "edit a checkpoint's size, checked without the key",
			tamper: func(t *testing.T, l [][]byte) [][]byte {
				return rechainFrom(t, l, 9, func(i int, r *LogRecord) {
					if i == 9 {
						r.Detail = strings.Replace(r.Detail, "\n9\n", "\n8\n", 1)
					}
				})
			},
			opts: []VerifyOption{},
			seq:  9, reason: "checkpoint size is 8, want its seq 9",
		},
		{
			name: "edit a checkpoint's root",
			tamper: func(t *testing.T, l [][]byte) [][]byte {
				return rechainFrom(t, l, 14, func(i int, r *LogRecord) {
					if i == 14 {
						cp, err := parseCheckpointText(r.Detail[:strings.Index(r.Detail, "\n\n")+1])
						if err != nil {
							t.Fatal(err)
						}
						cp.root[0] ^= 1
						r.Detail = cp.text() + r.Detail[strings.Index(r.Detail, "\n\n")+1:]
					}
				})
			},
			seq: 14, reason: "checkpoint signature does not verify",
		},
		{
			name: "forge a checkpoint with another key",
			tamper: func(t *testing.T, l [][]byte) [][]byte {
				cp := mustCheckpoint(t, l[14])
				return rechainFrom(t, l, 14, func(i int, r *LogRecord) {
					if i == 14 {
						r.Detail = string(forgeCheckpoint(t, other, cp.size, cp.root))
					}
				})
			},
			seq: 14, reason: "not signed by a trusted key",
		},
		{
			name: "rewrite and re-sign everything with another key",
			tamper: func(t *testing.T, l [][]byte) [][]byte {
				return resign(t, rechainFrom(t, l, 6, setAgent(6, "agent-8")), 6, other)
			},
			seq: 9, reason: "not signed by a trusted key",
		},
		{
			name: "rewrite and re-sign everything with the stolen key, against a trusted checkpoint",
			tamper: func(t *testing.T, l [][]byte) [][]byte {
				return resign(t, rechainFrom(t, l, 6, setAgent(6, "agent-8")), 6, signer)
			},
			opts: []VerifyOption{key, WithTrustedCheckpoint(lastNote)},
			seq:  23, reason: "records 0..23 do not hash to the trusted checkpoint's root", is: ErrRewritten,
		},
		{
			name:   "roll back to an older log, against a trusted checkpoint",
			tamper: func(t *testing.T, l [][]byte) [][]byte { return l[:15] },
			opts:   []VerifyOption{key, WithTrustedCheckpoint(lastNote)},
			seq:    15, reason: "rolled back", is: ErrRolledBack,
		},
		{
			name: "a checkpoint carrying caller fields",
			tamper: func(t *testing.T, l [][]byte) [][]byte {
				return rechainFrom(t, l, 9, setAgent(9, "x"))
			},
			seq: 9, reason: "carries fields other than detail",
		},
		{
			name: "a checkpoint that is not a note",
			tamper: func(t *testing.T, l [][]byte) [][]byte {
				return rechainFrom(t, l, 9, func(i int, r *LogRecord) {
					if i == 9 {
						r.Detail = "not a note"
					}
				})
			},
			seq: 9, reason: "not a well-formed signed note",
		},
		{
			name: "a checkpoint replayed later",
			tamper: func(t *testing.T, l [][]byte) [][]byte {
				l = append(l, bytes.Clone(l[24]))
				return rechainFrom(t, l, 25, nil)
			},
			seq: 25, reason: "checkpoint size is 24, want its seq 25",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			lines := tc.tamper(t, cloneLines(base))
			opts := tc.opts
			if opts == nil {
				opts = []VerifyOption{key}
			}
			data := joinLines(lines)
			if tc.torn {
				data = data[:len(data)-1]
			}
			_, err := Verify(bytes.NewReader(data), opts...)
			var verr *VerifyError
			if !errors.As(err, &verr) {
				t.Fatalf("Verify = %v, want a *VerifyError", err)
			}
			if verr.Seq != tc.seq {
				t.Fatalf("error at seq %d, want %d: %v", verr.Seq, tc.seq, verr)
			}
			if !strings.Contains(verr.Reason, tc.reason) {
				t.Fatalf("reason %q, want it to mention %q", verr.Reason, tc.reason)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Fatalf("error %v is not %v", err, tc.is)
			}
			if tc.is == nil && (errors.Is(err, ErrRolledBack) || errors.Is(err, ErrRewritten)) {
				t.Fatalf("error %v wrongly claims a rollback or rewrite", err)
			}
		})
	}
}

func mustCheckpoint(t testing.TB, line []byte) checkpoint {
	t.Helper()
	cp, err := (*keyring)(nil).open(checkpointNote(t, line))
	if err != nil {
		t.Fatal(err)
	}
	return cp
}

// resign recomputes, from line from on, every checkpoint over the tree as
// it now is and signs it with s, re-chaining as it goes: what an attacker
// holding a key would do after rewriting the log.
func resign(t testing.TB, lines [][]byte, from int, s *Signer) [][]byte {
	t.Helper()
	var f frontier
	for i := range from {
		f.add(tlog.RecordHash(lines[i]))
	}
	out := cloneLines(lines[:from])
	prev := tlog.Hash{}
	if from > 0 {
		prev = tlog.RecordHash(lines[from-1])
	}
	for i := from; i < len(lines); i++ {
		rec := mustParse(t, lines[i])
		if rec.Type == TypeCheckpoint {
			rec.Detail = string(forgeCheckpoint(t, s, uint64(i), f.root()))
		}
		b, err := encodeRecord(rec.Record, uint64(i), prev, rec.Time)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
		prev = tlog.RecordHash(b)
		f.add(prev)
	}
	return out
}

// TestStolenKeyRewriteVerifiesLocally documents the limit of a local check:
// a rewrite re-signed with the stolen key verifies, which is why a trusted
// checkpoint kept elsewhere matters (see the table).
func TestStolenKeyRewriteVerifiesLocally(t *testing.T) {
	base, signer := signedLog(t)
	forged := resign(t, rechainFrom(t, base, 6, func(i int, r *LogRecord) {
		if i == 6 {
			r.Agent = "agent-8"
		}
	}), 6, signer)
	if _, err := Verify(bytes.NewReader(joinLines(forged)), WithVerifierKey(signer.VerifierKey())); err != nil {
		t.Fatalf("the re-signed rewrite does not verify (the test's forgery is wrong): %v", err)
	}
	// An older trusted checkpoint, from before the rewritten record, still
	// matches; one from after does not.
	early := WithTrustedCheckpoint(checkpointNote(t, base[4]))
	if _, err := Verify(bytes.NewReader(joinLines(forged)), early); err != nil {
		t.Fatalf("a trusted checkpoint before the rewrite: %v", err)
	}
	late := WithTrustedCheckpoint(checkpointNote(t, base[9]))
	_, err := Verify(bytes.NewReader(joinLines(forged)), late)
	var verr *VerifyError
	if !errors.As(err, &verr) || !errors.Is(err, ErrRewritten) || verr.Seq != 8 {
		t.Fatalf("Verify = %v, want ErrRewritten at seq 8", err)
	}
}

// TestTruncatingTheUnsealedTailIsNotDetectedLocally documents §4.4: records
// after the last checkpoint can be cut off without a local trace; the
// summary reports them so the operator sees the window.
func TestTruncatingTheUnsealedTailIsNotDetectedLocally(t *testing.T) {
	s := testSigner(t, testOrigin)
	path := tempLogPath(t)
	logger, _ := testLogger()
	l, err := Open(path, logger, WithSigner(s), WithCheckpointEvery(4, 0))
	if err != nil {
		t.Fatal(err)
	}
	for range 6 { // r r r r C r r
		mustAppend(t, l, Record{Type: TypeRequestAllow})
	}
	lines := readLines(t, path)
	_ = l.Close() // seals them; the copy in lines is from before
	sum, err := Verify(bytes.NewReader(joinLines(lines)), WithVerifierKey(s.VerifierKey()))
	if err != nil {
		t.Fatal(err)
	}
	if sum.Unsealed != 2 || sum.LastCheckpoint != 4 {
		t.Fatalf("summary %+v, want 2 unsealed after checkpoint 4", sum)
	}
	cut, err := Verify(bytes.NewReader(joinLines(lines[:5])), WithVerifierKey(s.VerifierKey()),
		WithTrustedCheckpoint(checkpointNote(t, lines[4])))
	if err != nil {
		t.Fatalf("cutting the unsealed tail was detected after all: %v", err)
	}
	if cut.Unsealed != 0 || cut.Records != 5 {
		t.Fatalf("summary %+v", cut)
	}
}

// TestTrustedCheckpointErrors: a trusted checkpoint that is itself bad is a
// usage error, not tampering.
func TestTrustedCheckpointErrors(t *testing.T) {
	base, signer := signedLog(t)
	other := testSigner(t, "elsewhere")
	good := checkpointNote(t, base[9])
	cp := mustCheckpoint(t, base[9])
	data := joinLines(base)
	tests := map[string][]VerifyOption{
		"not a note":                {WithTrustedCheckpoint([]byte("garbage"))},
		"signed by another key":     {WithVerifierKey(signer.VerifierKey()), WithTrustedCheckpoint(forgeCheckpoint(t, other, cp.size, cp.root))},
		"two disagreeing":           {WithTrustedCheckpoint(good), WithTrustedCheckpoint(forgeCheckpoint(t, signer, cp.size, tlog.Hash{1}))},
		"bad verifier key":          {WithVerifierKey("not-a-key")},
		"empty verifier key":        {WithVerifierKey("")},
		"checkpoint of empty tree":  {WithTrustedCheckpoint(forgeCheckpoint(t, signer, 0, tlog.Hash{}))},
		"checkpoint with extension": {WithTrustedCheckpoint(signExtension(t, signer))},
	}
	for name, opts := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := Verify(bytes.NewReader(data), opts...)
			var verr *VerifyError
			if err == nil || errors.As(err, &verr) {
				t.Fatalf("Verify = %v, want a plain error", err)
			}
		})
	}
	// The same good checkpoint twice, and one with the key: fine.
	if _, err := Verify(bytes.NewReader(data), WithVerifierKey(signer.VerifierKey()),
		WithTrustedCheckpoint(good), WithTrustedCheckpoint(good)); err != nil {
		t.Fatal(err)
	}
	// Surrounding space in a key read from a file is ignored.
	if _, err := Verify(bytes.NewReader(data), WithVerifierKey(" "+signer.VerifierKey()+"\n")); err != nil {
		t.Fatal(err)
	}
}

func signExtension(t testing.TB, s *Signer) []byte {
	t.Helper()
	cp := checkpoint{origin: s.origin, size: 3, root: tlog.Hash{2}}
	n, err := noteSign(cp.text()+"extension line\n", s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestVerifyAcceptsSeveralKeys: across a key change, each checkpoint must
// verify under one of the given keys.
func TestVerifyAcceptsSeveralKeys(t *testing.T) {
	s1 := testSigner(t, testOrigin)
	s2 := testSigner(t, "wirken.test/host-1/audit-2")
	path := tempLogPath(t)
	writeLog(t, path, 3, WithSigner(s1), WithCheckpointEvery(2, 0))
	writeLog(t, path, 3, WithSigner(s2), WithCheckpointEvery(2, 0))
	data := mustRead(t, path)
	if _, err := Verify(bytes.NewReader(data), WithVerifierKey(s1.VerifierKey()), WithVerifierKey(s2.VerifierKey())); err != nil {
		t.Fatal(err)
	}
	// Session 1: r r C r C; session 2: r r C r C. The first checkpoint
	// under the second key is at seq 7.
	if got := indexesOf(lineTypesOf(t, data), TypeCheckpoint); !slices.Equal(got, []int{2, 4, 7, 9}) {
		t.Fatalf("checkpoints at %v", got)
	}
	_, err := Verify(bytes.NewReader(data), WithVerifierKey(s1.VerifierKey()))
	var verr *VerifyError
	if !errors.As(err, &verr) || verr.Seq != 7 || !strings.Contains(verr.Reason, "not signed by a trusted key") {
		t.Fatalf("Verify with the first key only = %v, want an error at seq 7", err)
	}
}

func lineTypesOf(t testing.TB, data []byte) []string {
	t.Helper()
	var out []string
	for _, ln := range bytes.Split(bytes.TrimSuffix(data, []byte{'\n'}), []byte{'\n'}) {
		out = append(out, mustParse(t, ln).Type)
	}
	return out
}
