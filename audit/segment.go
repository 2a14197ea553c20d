package audit

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Segment files: the active file is path; closed segments are
// "<base>.NNNNNN.jsonl" next to it, numbered from 1, where base is path
// without ".jsonl".

func segmentBase(path string) string { return strings.TrimSuffix(path, ".jsonl") }

func segmentName(n uint64) string { return fmt.Sprintf("%06d", n) }

func segmentPath(path string, n uint64) string {
	return segmentBase(path) + "." + segmentName(n) + ".jsonl"
}

type closedSegment struct {
	n    uint64
	path string
}

// closedSegments lists the closed segments of the log at path, oldest
// first.
func closedSegments(path string) ([]closedSegment, error) {
	dir := filepath.Dir(path)
	prefix := filepath.Base(segmentBase(path)) + "."
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("listing audit log segments: %w", err)
	}
	var segs []closedSegment
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() || !strings.HasPrefix(name, prefix) || !strings.HasSuffix(name, ".jsonl") ||
			len(name) < len(prefix)+len(".jsonl") {
			continue
		}
		mid := name[len(prefix) : len(name)-len(".jsonl")]
		n, err := strconv.ParseUint(mid, 10, 64)
		if err != nil || n == 0 || segmentName(n) != mid {
			continue
		}
		segs = append(segs, closedSegment{n: n, path: filepath.Join(dir, name)})
	}
	slices.SortFunc(segs, func(a, b closedSegment) int {
		switch {
		case a.n < b.n:
			return -1
		case a.n > b.n:
			return 1
		}
		return 0
	})
	return segs, nil
}

// SegmentPaths returns the files of the log whose active file is path,
// oldest first: the closed segments still kept, then path itself if it
// exists. That is the order VerifyFiles and ProveFiles take.
func SegmentPaths(path string) ([]string, error) {
	segs, err := closedSegments(path)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(segs)+1)
	for _, s := range segs {
		out = append(out, s.path)
	}
	if _, err := os.Stat(path); err == nil {
		out = append(out, path)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("listing audit log segments: %w", err)
	}
	return out, nil
}

// createActive opens a new active file: created if missing, locked, and
// required to be empty (a non-empty file would be another writer's).
func createActive(path string) (file, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	if err := lockFile(f); err != nil {
		_ = f.Close()
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() || fi.Size() != 0 {
		_ = f.Close()
		return nil, fmt.Errorf("%s is not a new empty file", path)
	}
	if fi.Mode().Perm() != 0o600 {
		if err := f.Chmod(0o600); err != nil {
			_ = f.Close()
			return nil, err
		}
	}
	return osFile{f}, nil
}

// maybeRotate closes the active segment once it is full. A failure is
// logged and retried after the next commit; records keep going to the
// full segment meanwhile, unless it was already renamed, in which case
// commits fail until the new segment can be started.
func (l *Log) maybeRotate() {
	if l.path == "" || l.rotated || l.cur.size < l.cfg.segSize {
		return
	}
	if err := l.rotate(); err != nil {
		l.logger.Error("audit log segment rotation failed; will retry", "err", err)
	}
}

// rotate seals the active file with a checkpoint, renames it to the next
// closed segment name and starts a new active file.
func (l *Log) rotate() error {
	if l.cfg.signer != nil && l.tip.sinceCP > 0 {
		if err := l.seal(); err != nil {
			return fmt.Errorf("sealing the full segment: %w", err)
		}
	}
	closed := segmentPath(l.path, l.segNum+1)
	if _, err := os.Lstat(closed); err == nil {
		return fmt.Errorf("%s already exists", closed)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	// cur stays open (and locked) until the new active file is started.
	if err := os.Rename(l.path, closed); err != nil {
		return fmt.Errorf("renaming the full segment: %w", err)
	}
	l.segNum++
	l.rotated, l.dirOK = true, false
	l.logger.Info("audit log segment closed", "segment", closed, "last_seq", l.tip.next-1)
	return l.ensureActive()
}

// ensureActive finishes an unfinished rotation: it creates the new active
// file, makes the directory durable, and writes the segment record (and,
// with a signer, a checkpoint that signs the frontier it carries). Only
// then does the new file replace the old one and old segments expire.
func (l *Log) ensureActive() error {
	if !l.rotated {
		return nil
	}
	if l.nxt == nil {
		f, err := l.cfg.create(l.path)
		if err != nil {
			return fmt.Errorf("creating the new active segment: %w", err)
		}
		l.nxt = &segmentFile{f: f}
	}
	if !l.dirOK {
		if err := syncDir(filepath.Dir(l.path)); err != nil {
			return fmt.Errorf("syncing the log directory: %w", err)
		}
		l.dirOK = true
	}
	if l.tip.next == 0 {
		return errors.New("cannot start a segment of an empty log")
	}
	w := &l.work
	w.copyFrom(&l.tip)
	l.buf.Reset()
	ts := l.cfg.now()
	first := w.next
	b, err := encodeRecord(Record{Type: TypeSegment, Detail: w.tree.String()}, w.next, w.head, ts)
	if err != nil {
		return fmt.Errorf("encoding the segment record: %w", err)
	}
	w.push(b)
	w.sinceCP++
	l.buf.Write(b)
	l.buf.WriteByte('\n')
	if l.cfg.signer != nil {
		if err := l.addCheckpoint(w, &l.buf, ts); err != nil {
			return err
		}
	}
	if err := l.nxt.writeDurable(l.buf.Bytes(), l.logger); err != nil {
		return fmt.Errorf("starting the new segment: %w", err)
	}
	l.tip.copyFrom(w)
	old := l.cur
	l.cur, l.nxt, l.rotated = l.nxt, nil, false
	if old != nil {
		if err := old.close(); err != nil {
			l.logger.Warn("closing the previous audit segment", "err", err)
		}
	}
	l.logger.Info("audit log segment started", "first_seq", first)
	l.expire()
	return nil
}

// expire deletes the oldest closed segments beyond the retention count.
// Failures are logged: an extra old segment is harmless.
func (l *Log) expire() {
	if l.cfg.retention < 0 {
		return
	}
	segs, err := closedSegments(l.path)
	if err != nil {
		l.logger.Warn("audit log retention: listing segments failed", "err", err)
		return
	}
	removed := 0
	for len(segs)-removed > l.cfg.retention {
		if err := os.Remove(segs[removed].path); err != nil {
			l.logger.Warn("audit log retention: deleting a segment failed", "segment", segs[removed].path, "err", err)
			break
		}
		l.logger.Info("audit log segment deleted by retention", "segment", segs[removed].path)
		removed++
	}
	if removed > 0 {
		if err := syncDir(filepath.Dir(l.path)); err != nil {
			l.logger.Warn("audit log retention: syncing the directory failed", "err", err)
		}
	}
}
