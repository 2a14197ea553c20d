package audit

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"

	"golang.org/x/mod/sumdb/tlog"
)

// Summary describes a log (or a run of segments) that verified.
type Summary struct {
	// First is the seq of the first record read: 0, or the seq of the
	// segment record that a run of retained segments starts with.
	First uint64
	// Records is the size of the log: the seq the next record will get.
	// Records before First were in segments that are no longer kept.
	Records uint64
	// Head is the leaf hash of the last record (zero for an empty log).
	Head tlog.Hash
	// Checkpoints is the number of checkpoint records read.
	Checkpoints int
	// LastCheckpoint is the tree size (== seq) of the last checkpoint, 0 if
	// there is none, and LastCheckpointNote its signed note: keep a copy
	// elsewhere and pass it to WithTrustedCheckpoint later to detect a
	// rollback or rewrite.
	LastCheckpoint     uint64
	LastCheckpointNote []byte
	// Unsealed counts the records after the last checkpoint (all records
	// read if there is none). No signature covers them yet, so they could
	// be cut off without a trace: a warning to show, not an error.
	Unsealed uint64
	// Recovered counts "recovered" records: torn tails the writer cut off
	// after a crash, or a missing active segment it continued from.
	Recovered int
}

// Sentinel errors a *VerifyError may wrap (test with errors.Is).
var (
	// ErrRolledBack: the log is shorter than a trusted checkpoint.
	ErrRolledBack = errors.New("log rolled back")
	// ErrRewritten: the log's tree at a trusted checkpoint's size has
	// another root.
	ErrRewritten = errors.New("log rewritten")
)

// ErrTrustedCheckpointTooOld is returned (wrapped, not as a *VerifyError)
// when a trusted checkpoint covers fewer records than the first retained
// record: the records it covers are gone, so it cannot be checked.
var ErrTrustedCheckpointTooOld = errors.New("trusted checkpoint predates the retained log")

// VerifyError names the first place a log stops being valid. Path is the
// file (VerifyFiles, ProveFiles; empty for a reader), Line the 1-based line
// in it, and Seq the seq that line should carry: every record before it
// verified, so it is the first bad seq. For ErrRewritten, Seq is the last
// record of the tree that differs. Reason never quotes the log.
type VerifyError struct {
	Path   string
	Line   int
	Seq    uint64
	Reason string
	Err    error // ErrRolledBack, ErrRewritten or nil
}

func (e *VerifyError) Error() string {
	s := fmt.Sprintf("line %d (seq %d): %s", e.Line, e.Seq, e.Reason)
	if e.Path != "" {
		s = e.Path + ": " + s
	}
	return s
}

// Unwrap returns Err.
func (e *VerifyError) Unwrap() error { return e.Err }

// VerifyOption configures Verify, VerifyFiles.
type VerifyOption func(*verifyConfig)

type verifyConfig struct {
	keys    []string
	trusted [][]byte
	err     error
}

// WithVerifierKey makes Verify check every checkpoint's Ed25519 signature
// against key (a note verifier key, "name+hash+base64", as written by
// WriteVerifierKey; surrounding space is ignored) and that its origin is
// the key's name. A checkpoint signed by any other key is tampering. Give
// the option once per key to accept several (across a key change).
func WithVerifierKey(key string) VerifyOption {
	return func(c *verifyConfig) {
		if key == "" && c.err == nil {
			c.err = errors.New("verifier key is empty")
		}
		c.keys = append(c.keys, key)
	}
}

// WithTrustedCheckpoint gives Verify a checkpoint note saved earlier
// somewhere the host cannot rewrite. The log must contain its tree as a
// prefix: a log with fewer records fails with ErrRolledBack, one whose tree
// of that size has another root with ErrRewritten. With WithVerifierKey the
// note's signature is checked too. May be given more than once.
func WithTrustedCheckpoint(note []byte) VerifyOption {
	return func(c *verifyConfig) { c.trusted = append(c.trusted, note) }
}

