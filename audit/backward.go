package audit

import (
	"bytes"
	"fmt"
	"io"
	"os"
)

// backwardChunk is how much ReadLinesBackward reads at a time (a variable for tests).
var backwardChunk = 64 << 10

// ReadLinesBackward calls fn for each complete line of the file at path, from the last to the
// first, until fn returns false or an error (returned as it is). A final line without '\n' is
// torn and skipped. fn gets the line without '\n', valid only during the call. It reads only
// as far back as fn wants, so finding a recent record costs the same whatever the file's size.
// Lines are not verified: see ParseRecord and Verify.
func ReadLinesBackward(path string, fn func(line []byte) (more bool, err error)) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("reading audit log backward: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("reading audit log backward: %w", err)
	}
	pos := fi.Size()
	// carry holds the bytes [pos, end) not yet passed on; after the torn tail is dropped it
	// always ends with '\n'.
	var carry []byte
	read := func() error {
		n := int64(backwardChunk)
		if n > pos {
			n = pos
		}
		buf := make([]byte, int(n), int(n)+len(carry))
		if _, err := f.ReadAt(buf, pos-n); err != nil && err != io.EOF {
			return fmt.Errorf("reading audit log backward: %w", err)
		}
		pos -= n
		carry = append(buf, carry...)
		return nil
	}
	// Drop a torn final line: everything after the last '\n'.
	for {
		if i := bytes.LastIndexByte(carry, '\n'); i >= 0 {
			carry = carry[:i+1]
			break
		}
		if pos == 0 {
			return nil // no complete line at all
		}
		if dropped := fi.Size() - pos; dropped > maxLineBytes {
			return fmt.Errorf("reading audit log backward: the final line is longer than %d bytes and has no newline", maxLineBytes)
		}
		carry = carry[:0]
		if err := read(); err != nil {
			return err
		}
	}
	for len(carry) > 0 {
		body := carry[:len(carry)-1]
		j := bytes.LastIndexByte(body, '\n')
		if j < 0 && pos > 0 {
			if len(body) > maxLineBytes {
				return fmt.Errorf("reading audit log backward: a line is longer than %d bytes", maxLineBytes)
			}
			if err := read(); err != nil {
				return err
			}
			continue
		}
		more, err := fn(body[j+1:])
		if err != nil || !more {
			return err
		}
		carry = carry[:j+1]
	}
	return nil
}
