package mitm

import (
	"bytes"
	"compress/gzip"
	"net/http"
	"strings"
	"testing"

	"github.com/wirken/wirken/internal/fuzzseed"
)

func TestUsageReader(t *testing.T) {
	gz := func(s string) string {
		var b bytes.Buffer
		w := gzip.NewWriter(&b)
		w.Write([]byte(s))
		w.Close()
		return b.String()
	}
	tests := []struct {
		name, ctype, enc, body string
		want                   Usage
	}{
		{
			name: "openai chat", ctype: "application/json",
			body: `{"id":"x","model":"gpt-4o-2024","choices":[],"usage":{"prompt_tokens":11,"completion_tokens":22,"total_tokens":33}}`,
			want: Usage{"gpt-4o-2024", 11, 22},
		},
		{
			name: "anthropic messages", ctype: "application/json; charset=utf-8",
			body: `{"type":"message","model":"claude-x","content":[{"type":"text","text":"hi"}],"usage":{"input_tokens":5,"output_tokens":7}}`,
			want: Usage{"claude-x", 5, 7},
		},
		{
			name: "gzip json", ctype: "application/json", enc: "gzip",
			body: gz(`{"model":"m","usage":{"input_tokens":1,"output_tokens":2}}`),
			want: Usage{"m", 1, 2},
		},
		{
			name: "openai stream with usage in the last chunk", ctype: "text/event-stream",
			body: "data: {\"model\":\"gpt-s\",\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n" +
				"data: {\"model\":\"gpt-s\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\ndata: [DONE]\n\n",
			want: Usage{"gpt-s", 3, 4},
		},
		{
			name: "anthropic stream", ctype: "text/event-stream",
			body: "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-s\",\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}}\n\n" +
				"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"x\"}}\n\n" +
				"event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":15}}\n\n",
			want: Usage{"claude-s", 9, 15},
		},
		{name: "not json", ctype: "text/html", body: `{"model":"no"}`, want: Usage{}},
		{name: "brotli", ctype: "application/json", enc: "br", body: "???", want: Usage{}},
		{name: "garbage json", ctype: "application/json", body: `{"model":`, want: Usage{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{"Content-Type": {tt.ctype}}
			if tt.enc != "" {
				h.Set("Content-Encoding", tt.enc)
			}
			r := newUsageReader(&http.Response{Header: h, ContentLength: -1})
			var got Usage
			if r != nil {
				// Feed in awkward pieces: lines and JSON split across reads.
				for b := []byte(tt.body); len(b) > 0; {
					n := min(7, len(b))
					r.write(b[:n])
					b = b[n:]
				}
				got = r.usage()
			}
			if got != tt.want {
				t.Fatalf("usage = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestUsageReaderBounds(t *testing.T) {
	r := newUsageReader(&http.Response{Header: http.Header{"Content-Type": {"application/json"}}, ContentLength: -1})
	r.write([]byte(`{"model":"m","x":"` + strings.Repeat("a", maxUsageBody) + `"}`))
	if got := r.usage(); got.Found() || r.buf.Len() != 0 {
		t.Fatalf("an oversized body was kept (%d bytes) or parsed: %+v", r.buf.Len(), got)
	}
	if newUsageReader(&http.Response{Header: http.Header{"Content-Type": {"application/json"}}, ContentLength: maxUsageBody + 1}) != nil {
		t.Fatal("a body declared too large is watched")
	}
}

func FuzzUsageReader(f *testing.F) {
	seeds := fuzzseed.New(f)
	seeds.Add([]byte("data: {\"model\":\"m\",\"usage\":{\"input_tokens\":1}}\n\n"), true)
	seeds.Add([]byte(`{"model":"m","usage":{"prompt_tokens":1}}`), false)
	f.Fuzz(func(t *testing.T, body []byte, sse bool) {
		ct := "application/json"
		if sse {
			ct = "text/event-stream"
		}
		r := newUsageReader(&http.Response{Header: http.Header{"Content-Type": {ct}}, ContentLength: -1})
		r.write(body)
		u := r.usage()
		if u.InputTokens < 0 || u.OutputTokens < 0 {
			t.Fatalf("negative token counts: %+v", u)
		}
	})
}