// Verify reads a whole log from r and checks that every line is strict,
// canonical JSON with v == 1, that seq is contiguous, that prev is the leaf
// hash of the previous line, that every checkpoint is a well-formed note
// whose size is its own seq and whose root is the tree hash of the records
// before it (and, with WithVerifierKey, is signed by that key), that every
// segment record carries the tree so far, and that the log ends with a
// newline. The log may start at seq 0 or, for a run of retained segments,
// with a segment record. It returns a Summary, a *VerifyError for the first
// bad line, or another error for bad options or a failed read.
func Verify(r io.Reader, opts ...VerifyOption) (Summary, error) {
	c, err := newVerifyChain(opts)
	if err != nil {
		return Summary{}, err
	}
	if _, _, err := c.scan(r, false); err != nil {
		return Summary{}, err
	}
	if err := c.finish(); err != nil {
		return Summary{}, err
	}
	return c.summary(), nil
}

// VerifyFiles verifies a run of segments in order (as SegmentPaths lists
// them), as Verify does one log, carrying the chain and the tree across
// files: every file after the first must start with a segment record that
// continues the one before. The first file may be any retained segment.
func VerifyFiles(paths []string, opts ...VerifyOption) (Summary, error) {
	if len(paths) == 0 {
		return Summary{}, errors.New("verifying audit log: no files")
	}
	c, err := newVerifyChain(opts)
	if err != nil {
		return Summary{}, err
	}
	if err := c.scanFiles(paths); err != nil {
		return Summary{}, err
	}
	if err := c.finish(); err != nil {
		return Summary{}, err
	}
	return c.summary(), nil
}

func newVerifyChain(opts []VerifyOption) (*chain, error) {
	var cfg verifyConfig
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.err != nil {
		return nil, fmt.Errorf("verifying audit log: %w", cfg.err)
	}
	keys, err := newKeyring(cfg.keys)
	if err != nil {
		return nil, fmt.Errorf("verifying audit log: %w", err)
	}
	c := &chain{keys: keys}
	for _, n := range cfg.trusted {
		cp, err := keys.open(n)
		if err != nil {
			return nil, fmt.Errorf("verifying audit log: trusted checkpoint: %w", err)
		}
		if c.trusted == nil {
			c.trusted = make(map[uint64]tlog.Hash)
			c.trustedMin = cp.size
		}
		if root, ok := c.trusted[cp.size]; ok && root != cp.root {
			return nil, errors.New("verifying audit log: two trusted checkpoints of the same size disagree")
		}
		c.trusted[cp.size] = cp.root
		c.trustedMin = min(c.trustedMin, cp.size)
		c.trustedMax = max(c.trustedMax, cp.size)
	}
	return c, nil
}

// tip is the end of a log: what the next record chains to.
type tip struct {
	next    uint64    // seq of the next record
	head    tlog.Hash // leaf hash of record next-1
	tree    frontier  // tree of records [0, next)
	sinceCP uint64    // records after the last checkpoint
}

// push adds line b (without '\n') as the next leaf and returns its hash.
func (t *tip) push(b []byte) tlog.Hash {
	h := tlog.RecordHash(b)
	t.head = h
	t.tree.add(h)
	t.next++
	return h
}

func (t *tip) copyFrom(o *tip) {
	t.next, t.head, t.sinceCP = o.next, o.head, o.sinceCP
	t.tree.copyFrom(&o.tree)
}

