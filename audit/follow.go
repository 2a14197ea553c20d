package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"
)

// FollowPoll is how often Follow looks for new lines.
const FollowPoll = 200 * time.Millisecond

// ReadLines calls fn for each complete line of the file at path from byte
// offset from (0, or just after a '\n', such as a value ReadLines or
// TailOffset returned) to the current end, and returns the offset just past
// the last complete line. A final line without '\n' is not passed on: a
// later call sees it once it is complete. fn gets the line without '\n',
// valid only during the call; an error from fn stops the read and is
// returned as it is. Lines are not verified: see ParseRecord and Verify.
func ReadLines(path string, from int64, fn func(line []byte) error) (int64, error) {
	r, err := openLineReader(path, from)
	if err != nil {
		return from, err
	}
	defer r.f.Close()
	err = r.drain(fn)
	return r.off, err
}

// Follow is ReadLines that does not stop at the end of the file: it polls
// every FollowPoll for more until ctx is done, then returns ctx.Err(). When
// the active file is rotated it reads the rest of it, then every newer
// closed segment in order, then the new active file from its start, so no
// line is skipped (unless retention deletes a segment before Follow gets
// to it). If the writer cuts back a failed write, lines already passed on
// may never become durable; Verify is the authority on what the log holds.
func Follow(ctx context.Context, path string, from int64, fn func(line []byte) error) error {
	f := follower{path: path}
	if err := f.openActive(from); err != nil {
		return err
	}
	defer func() { _ = f.r.f.Close() }()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		if err := f.r.drain(fn); err != nil {
			return err
		}
		moved, err := f.advance(fn)
		if err != nil {
			return err
		}
		if moved {
			t.Reset(0)
			continue
		}
		// A write that failed was cut back: resume at the durable end.
		if cur, err := f.r.f.Stat(); err == nil && cur.Size() < f.r.off {
			f.r.off = cur.Size()
		}
		t.Reset(FollowPoll)
	}
}

// follower is Follow's position: the file it reads and the number that
// file has, or will get when it is rotated, as a closed segment.
type follower struct {
	path   string
	r      *lineReader
	num    uint64
	closed bool // r reads a closed segment: it will not grow
}

// openActive opens the active file at from. Its segment number is one
// more than the newest closed segment, provided no rotation happened while
// it was being opened.
func (f *follower) openActive(from int64) error {
	for {
		before, err := newestSegment(f.path)
		if err != nil {
			return err
		}
		r, err := openLineReader(f.path, from)
		if err != nil {
			return err
		}
		after, err := newestSegment(f.path)
		if err != nil {
			_ = r.f.Close()
			return err
		}
		if before == after {
			f.r, f.num, f.closed = r, after+1, false
			return nil
		}
		_ = r.f.Close()
	}
}

// advance moves on to the next file when the current one is finished: a
// closed segment once drained, the active file once it has been rotated
// (after draining it again). It reports whether it moved.
func (f *follower) advance(fn func(line []byte) error) (bool, error) {
	if !f.closed {
		fi, err := os.Stat(f.path)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return false, nil // between the rename and the new file
		case err != nil:
			return false, fmt.Errorf("following audit log: %w", err)
		case os.SameFile(fi, f.r.fi):
			return false, nil
		}
		// Rotated: whatever was written before the rename is in our file.
		if err := f.r.drain(fn); err != nil {
			return false, err
		}
	}
	segs, err := closedSegments(f.path)
	if err != nil {
		return false, err
	}
	for _, s := range segs {
		if s.n <= f.num {
			continue
		}
		r, err := openLineReader(s.path, 0)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue // deleted by retention meanwhile
			}
			return false, err
		}
		_ = f.r.f.Close()
		f.r, f.num, f.closed = r, s.n, true
		return true, nil
	}
	old := f.r
	if err := f.openActive(0); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			f.r = old
			return false, nil // the new active file is not there yet
		}
		return false, err
	}
	_ = old.f.Close()
	return true, nil
}

// newestSegment returns the number of the newest closed segment, 0 if none.
func newestSegment(path string) (uint64, error) {
	segs, err := closedSegments(path)
	if err != nil || len(segs) == 0 {
		return 0, err
	}
	return segs[len(segs)-1].n, nil
}

// TailOffset returns the offset of the start of the last n complete lines
// of the file at path (0 if it has fewer), for ReadLines or Follow. With
// n == 0 it returns the end of the last complete line.
func TailOffset(path string, n int) (int64, error) {
	if n < 0 {
		return 0, errors.New("reading audit log: negative line count")
	}
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("reading audit log: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("reading audit log: %w", err)
	}
	// Walk back over n+1 newlines: the first ends the last complete line.
	need := n + 1
	buf := make([]byte, 64<<10)
	end := fi.Size()
	for end > 0 {
		start := max(end-int64(len(buf)), 0)
		chunk := buf[:end-start]
		if _, err := f.ReadAt(chunk, start); err != nil && !errors.Is(err, io.EOF) {
			return 0, fmt.Errorf("reading audit log: %w", err)
		}
		for i := len(chunk) - 1; i >= 0; i-- {
			if chunk[i] != '\n' {
				continue
			}
			if need--; need == 0 {
				return start + int64(i) + 1, nil
			}
		}
		end = start
	}
	return 0, nil
}

// lineReader reads complete lines of one file from an offset.
type lineReader struct {
	f    *os.File
	fi   os.FileInfo
	off  int64 // just past the last line passed on
	buf  []byte
	line []byte
}

func openLineReader(path string, from int64) (*lineReader, error) {
	if from < 0 {
		return nil, errors.New("reading audit log: negative offset")
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading audit log: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("reading audit log: %w", err)
	}
	if from > fi.Size() {
		_ = f.Close()
		return nil, fmt.Errorf("reading audit log: offset %d is past the end (%d bytes)", from, fi.Size())
	}
	if from > 0 {
		var b [1]byte
		if _, err := f.ReadAt(b[:], from-1); err != nil {
			_ = f.Close()
			return nil, fmt.Errorf("reading audit log: %w", err)
		}
		if b[0] != '\n' {
			_ = f.Close()
			return nil, fmt.Errorf("reading audit log: offset %d is not at the start of a line", from)
		}
	}
	return &lineReader{f: f, fi: fi, off: from, buf: make([]byte, 64<<10)}, nil
}

// drain passes on every complete line from off to the current end of the
// file. Bytes of an incomplete final line are read again next time.
func (r *lineReader) drain(fn func(line []byte) error) error {
	pos := r.off
	r.line = r.line[:0]
	for {
		n, err := r.f.ReadAt(r.buf, pos)
		data := r.buf[:n]
		pos += int64(n)
		for len(data) > 0 {
			i := bytes.IndexByte(data, '\n')
			if i < 0 {
				break
			}
			line := data[:i]
			if len(r.line) > 0 {
				r.line = append(r.line, line...)
				line = r.line
			}
			if len(line) > maxLineBytes {
				return fmt.Errorf("reading audit log: line at offset %d is longer than %d bytes", r.off, maxLineBytes)
			}
			if ferr := fn(line); ferr != nil {
				return ferr
			}
			r.off += int64(len(line)) + 1
			r.line = r.line[:0]
			data = data[i+1:]
		}
		r.line = append(r.line, data...)
		if len(r.line) > maxLineBytes {
			return fmt.Errorf("reading audit log: line at offset %d is longer than %d bytes", r.off, maxLineBytes)
		}
		switch {
		case errors.Is(err, io.EOF) || (err == nil && n == 0):
			return nil
		case err != nil:
			return fmt.Errorf("reading audit log: %w", err)
		}
	}
}
