package audit

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// ErrClosed is returned by Append and Close once the log has been closed.
var ErrClosed = errors.New("audit log is closed")

const (
	queueLen = 1024 // pending Appends buffered while a batch is being synced
	maxBatch = 256  // records per write+fdatasync (at most 16 MiB)
)

// file is the part of an open log file the writer needs. *os.File (through
// osFile) is the real one; tests substitute one that fails on demand.
type file interface {
	io.ReaderAt
	io.Writer // appends: the file is opened O_APPEND
	Truncate(size int64) error
	Datasync() error
	Close() error
}

// osFile adds Datasync (fdatasync on Linux) to *os.File.
type osFile struct{ *os.File }

func (f osFile) Datasync() error { return datasync(f.File) }

// Log is an open audit log. Its methods are safe for concurrent use.
type Log struct {
	logger *slog.Logger
	reqs   chan *pending
	done   chan struct{} // closed when the writer goroutine has exited

	mu     sync.RWMutex // guards closed against sends on reqs
	closed bool

	// Owned by the writer goroutine (and by newLog before it starts and
	// Close after it ends).
	cfg     config
	path    string       // active file; "" when opened without one (tests): no segments
	cur     *segmentFile // the file being appended to
	nxt     *segmentFile // the next active file, while a rotation is unfinished
	rotated bool         // cur was renamed away: nothing more may go into it
	dirOK   bool         // the directory was synced since nxt was created
	segNum  uint64       // number of the newest closed segment (0: none)
	tip     tip          // durable end of the log
	work    tip          // scratch copy of tip for the batch being built
	buf     bytes.Buffer // scratch for the log's own records
}

type pending struct {
	rec  Record
	res  chan result        // Append waits here
	done func(Entry, error) // or AppendAsync's callback
}

// answer tells the caller how its record fared.
func (p *pending) answer(r result) {
	if p.done != nil {
		p.done(r.entry, r.err)
		return
	}
	p.res <- r
}

type result struct {
	entry Entry
	err   error
}

// Open opens or creates the log at path (the active segment). It reads the
// existing file to find the end of the chain and of the Merkle tree,
// refusing a file that does not verify (checkpoints are checked for size
// and root, not for their signature), truncates a torn tail (a final line
// without '\n') and then appends a "recovered" record saying how many bytes
// were dropped. If the file is empty but closed segments exist (a crash in
// the middle of a rotation), it continues the chain from the newest closed
// segment and records that. Only one process may have a log open. logger
// may not be nil.
//
// Without WithSigner no checkpoints are written; with it, see
// WithCheckpointEvery. Segments: see WithSegmentSize and WithRetention.
func Open(path string, logger *slog.Logger, opts ...Option) (*Log, error) {
	if logger == nil {
		return nil, errors.New("opening audit log: logger is nil")
	}
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, fmt.Errorf("opening audit log: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening audit log: %w", err)
	}
	if err := lockFile(f); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("locking audit log %s: %w", path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("opening audit log: %w", err)
	}
	if !fi.Mode().IsRegular() {
		_ = f.Close()
		return nil, fmt.Errorf("opening audit log %s: not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		if err := f.Chmod(0o600); err != nil {
			_ = f.Close()
			return nil, fmt.Errorf("restricting audit log permissions: %w", err)
		}
		logger.Warn("audit log permissions tightened", "path", path, "was", perm.String())
	}
	// Make the directory entry durable, so a new log survives a crash.
	if err := syncDir(filepath.Dir(path)); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("syncing audit log directory: %w", err)
	}
	l, err := newLog(osFile{f}, path, logger, cfg)
	if err != nil {
		return nil, fmt.Errorf("opening audit log %s: %w", path, err)
	}
	return l, nil
}

