package audit

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"
)

// FuzzVerify feeds arbitrary bytes to Verify. It must never panic, and what
// it says must be consistent with the input.
func FuzzVerify(f *testing.F) {
	lines, _ := buildLog(f, 4)
	valid := joinLines(lines)
	f.Add(valid)
	f.Add([]byte{})
	f.Add([]byte("\n"))
	f.Add(valid[:len(valid)-1])
	f.Add(append(bytes.Clone(valid), valid...))
	f.Add([]byte(`{"v":1,"seq":0,"ts":"2026-11-25T18:00:03.123456Z","type":"startup","prev":""}` + "\n"))
	f.Add([]byte(`{"v":1,"seq":0,"ts":"2026-11-25T18:00:03.123456Z","type":"startup","prev":"","agent":"\u2028\ufffd<"}` + "\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Verify(bytes.NewReader(data))
		nl := uint64(bytes.Count(data, []byte{'\n'}))
		if err != nil {
			var verr *VerifyError
			if !errors.As(err, &verr) {
				t.Fatalf("in-memory Verify returned a non-VerifyError: %v", err)
			}
			if verr.Line < 1 || verr.Seq != uint64(verr.Line-1) || verr.Seq > nl || verr.Reason == "" {
				t.Fatalf("inconsistent error %+v for %d newlines", verr, nl)
			}
			return
		}
		if s.Records != nl {
			t.Fatalf("%d records but %d newlines", s.Records, nl)
		}
		if len(data) > 0 && data[len(data)-1] != '\n' {
			t.Fatal("accepted a log without a trailing newline")
		}
		if s.Records == 0 {
			if s.Head != (tlog.Hash{}) {
				t.Fatal("empty log with a head")
			}
			return
		}
		body := data[:len(data)-1]
		last := body[bytes.LastIndexByte(body, '\n')+1:]
		if s.Head != tlog.RecordHash(last) {
			t.Fatal("head is not the leaf hash of the last line")
		}
	})
}

// FuzzTamper flips bits in a valid log: any change before the last line is
// caught, and a change in the last line that still verifies moves the head
// (so a witness holding the head sees it).
func FuzzTamper(f *testing.F) {
	lines, hashes := buildLog(f, 6)
	valid := joinLines(lines)
	lastStart := len(valid) - len(lines[len(lines)-1]) - 1
	f.Add(uint(0), byte(1))
	f.Add(uint(len(valid)/2), byte(0x20))
	f.Add(uint(lastStart+20), byte(1))
	f.Add(uint(len(valid)-1), byte('\n'))
	f.Fuzz(func(t *testing.T, pos uint, xor byte) {
		if xor == 0 {
			return
		}
		data := bytes.Clone(valid)
		i := int(pos % uint(len(data)))
		data[i] ^= xor
		s, err := Verify(bytes.NewReader(data))
		if err != nil {
			return
		}
		if i < lastStart {
			t.Fatalf("flipping byte %d (before the last line) was not detected", i)
		}
		if s.Head == hashes[len(hashes)-1] {
			t.Fatal("a changed log verified with the same head")
		}
	})
}

// FuzzEncodeRoundTrip checks that whatever a caller puts in a Record, the
// writer's line verifies (it is canonical) or is rejected cleanly.
func FuzzEncodeRoundTrip(f *testing.F) {
	f.Add("credential.use", "agent-7", "/v1/messages?x=<y>&z", "d\u2028\xff", uint16(443), int64(-1))
	f.Add("", "", "", "", uint16(0), int64(0))
	f.Fuzz(func(t *testing.T, typ, agent, path, detail string, port uint16, n int64) {
		var prev tlog.Hash
		prev[0] = 7
		r := Record{Type: typ, Agent: agent, Path: path, Detail: detail, Port: port, Bytes: n, Status: int(n)}
		b, err := encodeRecord(r, 1, prev, time.Unix(0, n).UTC())
		if err != nil {
			return
		}
		if bytes.IndexByte(b, '\n') >= 0 {
			t.Fatal("encoded line contains a newline")
		}
		c := chain{next: 1, head: prev}
		if verr := c.add(b); verr != nil {
			t.Fatalf("writer output does not verify: %v\n%s", verr, b)
		}
	})
}
