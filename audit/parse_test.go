package audit

import (
	"errors"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"
)

func TestParseRecord(t *testing.T) {
	ts := time.Date(2026, 11, 25, 18, 0, 3, 123456000, time.UTC)
	prev := tlog.Hash{7}
	rec := Record{
		Type: TypeCredentialUse, Agent: "agent-7", Credential: "anthropic-prod", Method: "POST",
		Host: "api.anthropic.com", Port: 443, Path: "/v1/messages", Status: 200, Detail: "d",
	}
	b, err := encodeRecord(rec, 5, prev, ts)
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range [][]byte{b, append(b, '\n')} {
		got, err := ParseRecord(in)
		if err != nil {
			t.Fatal(err)
		}
		if got.Seq != 5 || !got.Time.Equal(ts) || got.Prev != prev || got.Hash != tlog.RecordHash(b) || got.Record != rec {
			t.Fatalf("ParseRecord = %+v", got)
		}
	}
	first, _ := encodeRecord(Record{Type: TypeStartup}, 0, tlog.Hash{}, ts)
	if got, err := ParseRecord(first); err != nil || got.Prev != (tlog.Hash{}) || got.Seq != 0 {
		t.Fatalf("seq 0: %+v, %v", got, err)
	}

	c := canary(t)
	bad := map[string]string{
		"not JSON":             c,
		"unknown field":        strings.Replace(string(b), `"agent":`, `"`+c+`":`, 1),
		"not canonical":        strings.Replace(string(b), `"agent-7"`, `"`+c+`" `, 1),
		"version 2":            strings.Replace(string(b), `{"v":1,`, `{"v":2,`, 1),
		"bad timestamp":        strings.Replace(string(b), `.123456Z`, `.123Z`, 1),
		"bad prev":             strings.Replace(string(b), `"prev":"`, `"prev":"x`, 1),
		"prev on seq 0":        strings.Replace(string(first), `"prev":""`, `"prev":"`+encodeHash(prev)+`"`, 1),
		"bad type":             strings.Replace(string(b), `"credential.use"`, `"Credential"`, 1),
		"too long":             strings.Replace(string(b), `"d"`, `"`+strings.Repeat("d", maxLineBytes)+`"`, 1),
		"two records":          string(b) + string(b),
		"embedded newline":     string(b) + "\n" + string(b),
		"short prev":           strings.Replace(string(b), encodeHash(prev), "AAAA", 1),
		"unpadded prev":        strings.Replace(string(b), encodeHash(prev), strings.TrimRight(encodeHash(prev), "="), 1),
		"canary in wrong type": strings.Replace(string(b), `"seq":5`, `"seq":"`+c+`"`, 1),
	}
	for name, in := range bad {
		t.Run(name, func(t *testing.T) {
			_, err := ParseRecord([]byte(in))
			if err == nil {
				t.Fatal("accepted")
			}
			if strings.Contains(err.Error(), c) || strings.Contains(err.Error(), c[9:]) {
				t.Fatalf("error quotes the line: %v", err)
			}
		})
	}
}

func TestVerifyErrorWithPath(t *testing.T) {
	e := &VerifyError{Path: "/var/lib/wirken/audit.000002.jsonl", Line: 3, Seq: 1002, Reason: "r", Err: ErrRolledBack}
	if got, want := e.Error(), "/var/lib/wirken/audit.000002.jsonl: line 3 (seq 1002): r"; got != want {
		t.Fatalf("Error() = %q, want %q", got, want)
	}
	if !errors.Is(e, ErrRolledBack) || errors.Is(e, ErrRewritten) {
		t.Fatal("Unwrap does not expose Err")
	}
}

// TestVerifyErrorsDoNotQuoteCheckpoints: a checkpoint or segment detail
// that carries a canary is reported without it.
func TestVerifyErrorsDoNotQuoteCheckpoints(t *testing.T) {
	c := canary(t)
	lines, s := signedLog(t)
	for name, detail := range map[string]string{
		"checkpoint": "o\n1\n" + c + "\n\n\u2014 o " + c + "\n",
		"segment":    "3 " + c,
	} {
		t.Run(name, func(t *testing.T) {
			at := 9
			typ := TypeCheckpoint
			if name == "segment" {
				at, typ = 6, TypeSegment
			}
			forged := rechainFrom(t, lines, at, func(i int, r *LogRecord) {
				if i == at {
					r.Type, r.Detail, r.Agent = typ, detail, ""
				}
			})
			_, err := Verify(strings.NewReader(string(joinLines(forged))), WithVerifierKey(s.VerifierKey()))
			var verr *VerifyError
			if !errors.As(err, &verr) || verr.Seq != uint64(at) {
				t.Fatalf("Verify = %v, want an error at seq %d", err, at)
			}
			if strings.Contains(err.Error(), c) || strings.Contains(err.Error(), c[9:]) {
				t.Fatalf("error quotes the log: %v", err)
			}
		})
	}
}
