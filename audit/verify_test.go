package audit

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"golang.org/x/mod/sumdb/tlog"
)

// buildLog returns a valid n-record log (as lines without '\n') written by
// the real encoder, and the leaf hash of each line.
func buildLog(t testing.TB, n int) ([][]byte, []tlog.Hash) {
	t.Helper()
	var (
		lines  [][]byte
		hashes []tlog.Hash
		head   tlog.Hash
	)
	ts := time.Date(2026, 11, 25, 18, 0, 3, 0, time.UTC)
	for i := range n {
		b, err := encodeRecord(Record{
			Type: TypeCredentialUse, Agent: "agent-7", Credential: "anthropic-prod",
			Method: "POST", Host: "api.anthropic.com", Port: 443, Path: "/v1/messages",
		}, uint64(i), head, ts)
		if err != nil {
			t.Fatal(err)
		}
		head = tlog.RecordHash(b)
		lines = append(lines, b)
		hashes = append(hashes, head)
	}
	return lines, hashes
}

func joinLines(lines [][]byte) []byte {
	var buf bytes.Buffer
	for _, l := range lines {
		buf.Write(l)
		buf.WriteByte('\n')
	}
	return buf.Bytes()
}

func cloneLines(lines [][]byte) [][]byte {
	out := make([][]byte, len(lines))
	for i, l := range lines {
		out[i] = bytes.Clone(l)
	}
	return out
}

func replaceIn(t testing.TB, line []byte, old, new string) []byte {
	t.Helper()
	if !bytes.Contains(line, []byte(old)) {
		t.Fatalf("line has no %q: %s", old, line)
	}
	return bytes.Replace(line, []byte(old), []byte(new), 1)
}

func TestVerifyValid(t *testing.T) {
	for _, n := range []int{0, 1, 2, 50} {
		lines, hashes := buildLog(t, n)
		s, err := Verify(bytes.NewReader(joinLines(lines)))
		if err != nil {
			t.Fatalf("n=%d: %v", n, err)
		}
		var head tlog.Hash
		if n > 0 {
			head = hashes[n-1]
		}
		if s.Records != uint64(n) || s.Head != head {
			t.Fatalf("n=%d: summary %+v", n, s)
		}
	}
}