// chain checks lines one after another.
type chain struct {
	tip
	started      bool   // a first line has been seen
	first        uint64 // seq of the first line
	path         string // current file, for errors
	line         int    // lines read from the current file
	wantSegStart bool   // the current file must start with a segment record

	keys      *keyring // nil: checkpoint signatures are not checked
	cps       int
	lastCP    uint64
	lastNote  string
	recovered int

	trusted                map[uint64]tlog.Hash // trusted checkpoints: size -> root
	trustedMin, trustedMax uint64

	// hook, if set, sees every accepted line before it joins the tree.
	hook func(b []byte, h tlog.Hash, l *line)

	// quick (the writer's scan at Open, see scanForAppend): a line that is not the log's own
	// record is only hashed into the tree; the next checkpoint's root covers it. mark is the
	// chain just after the last checkpoint, where the full check of the tail starts. Of a quick
	// chain only the tip is complete (recovered, cps and the rest count decoded lines only): it
	// is for Open, never for a Verify summary.
	quick    bool
	quickCP  bool // the line just added was a checkpoint (for scan to take a mark)
	mark     *chain
	markedAt int64 // offset just past that checkpoint line
}

// ownRecordMarks are the bytes by which the canonical encoding of a checkpoint or segment
// record is told apart without decoding it: inside a JSON string of a canonical line a quote is
// always escaped, so only the type field itself can hold them unescaped. A line that is not
// canonical may hide them (or fake them); it is then only hashed, and the signed root of the
// next checkpoint does not match.
var ownRecordMarks = [][]byte{[]byte(`"type":"` + TypeCheckpoint + `"`), []byte(`"type":"` + TypeSegment + `"`)}

func ownRecord(b []byte) bool {
	for _, m := range ownRecordMarks {
		if bytes.Contains(b, m) {
			return true
		}
	}
	return false
}

// snapshot copies the chain's state (for a mark).
func (c *chain) snapshot() *chain {
	m := *c
	m.mark, m.tree = nil, frontier{}
	m.tree.copyFrom(&c.tree)
	return &m
}

// scanForAppend is the writer's scan at Open. For a log this writer signs (verifierKey, its
// signer's key), a checkpoint follows at least every few hundred records and carries, signed,
// the Merkle root of everything before it. So the quick pass hashes the lines before a
// checkpoint into the tree without decoding them, checks each checkpoint in full (its root
// against the tree), and marks the chain after the last one, whose signature must then verify
// (a forged or re-rooted checkpoint fails here); the lines after it get every check scan makes.
// Any change to a line before the mark changes the tree, which no longer matches that signed
// root. That keeps a restart from
// decoding and re-encoding the whole active segment (about 20 ms per MB). On any error, with no
// checkpoint, or with a checkpoint signed by another key (an older root key), it is the full
// scan, which names the exact line and, as before, checks roots but not signatures.
func scanForAppend(r io.ReaderAt, verifierKey string) (c *chain, size, torn int64, err error) {
	if verifierKey != "" {
		if keys, kerr := newKeyring([]string{verifierKey}); kerr == nil && keys != nil {
			q := &chain{quick: true}
			_, _, qerr := q.scan(io.NewSectionReader(r, 0, math.MaxInt64), true)
			// The last checkpoint's root covers every line before it: its signature is the one
			// that has to be checked (the earlier ones are lines under it).
			if qerr == nil && q.mark != nil && signedBy(keys, q.mark.lastNote) {
				c = q.mark
				c.quick = false
				size, torn, err = c.scan(io.NewSectionReader(r, q.markedAt, math.MaxInt64), true)
				if err == nil {
					return c, q.markedAt + size, torn, nil
				}
			}
		}
	}
	c = &chain{}
	size, torn, err = c.scan(io.NewSectionReader(r, 0, math.MaxInt64), true)
	return c, size, torn, err
}

// signedBy reports whether note is a checkpoint validly signed by one of keys.
func signedBy(keys *keyring, note string) bool {
	_, err := keys.open([]byte(note))
	return err == nil
}

func (c *chain) fail(reason string) *VerifyError {
	return &VerifyError{Path: c.path, Line: c.line, Seq: c.next, Reason: reason}
}

