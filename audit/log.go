package audit

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/mod/sumdb/tlog"
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

	// Owned by the writer goroutine (and by newLog before it starts).
	f     file
	now   func() time.Time
	next  uint64    // seq of the next record
	head  tlog.Hash // leaf hash of record next-1
	size  int64     // durable length of the file
	dirty bool      // bytes past size may be on disk and must be cut first
}

type pending struct {
	rec Record
	res chan result
}

type result struct {
	entry Entry
	err   error
}

// Open opens or creates the log at path. It reads the existing file to find
// the last seq and hash, refusing a file that does not verify, truncates a
// torn tail (a final line without '\n') and then appends a "recovered" record
// saying how many bytes were dropped. Only one process may have a log open.
// logger may not be nil.
func Open(path string, logger *slog.Logger) (*Log, error) {
	if logger == nil {
		return nil, errors.New("opening audit log: logger is nil")
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
	l, err := newLog(osFile{f}, logger, time.Now)
	if err != nil {
		return nil, fmt.Errorf("opening audit log %s: %w", path, err)
	}
	logger.Info("audit log open", "path", path, "records", l.next)
	return l, nil
}

// newLog scans f, repairs a torn tail and starts the writer. It closes f on
// error.
func newLog(f file, logger *slog.Logger, now func() time.Time) (*Log, error) {
	res, err := scan(io.NewSectionReader(f, 0, math.MaxInt64), true)
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("reading existing log: %w", err)
	}
	if res.torn > 0 {
		if err := f.Truncate(res.size); err != nil {
			_ = f.Close()
			return nil, fmt.Errorf("truncating torn tail: %w", err)
		}
		// The recovered record's fdatasync makes the new length durable too.
		logger.Warn("audit log had a torn final line; truncated it", "dropped_bytes", res.torn)
	}
	l := &Log{
		logger: logger,
		reqs:   make(chan *pending, queueLen),
		done:   make(chan struct{}),
		f:      f,
		now:    now,
		next:   res.summary.Records,
		head:   res.summary.Head,
		size:   res.size,
	}
	go l.run()
	if res.torn > 0 {
		_, err := l.Append(Record{
			Type:   TypeRecovered,
			Bytes:  res.torn,
			Detail: "truncated a torn final line",
		})
		if err != nil {
			_ = l.Close()
			return nil, fmt.Errorf("recording torn tail recovery: %w", err)
		}
	}
	return l, nil
}

// Append writes r and returns only after it is durable (written and
// fdatasync'd). Concurrent Appends are group-committed. On a write or sync
// error every caller in that batch gets the error, the file is cut back to
// its last durable length, and seq and prev are not advanced; later Appends
// try again.
func (l *Log) Append(r Record) (Entry, error) {
	if err := validType(r.Type); err != nil {
		return Entry{}, fmt.Errorf("appending audit record: %w", err)
	}
	p := &pending{rec: r, res: make(chan result, 1)}
	l.mu.RLock()
	if l.closed {
		l.mu.RUnlock()
		return Entry{}, ErrClosed
	}
	l.reqs <- p
	l.mu.RUnlock()
	res := <-p.res
	return res.entry, res.err
}

// Close waits for queued Appends to be written, then closes the file. It
// appends nothing.
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
	if l.dirty {
		if err := l.f.Truncate(l.size); err != nil {
			errs = append(errs, fmt.Errorf("truncating audit log to its durable length: %w", err))
		}
	}
	if err := l.f.Close(); err != nil {
		errs = append(errs, fmt.Errorf("closing audit log: %w", err))
	}
	return errors.Join(errs...)
}

// run is the writer goroutine: it takes whatever is queued, up to maxBatch,
// and commits it with one write and one fdatasync.
func (l *Log) run() {
	defer close(l.done)
	batch := make([]*pending, 0, maxBatch)
	var buf bytes.Buffer
	for p := range l.reqs {
		batch = append(batch[:0], p)
	drain:
		for len(batch) < maxBatch {
			select {
			case q, ok := <-l.reqs:
				if !ok {
					break drain
				}
				batch = append(batch, q)
			default:
				break drain
			}
		}
		l.commit(batch, &buf)
	}
}

// commit encodes batch, writes it durably and answers every caller.
func (l *Log) commit(batch []*pending, buf *bytes.Buffer) {
	type accepted struct {
		p     *pending
		entry Entry
	}
	buf.Reset()
	ok := make([]accepted, 0, len(batch))
	seq, head, ts := l.next, l.head, l.now()
	for _, p := range batch {
		b, err := encodeRecord(p.rec, seq, head, ts)
		if err != nil {
			p.res <- result{err: fmt.Errorf("appending audit record: %w", err)}
			continue
		}
		head = tlog.RecordHash(b)
		ok = append(ok, accepted{p: p, entry: Entry{Seq: seq, Hash: head}})
		buf.Write(b)
		buf.WriteByte('\n')
		seq++
	}
	if len(ok) == 0 {
		return
	}
	if err := l.writeDurable(buf.Bytes()); err != nil {
		l.logger.Error("audit log write failed; records not written", "records", len(ok), "err", err)
		err = fmt.Errorf("appending audit record: %w", err)
		for _, a := range ok {
			a.p.res <- result{err: err}
		}
		return
	}
	l.next, l.head = seq, head
	l.size += int64(buf.Len())
	for _, a := range ok {
		a.p.res <- result{entry: a.entry}
	}
}

// writeDurable appends b and fdatasyncs. On failure it cuts the file back to
// the last durable length; if that fails too, the next call tries again
// before writing anything.
func (l *Log) writeDurable(b []byte) error {
	if l.dirty {
		if err := l.f.Truncate(l.size); err != nil {
			return fmt.Errorf("truncating to the last durable length: %w", err)
		}
		l.dirty = false
		l.logger.Info("audit log cut back to its last durable length", "bytes", l.size)
	}
	n, err := l.f.Write(b)
	if err == nil && n != len(b) {
		err = io.ErrShortWrite
	}
	if err != nil {
		err = fmt.Errorf("writing: %w", err)
	} else if serr := l.f.Datasync(); serr != nil {
		err = fmt.Errorf("syncing: %w", serr)
	}
	if err == nil {
		return nil
	}
	l.dirty = true
	if terr := l.f.Truncate(l.size); terr != nil {
		l.logger.Error("audit log could not be cut back to its last durable length; will retry", "err", terr)
		return err
	}
	l.dirty = false
	return err
}
