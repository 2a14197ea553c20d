package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/tlog"
)

// LogRecord is one record as read back from the log by ParseRecord.
type LogRecord struct {
	Seq  uint64
	Time time.Time // UTC, microsecond precision
	Prev tlog.Hash // leaf hash of record Seq-1; zero for seq 0
	Hash tlog.Hash // leaf hash of this line
	Record
}

// ParseRecord parses one log line (with or without its trailing '\n') with
// the same strictness as Verify: canonical JSON of the known fields,
// version 1, a valid type and timestamp. It checks the line on its own,
// not its place in the chain. Errors never quote the line.
func ParseRecord(line []byte) (LogRecord, error) {
	line = bytes.TrimSuffix(line, []byte{'\n'})
	if len(line) > maxLineBytes {
		return LogRecord{}, fmt.Errorf("parsing audit record: line is longer than %d bytes", maxLineBytes)
	}
	l, reason := decodeLine(line)
	if reason == "" {
		reason = checkForm(&l, line)
	}
	if reason != "" {
		return LogRecord{}, fmt.Errorf("parsing audit record: %s", reason)
	}
	var prev tlog.Hash
	if l.Seq > 0 {
		h, err := decodeHash(l.Prev)
		if err != nil {
			return LogRecord{}, errors.New("parsing audit record: prev is not a base64 leaf hash")
		}
		prev = h
	} else if l.Prev != "" {
		return LogRecord{}, errors.New("parsing audit record: prev must be empty for seq 0")
	}
	ts, _ := time.Parse(timestampLayout, l.TS) // checked by checkForm
	return LogRecord{
		Seq:  l.Seq,
		Time: ts,
		Prev: prev,
		Hash: tlog.RecordHash(line),
		Record: Record{
			Type: l.Type, Agent: l.Agent, Rule: l.Rule, Credential: l.Credential,
			Method: l.Method, Host: l.Host, Port: l.Port, Path: l.Path, Dst: l.Dst,
			Decision: l.Decision, Reason: l.Reason, Status: l.Status, Bytes: l.Bytes,
			PID: l.PID, UID: l.UID, TraceID: l.TraceID, SpanID: l.SpanID,
			Policy: l.Policy, Generation: l.Generation, Detail: l.Detail,
			Model: l.Model, TokensIn: l.TokensIn, TokensOut: l.TokensOut, CredVer: l.CredVer,
		},
	}, nil
}

// decodeLine decodes one line strictly (known fields only, one JSON value)
// and checks the version. It returns a reason on failure.
func decodeLine(b []byte) (line, string) {
	var l line
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&l); err != nil {
		return l, jsonReason(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return l, "invalid JSON: data after the record"
	}
	if l.V != formatVersion {
		return l, fmt.Sprintf("unsupported version %d, want %d", l.V, formatVersion)
	}
	return l, ""
}

// checkForm checks what decodeLine does not: the timestamp, the type and
// that b is the canonical encoding of l.
func checkForm(l *line, b []byte) string {
	if ts, err := time.Parse(timestampLayout, l.TS); err != nil || ts.Format(timestampLayout) != l.TS {
		return "ts is not a UTC timestamp with microseconds"
	}
	if err := validType(l.Type); err != nil {
		return err.Error()
	}
	canon, err := json.Marshal(l)
	if err != nil || !bytes.Equal(canon, b) {
		return "line is not in canonical form"
	}
	return ""
}

// onlyDetail reports whether l carries nothing but the fixed fields and
// Detail, as the log's own records (checkpoint, segment) do.
func onlyDetail(l *line) bool {
	rest := *l
	rest.V, rest.Seq, rest.TS, rest.Type, rest.Prev, rest.Detail = 0, 0, "", "", "", ""
	return rest == line{}
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