func TestVerifyDetectsTampering(t *testing.T) {
	const n = 10
	base, hashes := buildLog(t, n)
	tests := []struct {
		name   string
		tamper func(t *testing.T, lines [][]byte) []byte // returns the whole file
		seq    uint64
		reason string
	}{
		{
			name: "flip a byte in a payload field",
			tamper: func(t *testing.T, l [][]byte) []byte {
				l[4] = replaceIn(t, l[4], "agent-7", "agent-8")
				return joinLines(l)
			},
			seq: 5, reason: "prev does not match",
		},
		{
			name: "flip a byte in prev",
			tamper: func(t *testing.T, l [][]byte) []byte {
				i := bytes.Index(l[4], []byte(`"prev":"`)) + len(`"prev":"`)
				l[4][i] ^= 0x01
				return joinLines(l)
			},
			seq: 4, reason: "prev does not match",
		},
		{
			name: "flip a byte in seq",
			tamper: func(t *testing.T, l [][]byte) []byte {
				l[4] = replaceIn(t, l[4], `"seq":4`, `"seq":5`)
				return joinLines(l)
			},
			seq: 4, reason: "seq is 5, want 4",
		},
		{
			name: "flip a structural byte",
			tamper: func(t *testing.T, l [][]byte) []byte {
				l[4][0] = '['
				return joinLines(l)
			},
			seq: 4, reason: "invalid JSON",
		},
		{
			name: "flip a byte in the timestamp",
			tamper: func(t *testing.T, l [][]byte) []byte {
				l[4] = replaceIn(t, l[4], "18:00:03", "18:00:0x")
				return joinLines(l)
			},
			seq: 4, reason: "ts is not",
		},
		{
			name: "delete a line",
			tamper: func(t *testing.T, l [][]byte) []byte {
				return joinLines(append(l[:4], l[5:]...))
			},
			seq: 4, reason: "seq is 5, want 4",
		},
		{
			name: "delete the first line",
			tamper: func(t *testing.T, l [][]byte) []byte {
				return joinLines(l[1:])
			},
			seq: 0, reason: "seq is 1, want 0",
		},
		{
			name: "swap two lines",
			tamper: func(t *testing.T, l [][]byte) []byte {
				l[4], l[5] = l[5], l[4]
				return joinLines(l)
			},
			seq: 4, reason: "seq is 5, want 4",
		},
		{
			name: "insert a well-formed forged line",
			tamper: func(t *testing.T, l [][]byte) []byte {
				forged, err := encodeRecord(Record{Type: TypeRequestAllow, Agent: "evil"}, 4, hashes[3], time.Now())
				if err != nil {
					t.Fatal(err)
				}
				out := append(append(append([][]byte{}, l[:4]...), forged), l[4:]...)
				return joinLines(out)
			},
			seq: 5, reason: "seq is 4, want 5",
		},
		{
			name: "duplicate a line",
			tamper: func(t *testing.T, l [][]byte) []byte {
				out := append(append(append([][]byte{}, l[:5]...), l[4]), l[5:]...)
				return joinLines(out)
			},
			seq: 5, reason: "seq is 4, want 5",
		},
		{
			name: "insert a blank line",
			tamper: func(t *testing.T, l [][]byte) []byte {
				out := append(append(append([][]byte{}, l[:4]...), []byte{}), l[4:]...)
				return joinLines(out)
			},
			seq: 4, reason: "invalid JSON",
		},
		{
			name: "truncate mid-line",
			tamper: func(t *testing.T, l [][]byte) []byte {
				all := joinLines(l[:7])
				return append(all, l[7][:len(l[7])/2]...)
			},
			seq: 7, reason: "missing trailing newline",
		},
		{
			name: "drop only the final newline",
			tamper: func(t *testing.T, l [][]byte) []byte {
				all := joinLines(l)
				return all[:len(all)-1]
			},
			seq: 9, reason: "missing trailing newline",
		},
		{
			name: "version 2",
			tamper: func(t *testing.T, l [][]byte) []byte {
				l[0] = replaceIn(t, l[0], `"v":1`, `"v":2`)
				return joinLines(l)
			},
			seq: 0, reason: "unsupported version 2",
		},
		{
			name: "prev on the first record",
			tamper: func(t *testing.T, l [][]byte) []byte {
				l[0] = replaceIn(t, l[0], `"prev":""`, `"prev":"AAAA"`)
				return joinLines(l)
			},
			seq: 0, reason: "prev must be empty",
		},
		{
			name: "extra whitespace",
			tamper: func(t *testing.T, l [][]byte) []byte {
				l[3] = replaceIn(t, l[3], `,"agent"`, `, "agent"`)
				return joinLines(l)
			},
			seq: 3, reason: "canonical",
		},
		{
			name: "CRLF line ending",
			tamper: func(t *testing.T, l [][]byte) []byte {
				l[3] = append(l[3], '\r')
				return joinLines(l)
			},
			seq: 3, reason: "canonical",
		},
		{
			name: "duplicate key (last one wins in encoding/json)",
			tamper: func(t *testing.T, l [][]byte) []byte {
				l[3] = replaceIn(t, l[3], `,"agent":"agent-7"`, `,"agent":"agent-7","agent":"agent-7"`)
				return joinLines(l)
			},
			seq: 3, reason: "canonical",
		},
		{
			name: "key in another case (encoding/json matches case-insensitively)",
			tamper: func(t *testing.T, l [][]byte) []byte {
				l[3] = replaceIn(t, l[3], `"agent":`, `"AGENT":`)
				return joinLines(l)
			},
			seq: 3, reason: "canonical",
		},
		{
			name: "unknown field",
			tamper: func(t *testing.T, l [][]byte) []byte {
				l[3] = replaceIn(t, l[3], `"agent":`, `"agentx":`)
				return joinLines(l)
			},
			seq: 3, reason: "unknown field",
		},
		{
			name: "data after the record",
			tamper: func(t *testing.T, l [][]byte) []byte {
				l[3] = append(l[3], []byte(`{}`)...)
				return joinLines(l)
			},
			seq: 3, reason: "data after the record",
		},
		{
			name: "wrong type for seq",
			tamper: func(t *testing.T, l [][]byte) []byte {
				l[3] = replaceIn(t, l[3], `"seq":3`, `"seq":"3"`)
				return joinLines(l)
			},
			seq: 3, reason: `field "seq" has the wrong type`,
		},
		{
			name: "empty type",
			tamper: func(t *testing.T, l [][]byte) []byte {
				l[3] = replaceIn(t, l[3], `"type":"credential.use"`, `"type":""`)
				return joinLines(l)
			},
			seq: 3, reason: "record type is empty",
		},
		{
			name: "line too long",
			tamper: func(t *testing.T, l [][]byte) []byte {
				l[3] = replaceIn(t, l[3], `"agent-7"`, `"`+strings.Repeat("a", maxLineBytes)+`"`)
				return joinLines(l)
			},
			seq: 3, reason: "longer than",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data := tc.tamper(t, cloneLines(base))
			_, err := Verify(bytes.NewReader(data))
			var verr *VerifyError
			if !errors.As(err, &verr) {
				t.Fatalf("Verify = %v, want a *VerifyError", err)
			}
			if verr.Seq != tc.seq || verr.Line != int(tc.seq)+1 {
				t.Fatalf("error at line %d seq %d, want seq %d: %v", verr.Line, verr.Seq, tc.seq, verr)
			}
			if !strings.Contains(verr.Reason, tc.reason) {
				t.Fatalf("reason %q, want it to mention %q", verr.Reason, tc.reason)
			}
		})
	}
}

