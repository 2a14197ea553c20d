package audit

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/tlog"
)

// ErrNotSealed is returned (wrapped) by Prove when no checkpoint covers the
// record yet. Try again after the next checkpoint.
var ErrNotSealed = errors.New("record is not covered by a checkpoint yet")

// Proof shows that one record is in the log: an RFC 6962 inclusion proof of
// its leaf in the tree a signed checkpoint commits to. CheckProof checks it
// with nothing but the verifier key.
type Proof struct {
	Seq        uint64
	Record     []byte           // the record's line, without '\n'
	LeafHash   tlog.Hash        // tlog.RecordHash(Record)
	Checkpoint []byte           // signed checkpoint note of a tree of more than Seq records
	Hashes     tlog.RecordProof // inclusion proof of leaf Seq in that tree
}

// Prove reads a whole log from r (verifying it as Verify does without
// options) and returns the proof that record seq is in the tree of the
// latest checkpoint that covers it. It keeps 64 bytes per record from seq
// on in memory.
func Prove(r io.Reader, seq uint64) (Proof, error) {
	p, c := newProver(seq)
	if _, _, err := c.scan(r, false); err != nil {
		return Proof{}, err
	}
	return p.finish(c)
}

// ProveFiles is Prove over a run of segments, as VerifyFiles reads them.
func ProveFiles(paths []string, seq uint64) (Proof, error) {
	if len(paths) == 0 {
		return Proof{}, errors.New("proving audit record: no files")
	}
	p, c := newProver(seq)
	if err := c.scanFiles(paths); err != nil {
		return Proof{}, err
	}
	return p.finish(c)
}

// prover collects, while a chain verifies the log, what an inclusion proof
// for one record needs: the frontier just before it, the stored hashes from
// it on, and the latest checkpoint after it.
type prover struct {
	seq    uint64
	store  *hashStore
	line   []byte
	leaf   tlog.Hash
	cpSize uint64
	cpRoot tlog.Hash
	cpNote []byte
	err    error
}

func newProver(seq uint64) (*prover, *chain) {
	p := &prover{seq: seq}
	c := &chain{}
	c.hook = func(b []byte, h tlog.Hash, l *line) {
		n := c.next
		if p.err != nil || n < seq {
			return
		}
		if n == seq {
			p.store = newHashStore(&c.tree)
			p.line, p.leaf = bytes.Clone(b), h
		}
		if p.store == nil {
			return // the log starts after seq
		}
		if l.Type == TypeCheckpoint && n > seq {
			p.cpSize, p.cpRoot, p.cpNote = n, c.tree.root(), []byte(l.Detail)
		}
		p.err = p.store.add(int64(n), h)
	}
	return p, c
}

func (p *prover) finish(c *chain) (Proof, error) {
	switch {
	case p.err != nil:
		return Proof{}, fmt.Errorf("proving audit record %d: %w", p.seq, p.err)
	case p.line == nil && c.started && p.seq < c.first:
		return Proof{}, fmt.Errorf("proving audit record %d: the first retained record is %d", p.seq, c.first)
	case p.line == nil:
		return Proof{}, fmt.Errorf("proving audit record %d: the log has %d records", p.seq, c.next)
	case p.cpNote == nil:
		return Proof{}, fmt.Errorf("proving audit record %d: %w", p.seq, ErrNotSealed)
	case p.cpSize > math.MaxInt64:
		return Proof{}, fmt.Errorf("proving audit record %d: tree too large", p.seq)
	}
	hashes, err := tlog.ProveRecord(int64(p.cpSize), int64(p.seq), p.store)
	if err != nil {
		return Proof{}, fmt.Errorf("proving audit record %d: %w", p.seq, err)
	}
	if err := tlog.CheckRecord(hashes, int64(p.cpSize), p.cpRoot, int64(p.seq), p.leaf); err != nil {
		return Proof{}, fmt.Errorf("proving audit record %d: self-check failed: %w", p.seq, err)
	}
	return Proof{Seq: p.seq, Record: p.line, LeafHash: p.leaf, Checkpoint: p.cpNote, Hashes: hashes}, nil
}