// newLog scans f, repairs a torn tail, continues from the newest closed
// segment if f is empty, and starts the writer. path may be "" (no
// segments). It closes f on error.
func newLog(f file, path string, logger *slog.Logger, cfg config) (*Log, error) {
	var vkey string
	if cfg.signer != nil {
		vkey = cfg.signer.VerifierKey()
	}
	c, size, torn, err := scanForAppend(f, vkey)
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("reading existing log: %w", err)
	}
	if torn > 0 {
		if err := f.Truncate(size); err != nil {
			_ = f.Close()
			return nil, fmt.Errorf("truncating torn tail: %w", err)
		}
		// The next record's fdatasync makes the new length durable too.
		logger.Warn("audit log had a torn final line; truncated it", "dropped_bytes", torn)
	}
	l := &Log{
		logger: logger,
		reqs:   make(chan *pending, queueLen),
		done:   make(chan struct{}),
		cfg:    cfg,
		path:   path,
		cur:    &segmentFile{f: f, size: size},
	}
	l.tip.copyFrom(&c.tip)
	var continued string
	if path != "" {
		segs, err := closedSegments(path)
		if err != nil {
			_ = f.Close()
			return nil, err
		}
		if len(segs) > 0 {
			l.segNum = segs[len(segs)-1].n
		}
		if !c.started && len(segs) > 0 {
			last := segs[len(segs)-1].path
			if err := l.continueFrom(last); err != nil {
				_ = f.Close()
				return nil, err
			}
			continued = filepath.Base(last)
			logger.Warn("audit log active file was empty; continued the chain from the newest closed segment",
				"segment", last, "next_seq", l.tip.next)
		}
	}
	logger.Info("audit log open", "path", path, "records", l.tip.next, "unsealed", l.tip.sinceCP,
		"signed", cfg.signer != nil)
	go l.run()
	if torn > 0 {
		if _, err := l.Append(Record{
			Type:   TypeRecovered,
			Bytes:  torn,
			Detail: "truncated a torn final line",
		}); err != nil {
			_ = l.Close()
			return nil, fmt.Errorf("recording torn tail recovery: %w", err)
		}
	}
	if continued != "" {
		if _, err := l.Append(Record{
			Type:   TypeRecovered,
			Detail: "active segment was empty; continued from " + continued,
		}); err != nil {
			_ = l.Close()
			return nil, fmt.Errorf("recording segment recovery: %w", err)
		}
	}
	return l, nil
}

// continueFrom takes the end of the closed segment at path as the end of
// the log and starts the (empty) active file with a segment record.
func (l *Log) continueFrom(path string) error {
	var c chain
	if err := c.scanFile(path, false); err != nil {
		return fmt.Errorf("reading the newest closed segment: %w", err)
	}
	if c.next == 0 {
		return fmt.Errorf("the newest closed segment %s has no records", path)
	}
	l.tip.copyFrom(&c.tip)
	l.nxt, l.cur = l.cur, nil
	l.rotated, l.dirOK = true, true
	if err := l.ensureActive(); err != nil {
		l.cur, l.nxt = l.nxt, nil
		return fmt.Errorf("starting a new segment: %w", err)
	}
	return nil
}

// Append writes r and returns only after it is durable (written and
// fdatasync'd). Concurrent Appends are group-committed. On a write or sync
// error every caller in that batch gets the error, the file is cut back to
// its last durable length, and seq and prev are not advanced; later Appends
// try again. Types "checkpoint" and "segment" are the log's own and are
// refused.
func (l *Log) Append(r Record) (Entry, error) {
	if err := appendable(r); err != nil {
		return Entry{}, err
	}
	p := &pending{rec: r, res: make(chan result, 1)}
	if err := l.enqueue(p); err != nil {
		return Entry{}, err
	}
	res := <-p.res
	return res.entry, res.err
}

// AppendAsync queues r like Append, in the same order and group commits, but returns without
// waiting for it to be durable; done, if not nil, is called with the outcome from the log's
// writer goroutine and must be quick. A record queued before Close is written by Close. For
// records nothing waits on (the result of a request already answered); a record that must be
// durable before something happens takes Append.
func (l *Log) AppendAsync(r Record, done func(Entry, error)) error {
	if err := appendable(r); err != nil {
		return err
	}
	if done == nil {
		done = func(Entry, error) {}
	}
	return l.enqueue(&pending{rec: r, done: done})
}