func TestVerifyErrorFormat(t *testing.T) {
	e := &VerifyError{Line: 12, Seq: 11, Reason: "prev does not match the leaf hash of the previous line"}
	want := "line 12 (seq 11): prev does not match the leaf hash of the previous line"
	if e.Error() != want {
		t.Fatalf("Error() = %q, want %q", e.Error(), want)
	}
}

// TestVerifyErrorsDoNotQuoteTheLog puts a canary in places a JSON error
// message would normally echo, and checks Verify never repeats it.
func TestVerifyErrorsDoNotQuoteTheLog(t *testing.T) {
	c := canary(t)
	lines, _ := buildLog(t, 2)
	tests := map[string][]byte{
		"unknown field named after the canary": replaceIn(t, bytes.Clone(lines[1]), `"agent":`, `"`+c+`":`),
		"syntax error next to the canary":      []byte(`{"v":1,` + c + `}`),
		"canary as a number":                   replaceIn(t, bytes.Clone(lines[1]), `"seq":1`, `"seq":`+c),
		"canary in a non-canonical line":       replaceIn(t, bytes.Clone(lines[1]), `"agent-7"`, `"`+c+`" `),
	}
	for name, bad := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := Verify(bytes.NewReader(joinLines([][]byte{lines[0], bad})))
			if err == nil {
				t.Fatal("Verify accepted a bad line")
			}
			if strings.Contains(err.Error(), c) || strings.Contains(err.Error(), c[9:]) {
				t.Fatalf("error quotes the log: %v", err)
			}
		})
	}
}

func TestVerifyReadError(t *testing.T) {
	lines, _ := buildLog(t, 3)
	r := io.MultiReader(bytes.NewReader(joinLines(lines)), iotest.ErrReader(errors.New("disk gone")))
	_, err := Verify(r)
	var verr *VerifyError
	if err == nil || errors.As(err, &verr) {
		t.Fatalf("Verify = %v, want a plain read error", err)
	}
	if !strings.Contains(err.Error(), "disk gone") {
		t.Fatalf("read error not wrapped: %v", err)
	}
}