// CheckProof checks p on its own: the checkpoint is signed by verifierKey
// with its origin, the record parses as seq p.Seq and hashes to p.LeafHash,
// and p.Hashes proves that leaf is in the checkpoint's tree.
func CheckProof(p Proof, verifierKey string) error {
	keys, err := newKeyring([]string{verifierKey})
	if err != nil || keys == nil {
		return errors.New("checking audit proof: bad verifier key")
	}
	cp, err := keys.open(p.Checkpoint)
	if err != nil {
		return fmt.Errorf("checking audit proof: %w", err)
	}
	rec, err := ParseRecord(p.Record)
	if err != nil {
		return fmt.Errorf("checking audit proof: %w", err)
	}
	switch {
	case rec.Seq != p.Seq:
		return fmt.Errorf("checking audit proof: the record has seq %d, the proof is for %d", rec.Seq, p.Seq)
	case rec.Hash != p.LeafHash:
		return errors.New("checking audit proof: the leaf hash is not the record's")
	case cp.size <= p.Seq:
		return fmt.Errorf("checking audit proof: the checkpoint covers %d records, not seq %d", cp.size, p.Seq)
	case cp.size > math.MaxInt64:
		return errors.New("checking audit proof: tree too large")
	}
	if err := tlog.CheckRecord(p.Hashes, int64(cp.size), cp.root, int64(p.Seq), p.LeafHash); err != nil {
		return fmt.Errorf("checking audit proof: %w", err)
	}
	return nil
}

// The text form of a Proof, for `wirken audit prove` and for handing a
// proof to someone else:
//
//	wirken-audit-proof v1
//	seq <seq>
//	leaf <base64 leaf hash>
//	record <the record's JSON line>
//	hashes <n>
//	<n lines, one base64 hash each>
//	checkpoint
//	<the signed checkpoint note, verbatim, to the end>
const proofHeader = "wirken-audit-proof v1"

// MarshalText encodes p in the text form above.
func (p Proof) MarshalText() ([]byte, error) {
	if bytes.ContainsAny(p.Record, "\r\n") {
		return nil, errors.New("encoding audit proof: record contains a line break")
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s\nseq %d\nleaf %s\nrecord %s\nhashes %d\n", proofHeader, p.Seq, encodeHash(p.LeafHash), p.Record, len(p.Hashes))
	for _, h := range p.Hashes {
		b.WriteString(encodeHash(h))
		b.WriteByte('\n')
	}
	b.WriteString("checkpoint\n")
	b.Write(p.Checkpoint)
	return b.Bytes(), nil
}

// maxProofHashes bounds a decoded proof: a tree of 2^64 leaves needs 64.
const maxProofHashes = 64

// UnmarshalText decodes the text form above. It checks the form only;
// CheckProof checks the content.
func (p *Proof) UnmarshalText(text []byte) error {
	var q Proof
	rest := string(text)
	next := func() (string, bool) {
		line, after, ok := strings.Cut(rest, "\n")
		rest = after
		return line, ok
	}
	field := func(name string) (string, error) {
		line, ok := next()
		v, found := strings.CutPrefix(line, name+" ")
		if !ok || !found {
			return "", fmt.Errorf("decoding audit proof: want a %q line", name)
		}
		return v, nil
	}
	if line, ok := next(); !ok || line != proofHeader {
		return errors.New("decoding audit proof: not a wirken audit proof (v1)")
	}
	v, err := field("seq")
	if err != nil {
		return err
	}
	if q.Seq, err = strconv.ParseUint(v, 10, 64); err != nil || strconv.FormatUint(q.Seq, 10) != v {
		return errors.New("decoding audit proof: bad seq")
	}
	if v, err = field("leaf"); err != nil {
		return err
	}
	if q.LeafHash, err = decodeHash(v); err != nil {
		return errors.New("decoding audit proof: bad leaf hash")
	}
	if v, err = field("record"); err != nil {
		return err
	}
	q.Record = []byte(v)
	if v, err = field("hashes"); err != nil {
		return err
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > maxProofHashes || strconv.Itoa(n) != v {
		return errors.New("decoding audit proof: bad hash count")
	}
	for range n {
		line, ok := next()
		h, err := decodeHash(line)
		if !ok || err != nil {
			return errors.New("decoding audit proof: bad proof hash")
		}
		q.Hashes = append(q.Hashes, h)
	}
	if line, ok := next(); !ok || line != "checkpoint" {
		return errors.New("decoding audit proof: want a checkpoint line")
	}
	if rest == "" {
		return errors.New("decoding audit proof: checkpoint is empty")
	}
	q.Checkpoint = []byte(rest)
	*p = q
	return nil
}