// appendable refuses records a caller may not append.
func appendable(r Record) error {
	if err := validType(r.Type); err != nil {
		return fmt.Errorf("appending audit record: %w", err)
	}
	if r.Type == TypeCheckpoint || r.Type == TypeSegment {
		return fmt.Errorf("appending audit record: %w", errReserved)
	}
	return nil
}

func (l *Log) enqueue(p *pending) error {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		return ErrClosed
	}
	l.reqs <- p
	return nil
}

// Close waits for queued Appends to be written, then, with a signer and
// records after the last checkpoint, appends a final checkpoint, and
// closes the file. A failed final checkpoint is returned, but the file is
// closed all the same.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	l.closed = true
	close(l.reqs)
	l.mu.Unlock()
	<-l.done
	var errs []error
	if l.cfg.signer != nil && l.tip.sinceCP > 0 && !l.rotated {
		if err := l.seal(); err != nil {
			errs = append(errs, fmt.Errorf("writing the final checkpoint: %w", err))
		}
	}
	for _, s := range []*segmentFile{l.nxt, l.cur} {
		if s == nil {
			continue
		}
		if err := s.close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// run is the writer goroutine: it takes whatever is queued, up to maxBatch,
// and commits it with one write and one fdatasync. With a signer it also
// writes a checkpoint every cpInterval if records were added since the last.
func (l *Log) run() {
	defer close(l.done)
	var tick <-chan time.Time
	if l.cfg.signer != nil && l.cfg.cpInterval > 0 {
		t := time.NewTicker(l.cfg.cpInterval)
		defer t.Stop()
		tick = t.C
	}
	batch := make([]*pending, 0, maxBatch)
	var buf bytes.Buffer
	for {
		select {
		case p, ok := <-l.reqs:
			if !ok {
				return
			}
			batch = l.gather(append(batch[:0], p))
			l.commit(batch, &buf)
		case <-tick:
			if l.tip.sinceCP > 0 {
				if err := l.seal(); err != nil {
					l.logger.Error("audit checkpoint failed; will retry", "err", err)
				}
			}
		}
	}
}

// gather adds to batch what is queued, up to maxBatch. A batch of AppendAsync records alone
// (nobody waits on it) waits up to the configured linger for more, so that it shares the next
// fdatasync; a record someone waits for, a full batch or Close ends the wait.
func (l *Log) gather(batch []*pending) []*pending {
	var linger *time.Timer
	defer func() {
		if linger != nil {
			linger.Stop()
		}
	}()
	waited := false
	for {
	drain:
		for len(batch) < maxBatch {
			select {
			case q, ok := <-l.reqs:
				if !ok {
					return batch
				}
				batch = append(batch, q)
			default:
				break drain
			}
		}
		if len(batch) >= maxBatch || l.cfg.linger <= 0 || waited || someoneWaits(batch) {
			return batch
		}
		if linger == nil {
			linger = time.NewTimer(l.cfg.linger)
		}
		select {
		case q, ok := <-l.reqs:
			if !ok {
				return batch
			}
			batch = append(batch, q)
		case <-linger.C:
			waited = true
		}
	}
}

// someoneWaits says whether an Append (not AppendAsync) is in batch.
func someoneWaits(batch []*pending) bool {
	for _, p := range batch {
		if p.done == nil {
			return true
		}
	}
	return false
}

// commit encodes batch, with checkpoints every cpEvery records, writes it
// durably and answers every caller.
func (l *Log) commit(batch []*pending, buf *bytes.Buffer) {
	type accepted struct {
		p     *pending
		entry Entry
	}
	if err := l.ensureActive(); err != nil {
		l.logger.Error("audit log has no active segment; records not written", "records", len(batch), "err", err)
		err = fmt.Errorf("appending audit record: starting a new segment: %w", err)
		for _, p := range batch {
			p.answer(result{err: err})
		}
		return
	}
	buf.Reset()
	ok := make([]accepted, 0, len(batch))
	w := &l.work
	w.copyFrom(&l.tip)
	ts := l.cfg.now()
	var cpErr error
	for _, p := range batch {
		b, err := encodeRecord(p.rec, w.next, w.head, ts)
		if err != nil {
			p.answer(result{err: fmt.Errorf("appending audit record: %w", err)})
			continue
		}
		seq := w.next
		h := w.push(b)
		w.sinceCP++
		buf.Write(b)
		buf.WriteByte('\n')
		ok = append(ok, accepted{p: p, entry: Entry{Seq: seq, Hash: h}})
		if l.cfg.signer != nil && l.cfg.cpEvery > 0 && w.sinceCP >= uint64(l.cfg.cpEvery) && cpErr == nil {
			cpErr = l.addCheckpoint(w, buf, ts)
		}
	}
	if len(ok) == 0 {
		return
	}
	err := cpErr
	if err == nil {
		err = l.cur.writeDurable(buf.Bytes(), l.logger)
	}
	if err != nil {
		l.logger.Error("audit log write failed; records not written", "records", len(ok), "err", err)
		err = fmt.Errorf("appending audit record: %w", err)
		for _, a := range ok {
			a.p.answer(result{err: err})
		}
		return
	}
	l.tip.copyFrom(w)
	for _, a := range ok {
		a.p.answer(result{entry: a.entry})
	}
	l.maybeRotate()
}

// addCheckpoint appends to buf a checkpoint of the tree w holds.
func (l *Log) addCheckpoint(w *tip, buf *bytes.Buffer, ts time.Time) error {
	note, err := l.cfg.signer.signCheckpoint(checkpoint{origin: l.cfg.signer.origin, size: w.next, root: w.tree.root()})
	if err != nil {
		return err
	}
	b, err := encodeRecord(Record{Type: TypeCheckpoint, Detail: string(note)}, w.next, w.head, ts)
	if err != nil {
		return fmt.Errorf("encoding checkpoint: %w", err)
	}
	w.push(b)
	w.sinceCP = 0
	buf.Write(b)
	buf.WriteByte('\n')
	return nil
}

// seal durably appends a checkpoint on its own.
func (l *Log) seal() error {
	if err := l.ensureActive(); err != nil {
		return fmt.Errorf("starting a new segment: %w", err)
	}
	w := &l.work
	w.copyFrom(&l.tip)
	l.buf.Reset()
	if err := l.addCheckpoint(w, &l.buf, l.cfg.now()); err != nil {
		return err
	}
	if err := l.cur.writeDurable(l.buf.Bytes(), l.logger); err != nil {
		return err
	}
	l.tip.copyFrom(w)
	return nil
}

// segmentFile is one open log file and its durable length.
type segmentFile struct {
	f     file
	size  int64 // durable length
	dirty bool  // bytes past size may be on disk and must be cut first
}

// writeDurable appends b and fdatasyncs. On failure it cuts the file back to
// the last durable length; if that fails too, the next call tries again
// before writing anything.
func (s *segmentFile) writeDurable(b []byte, logger *slog.Logger) error {
	if s.dirty {
		if err := s.f.Truncate(s.size); err != nil {
			return fmt.Errorf("truncating to the last durable length: %w", err)
		}
		s.dirty = false
		logger.Info("audit log cut back to its last durable length", "bytes", s.size)
	}
	n, err := s.f.Write(b)
	if err == nil && n != len(b) {
		err = io.ErrShortWrite
	}
	if err != nil {
		err = fmt.Errorf("writing: %w", err)
	} else if serr := s.f.Datasync(); serr != nil {
		err = fmt.Errorf("syncing: %w", serr)
	}
	if err == nil {
		s.size += int64(len(b))
		return nil
	}
	s.dirty = true
	if terr := s.f.Truncate(s.size); terr != nil {
		logger.Error("audit log could not be cut back to its last durable length; will retry", "err", terr)
		return err
	}
	s.dirty = false
	return err
}

// close cuts off bytes of a failed write that could not be cut back
// earlier, then closes the file.
func (s *segmentFile) close() error {
	var errs []error
	if s.dirty {
		if err := s.f.Truncate(s.size); err != nil {
			errs = append(errs, fmt.Errorf("truncating audit log to its durable length: %w", err))
		}
	}
	if err := s.f.Close(); err != nil {
		errs = append(errs, fmt.Errorf("closing audit log: %w", err))
	}
	return errors.Join(errs...)
}
