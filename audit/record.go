package audit

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/mod/sumdb/tlog"
)

// Record types written by wirken today. Type is a free string restricted to
// [a-z0-9._-]; these constants name the ones in use.
const (
	TypeStartup         = "startup"
	TypeShutdown        = "shutdown"
	TypeRecovered       = "recovered"
	TypeConnDeny        = "conn.deny"
	TypeConnPassthrough = "conn.passthrough"
	TypeRequestDeny     = "request.deny"
	TypeRequestAllow    = "request.allow"
	TypeCredentialUse   = "credential.use"
	TypeRequestResult   = "request.result"
	TypePolicyLoad      = "policy.load"

	// TypeCheckpoint and TypeSegment are written by the log itself; Append
	// refuses them. A checkpoint's Detail is a signed C2SP tlog-checkpoint
	// note for the tree of all records before it (size == its seq). A
	// segment record starts every segment after the first; its Detail is
	// the tree size (== its seq) and the frontier hashes, so a segment can
	// be verified without the ones before it.
	TypeCheckpoint = "checkpoint"
	TypeSegment    = "segment"
)

const (
	formatVersion   = 1
	maxLineBytes    = 64 << 10 // one line, without its '\n'
	maxTypeBytes    = 64
	timestampLayout = "2006-01-02T15:04:05.000000Z"
)

// Record is what a caller asks the log to write. The log adds the version,
// seq, timestamp and prev hash. Zero-valued fields are left out of the line.
// Strings must already be redacted: the log never sees secret values.
type Record struct {
	Type       string
	Agent      string
	Rule       string
	Credential string
	Method     string
	Host       string
	Port       uint16
	Path       string
	Dst        string // original destination ip:port
	Decision   string
	Reason     string
	Status     int
	Bytes      int64
	PID        uint32
	UID        uint32
	Comm       string // advisory: the calling task's name, set by the process itself
	TraceID    string
	SpanID     string
	Policy     string // policy digest
	Generation uint64
	Detail     string
	Model      string // LLM model the response named
	TokensIn   int64  // LLM input tokens the response reported
	TokensOut  int64  // LLM output tokens the response reported
	CredVer    int    // vault version of the credential's secret
}

// Entry identifies a durable record: its seq and its RFC 6962 leaf hash.
type Entry struct {
	Seq  uint64
	Hash tlog.Hash
}

// HashString returns the leaf hash in base64 standard encoding, the form
// used in the prev field and on spans.
func (e Entry) HashString() string {
	return base64.StdEncoding.EncodeToString(e.Hash[:])
}

func (e Entry) isZero() bool {
	return e.Seq == 0 && e.Hash == (tlog.Hash{})
}

// line is the on-disk form of one record. The field order is the format:
// never reorder, only append new optional fields at the end.
type line struct {
	V          int    `json:"v"`
	Seq        uint64 `json:"seq"`
	TS         string `json:"ts"`
	Type       string `json:"type"`
	Prev       string `json:"prev"`
	Agent      string `json:"agent,omitempty"`
	Rule       string `json:"rule,omitempty"`
	Credential string `json:"credential,omitempty"`
	Method     string `json:"method,omitempty"`
	Host       string `json:"host,omitempty"`
	Port       uint16 `json:"port,omitempty"`
	Path       string `json:"path,omitempty"`
	Dst        string `json:"dst,omitempty"`
	Decision   string `json:"decision,omitempty"`
	Reason     string `json:"reason,omitempty"`
	Status     int    `json:"status,omitempty"`
	Bytes      int64  `json:"bytes,omitempty"`
	PID        uint32 `json:"pid,omitempty"`
	UID        uint32 `json:"uid,omitempty"`
	Comm       string `json:"comm,omitempty"`
	TraceID    string `json:"trace_id,omitempty"`
	SpanID     string `json:"span_id,omitempty"`
	Policy     string `json:"policy,omitempty"`
	Generation uint64 `json:"generation,omitempty"`
	Detail     string `json:"detail,omitempty"`
	Model      string `json:"model,omitempty"`
	TokensIn   int64  `json:"tokens_in,omitempty"`
	TokensOut  int64  `json:"tokens_out,omitempty"`
	CredVer    int    `json:"cred_ver,omitempty"`
}

var (
	errEmptyType   = errors.New("record type is empty")
	errBadType     = errors.New("record type must be at most 64 bytes of [a-z0-9._-]")
	errLineTooLong = fmt.Errorf("record is longer than %d bytes once encoded", maxLineBytes)
	errReserved    = errors.New("record type is reserved for the log itself")
)

// validType reports whether t is a well-formed record type.
func validType(t string) error {
	if t == "" {
		return errEmptyType
	}
	if len(t) > maxTypeBytes {
		return errBadType
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '.' && c != '_' && c != '-' {
			return errBadType
		}
	}
	return nil
}

// utf8Clean replaces invalid UTF-8 so that the encoding round-trips exactly
// (json.Marshal would otherwise write \ufffd escapes that re-encode
// differently, and the line would not be canonical).
func utf8Clean(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// encodeRecord returns the canonical line (without '\n') for r at seq, chained
// to prev (ignored for seq 0). Errors never quote field values.
func encodeRecord(r Record, seq uint64, prev tlog.Hash, ts time.Time) ([]byte, error) {
	if err := validType(r.Type); err != nil {
		return nil, err
	}
	l := line{
		V:          formatVersion,
		Seq:        seq,
		TS:         ts.UTC().Format(timestampLayout),
		Type:       r.Type,
		Agent:      utf8Clean(r.Agent),
		Rule:       utf8Clean(r.Rule),
		Credential: utf8Clean(r.Credential),
		Method:     utf8Clean(r.Method),
		Host:       utf8Clean(r.Host),
		Port:       r.Port,
		Path:       utf8Clean(r.Path),
		Dst:        utf8Clean(r.Dst),
		Decision:   utf8Clean(r.Decision),
		Reason:     utf8Clean(r.Reason),
		Status:     r.Status,
		Bytes:      r.Bytes,
		PID:        r.PID,
		UID:        r.UID,
		Comm:       utf8Clean(r.Comm),
		TraceID:    utf8Clean(r.TraceID),
		SpanID:     utf8Clean(r.SpanID),
		Policy:     utf8Clean(r.Policy),
		Generation: r.Generation,
		Detail:     utf8Clean(r.Detail),
		Model:      utf8Clean(r.Model),
		TokensIn:   r.TokensIn,
		TokensOut:  r.TokensOut,
		CredVer:    r.CredVer,
	}
	if seq > 0 {
		l.Prev = encodeHash(prev)
	}
	b, err := json.Marshal(&l)
	if err != nil {
		// Unreachable for this struct; do not echo the value.
		return nil, errors.New("encoding record: json marshal failed")
	}
	if len(b) > maxLineBytes {
		return nil, errLineTooLong
	}
	return b, nil
}