// scan reads r line by line, checking the chain. It returns the offset
// just past the last complete line and, with allowTorn, the length of a
// final line without '\n' (otherwise that is an error).
func (c *chain) scan(r io.Reader, allowTorn bool) (size, torn int64, err error) {
	var buf []byte
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		b, complete, err := readLine(br, buf[:0])
		buf = b
		if err != nil && !errors.Is(err, io.EOF) {
			if errors.Is(err, errLineTooLong) {
				c.line++
				return size, 0, c.fail(fmt.Sprintf("line is longer than %d bytes", maxLineBytes))
			}
			return size, 0, fmt.Errorf("reading audit log: %w", err)
		}
		if !complete {
			if len(b) == 0 {
				return size, 0, nil // clean end of input
			}
			if allowTorn {
				return size, int64(len(b)), nil
			}
			c.line++
			return size, 0, c.fail("missing trailing newline (torn final line)")
		}
		if verr := c.add(b); verr != nil {
			return size, 0, verr
		}
		size += int64(len(b)) + 1
		if c.quickCP {
			c.quickCP = false
			c.mark, c.markedAt = c.snapshot(), size
		}
	}
}

// scanFiles scans each file in turn; every file after the first must start
// with a segment record.
func (c *chain) scanFiles(paths []string) error {
	for i, p := range paths {
		if err := c.scanFile(p, i > 0); err != nil {
			return err
		}
	}
	return nil
}

func (c *chain) scanFile(path string, segStart bool) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("reading audit log: %w", err)
	}
	defer f.Close()
	c.path, c.line, c.wantSegStart = path, 0, segStart
	_, _, err = c.scan(f, false)
	return err
}

// readLine appends to buf the next line of br without its '\n'. complete is
// false when input ended before a '\n' (buf then holds what was left).
func readLine(br *bufio.Reader, buf []byte) (_ []byte, complete bool, _ error) {
	for {
		frag, err := br.ReadSlice('\n')
		n := len(frag)
		if err == nil {
			n-- // drop the '\n'
		}
		if len(buf)+n > maxLineBytes {
			return buf, false, errLineTooLong
		}
		buf = append(buf, frag[:n]...)
		switch {
		case err == nil:
			return buf, true, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		default:
			return buf, false, err
		}
	}
}

// add checks one line (without '\n') and, if it is good, advances the chain.
func (c *chain) add(b []byte) *VerifyError {
	c.line++
	if c.quick && c.started && !ownRecord(b) {
		c.tip.push(b)
		c.sinceCP++
		return nil
	}
	l, reason := decodeLine(b)
	if reason != "" {
		return c.fail(reason)
	}
	if c.wantSegStart && c.line == 1 && l.Type != TypeSegment {
		return c.fail("file does not start with a segment record")
	}
	if !c.started {
		if verr := c.start(&l); verr != nil {
			return verr
		}
	}
	if l.Seq != c.next {
		return c.fail(fmt.Sprintf("seq is %d, want %d (a record is missing, inserted or moved)", l.Seq, c.next))
	}
	if c.next == 0 {
		if l.Prev != "" {
			return c.fail("prev must be empty for seq 0")
		}
	} else if l.Prev != encodeHash(c.head) {
		return c.fail("prev does not match the leaf hash of the previous line")
	}
	if reason := checkForm(&l, b); reason != "" {
		return c.fail(reason)
	}
	switch l.Type {
	case TypeCheckpoint:
		if verr := c.checkpoint(&l); verr != nil {
			return verr
		}
	case TypeSegment:
		if verr := c.segment(&l); verr != nil {
			return verr
		}
	case TypeRecovered:
		c.recovered++
	}
	h := tlog.RecordHash(b)
	if c.hook != nil {
		c.hook(b, h, &l)
	}
	c.head = h
	c.tree.add(h)
	c.next++
	if l.Type == TypeCheckpoint {
		c.sinceCP = 0
		c.quickCP = c.quick
	} else {
		c.sinceCP++
	}
	return c.checkTrusted(c.next - 1)
}

