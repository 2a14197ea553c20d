package audit

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/tlog"
)

// Summary describes a log that verified: how many records it holds and the
// leaf hash of the last one (zero for an empty log).
type Summary struct {
	Records uint64
	Head    tlog.Hash
}

// VerifyError names the first place a log stops being a valid chain.
// Line is 1-based. Seq is the seq that line should carry (Line-1): every
// record before it verified, so it is the first bad seq. Reason never quotes
// the content of the log.
type VerifyError struct {
	Line   int
	Seq    uint64
	Reason string
}

func (e *VerifyError) Error() string {
	return fmt.Sprintf("line %d (seq %d): %s", e.Line, e.Seq, e.Reason)
}

// Verify reads a whole log and checks that every line is strict, canonical
// JSON with v == 1, that seq is contiguous from 0, that prev is the leaf hash
// of the previous line, and that the log ends with a newline. It returns the
// number of records and the last leaf hash, a *VerifyError for the first bad
// line, or a wrapped read error.
func Verify(r io.Reader) (Summary, error) {
	res, err := scan(r, false)
	if err != nil {
		return Summary{}, err
	}
	return res.summary, nil
}

// scanResult is what a sequential read of a log found.
type scanResult struct {
	summary Summary
	size    int64 // offset just past the last complete, valid line
	torn    int64 // bytes after size with no '\n' (only when allowTorn)
}

// scan reads r line by line, checking the chain. With allowTorn a final line
// without '\n' is reported in torn instead of being an error.
func scan(r io.Reader, allowTorn bool) (scanResult, error) {
	var (
		res scanResult
		c   chain
		buf []byte
	)
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		b, complete, err := readLine(br, buf[:0])
		buf = b
		if err != nil && !errors.Is(err, io.EOF) {
			if errors.Is(err, errLineTooLong) {
				return res, c.fail(fmt.Sprintf("line is longer than %d bytes", maxLineBytes))
			}
			return res, fmt.Errorf("reading audit log: %w", err)
		}
		if !complete {
			if len(b) == 0 {
				break // clean end of input
			}
			if allowTorn {
				res.torn = int64(len(b))
				break
			}
			return res, c.fail("missing trailing newline (torn final line)")
		}
		if verr := c.add(b); verr != nil {
			return res, verr
		}
		res.size += int64(len(b)) + 1
	}
	res.summary = Summary{Records: c.next, Head: c.head}
	return res, nil
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

// chain checks lines one after another.
type chain struct {
	next uint64    // seq the next line must carry
	head tlog.Hash // leaf hash of the last accepted line
}

func (c *chain) fail(reason string) *VerifyError {
	return &VerifyError{Line: int(c.next) + 1, Seq: c.next, Reason: reason}
}

// add checks one line (without '\n') and, if it is good, advances the chain.
func (c *chain) add(b []byte) *VerifyError {
	var l line
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&l); err != nil {
		return c.fail(jsonReason(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return c.fail("invalid JSON: data after the record")
	}
	if l.V != formatVersion {
		return c.fail(fmt.Sprintf("unsupported version %d, want %d", l.V, formatVersion))
	}
	if l.Seq != c.next {
		return c.fail(fmt.Sprintf("seq is %d, want %d (a record is missing, inserted or moved)", l.Seq, c.next))
	}
	if c.next == 0 {
		if l.Prev != "" {
			return c.fail("prev must be empty for seq 0")
		}
	} else if l.Prev != base64.StdEncoding.EncodeToString(c.head[:]) {
		return c.fail("prev does not match the leaf hash of the previous line")
	}
	if ts, err := time.Parse(timestampLayout, l.TS); err != nil || ts.Format(timestampLayout) != l.TS {
		return c.fail("ts is not a UTC timestamp with microseconds")
	}
	if err := validType(l.Type); err != nil {
		return c.fail(err.Error())
	}
	canon, err := json.Marshal(&l)
	if err != nil || !bytes.Equal(canon, b) {
		return c.fail("line is not in canonical form")
	}
	c.head = tlog.RecordHash(b)
	c.next++
	return nil
}

// jsonReason describes a decoding error without quoting the input.
func jsonReason(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("invalid JSON at byte %d", syn.Offset)
	case errors.As(err, &typ):
		return fmt.Sprintf("invalid JSON: field %q has the wrong type", typ.Field)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "invalid JSON: incomplete record"
	case strings.HasPrefix(err.Error(), "json: unknown field"):
		return "invalid JSON: unknown field"
	default:
		return "invalid JSON"
	}
}
