package audit

import (
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/tlog"
)

func TestEncodeRecordGolden(t *testing.T) {
	ts := fixedClock()()
	var prev tlog.Hash
	for i := range prev {
		prev[i] = byte(i)
	}
	prevB64 := base64.StdEncoding.EncodeToString(prev[:])
	tests := []struct {
		name string
		rec  Record
		seq  uint64
		want string
	}{
		{
			name: "first record has empty prev and only the fixed fields",
			rec:  Record{Type: TypeStartup},
			seq:  0,
			want: `{"v":1,"seq":0,"ts":"2026-11-25T18:00:03.123456Z","type":"startup","prev":""}`,
		},
		{
			name: "every field, in the fixed order",
			rec: Record{
				Type: TypeCredentialUse, Agent: "a", Rule: "r", Credential: "c", Method: "POST",
				Host: "h", Port: 443, Path: "/p", Dst: "1.2.3.4:443", Decision: "allow",
				Reason: "ok", Status: 200, Bytes: 5, PID: 7, UID: 1000, Comm: "curl", TraceID: "t",
				SpanID: "s", Policy: "sha256:x", Generation: 3, Detail: "d",
			},
			seq: 2,
			want: `{"v":1,"seq":2,"ts":"2026-11-25T18:00:03.123456Z","type":"credential.use","prev":"` + prevB64 +
				`","agent":"a","rule":"r","credential":"c","method":"POST","host":"h","port":443,"path":"/p",` +
				`"dst":"1.2.3.4:443","decision":"allow","reason":"ok","status":200,"bytes":5,"pid":7,"uid":1000,"comm":"curl",` +
				`"trace_id":"t","span_id":"s","policy":"sha256:x","generation":3,"detail":"d"}`,
		},
		{
			name: "invalid UTF-8 is replaced so the line stays canonical",
			rec:  Record{Type: TypeRequestDeny, Path: "/a\xffb"},
			seq:  1,
			want: `{"v":1,"seq":1,"ts":"2026-11-25T18:00:03.123456Z","type":"request.deny","prev":"` + prevB64 +
				`","path":"/a` + "\uFFFD" + `b"}`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := encodeRecord(tc.rec, tc.seq, prev, ts)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tc.want {
				t.Fatalf("got\n%s\nwant\n%s", b, tc.want)
			}
			// Whatever the writer produces, the verifier's canonical check accepts.
			c := chainAt(tc.seq, prev)
			if verr := c.add(b); verr != nil {
				t.Fatalf("writer output does not verify: %v", verr)
			}
		})
	}
}

func TestEncodeRecordRejects(t *testing.T) {
	c := canary(t)
	tests := []struct {
		name string
		rec  Record
	}{
		{"empty type", Record{}},
		{"upper-case type", Record{Type: "Startup"}},
		{"type with space", Record{Type: "a b"}},
		{"type too long", Record{Type: strings.Repeat("a", 65)}},
		{"line too long", Record{Type: TypeRequestAllow, Detail: c + strings.Repeat("x", maxLineBytes)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := encodeRecord(tc.rec, 0, tlog.Hash{}, fixedClock()())
			if err == nil {
				t.Fatal("want an error")
			}
			if strings.Contains(err.Error(), c) {
				t.Fatal("error leaks the record's content")
			}
		})
	}
}

func TestLeafHashIsRFC6962(t *testing.T) {
	b, err := encodeRecord(Record{Type: TypeStartup}, 0, tlog.Hash{}, fixedClock()())
	if err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(append([]byte{0x00}, b...))
	if got := tlog.RecordHash(b); got != tlog.Hash(want) {
		t.Fatalf("leaf hash %x, want SHA-256(0x00||line) %x", got, want)
	}
}

func TestEntryHashString(t *testing.T) {
	tests := []struct {
		name string
		e    Entry
		want string
		zero bool
	}{
		{"zero entry", Entry{}, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", true},
		{"seq 0 with a hash is not zero", Entry{Hash: tlog.Hash{0xff}}, "/wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", false},
		{"seq without hash is not zero", Entry{Seq: 3}, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.e.HashString(); got != tc.want {
				t.Fatalf("HashString() = %q, want %q", got, tc.want)
			}
			if got := tc.e.isZero(); got != tc.zero {
				t.Fatalf("isZero() = %v, want %v", got, tc.zero)
			}
		})
	}
}