// start takes the first line: a log starts at seq 0, or a run of retained
// segments with a segment record, which then seeds the chain and the tree.
func (c *chain) start(l *line) *VerifyError {
	c.started = true
	if l.Type != TypeSegment || l.Seq == 0 {
		return nil
	}
	c.next, c.first = l.Seq, l.Seq
	f, err := parseFrontier(l.Detail)
	if err != nil {
		return c.fail(err.Error())
	}
	if f.size != l.Seq {
		return c.fail(fmt.Sprintf("segment tree size is %d, want its seq %d", f.size, l.Seq))
	}
	head, err := decodeHash(l.Prev)
	if err != nil {
		return c.fail("prev is not a base64 leaf hash")
	}
	c.head, c.tree = head, f
	return c.checkTrusted(c.next)
}

// checkpoint checks a checkpoint record before it joins the tree.
func (c *chain) checkpoint(l *line) *VerifyError {
	if !onlyDetail(l) {
		return c.fail("checkpoint record carries fields other than detail")
	}
	cp, err := c.keys.open([]byte(l.Detail))
	if err != nil {
		return c.fail(err.Error())
	}
	if cp.size != l.Seq {
		return c.fail(fmt.Sprintf("checkpoint size is %d, want its seq %d", cp.size, l.Seq))
	}
	if c.cps > 0 && cp.size <= c.lastCP {
		return c.fail("checkpoint sizes do not increase")
	}
	if cp.root != c.tree.root() {
		return c.fail(fmt.Sprintf("checkpoint root is not the tree hash of records 0..%d", cp.size-1))
	}
	c.cps++
	c.lastCP = cp.size
	c.lastNote = l.Detail
	return nil
}

// segment checks that a segment record carries the tree so far.
func (c *chain) segment(l *line) *VerifyError {
	if !onlyDetail(l) {
		return c.fail("segment record carries fields other than detail")
	}
	f, err := parseFrontier(l.Detail)
	if err != nil {
		return c.fail(err.Error())
	}
	if f.size != l.Seq {
		return c.fail(fmt.Sprintf("segment tree size is %d, want its seq %d", f.size, l.Seq))
	}
	if !f.equal(&c.tree) {
		return c.fail("segment frontier is not the tree so far (the segment does not continue the log)")
	}
	return nil
}

// checkTrusted compares the tree, now of c.next records, with a trusted
// checkpoint of that size. seq is the record that completed the tree.
func (c *chain) checkTrusted(seq uint64) *VerifyError {
	root, ok := c.trusted[c.next]
	if !ok || root == c.tree.root() {
		return nil
	}
	return &VerifyError{
		Path: c.path, Line: c.line, Seq: seq, Err: ErrRewritten,
		Reason: fmt.Sprintf("log rewritten: records 0..%d do not hash to the trusted checkpoint's root", c.next-1),
	}
}

// finish runs the checks that need the whole log.
func (c *chain) finish() error {
	if c.trusted == nil {
		return nil
	}
	if c.trustedMax > c.next {
		return &VerifyError{
			Path: c.path, Line: c.line + 1, Seq: c.next, Err: ErrRolledBack,
			Reason: fmt.Sprintf("log rolled back: it ends before seq %d, but a trusted checkpoint covers %d records", c.next, c.trustedMax),
		}
	}
	if c.trustedMin < c.first {
		return fmt.Errorf("verifying audit log: a trusted checkpoint covers %d records, the first retained is seq %d: %w",
			c.trustedMin, c.first, ErrTrustedCheckpointTooOld)
	}
	return nil
}

func (c *chain) summary() Summary {
	s := Summary{
		First:       c.first,
		Records:     c.next,
		Head:        c.head,
		Checkpoints: c.cps,
		Unsealed:    c.sinceCP,
		Recovered:   c.recovered,
	}
	if c.cps > 0 {
		s.LastCheckpoint = c.lastCP
		s.LastCheckpointNote = []byte(c.lastNote)
	}
	return s
}
