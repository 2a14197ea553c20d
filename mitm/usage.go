package mitm

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"strings"
)

// Usage is what an LLM API's response says the request used: the model and its token counts,
// read from the usage fields of OpenAI- and Anthropic-style JSON bodies and server-sent events.
type Usage struct {
	Model        string
	InputTokens  int64
	OutputTokens int64
}

// Found says whether the response reported anything.
func (u Usage) Found() bool { return u.Model != "" || u.InputTokens != 0 || u.OutputTokens != 0 }

const (
	maxUsageBody  = 1 << 20  // JSON bodies larger than this are not read for usage
	maxUsageLine  = 64 << 10 // nor are longer event lines
	maxInflatedSz = 4 << 20
)

// usageReader watches a response body go by and picks out the usage fields, without holding
// more than one bounded JSON body or one event line. It never changes what it sees.
type usageReader struct {
	sse      bool
	gzipped  bool
	buf      bytes.Buffer // the JSON body, or the current event line
	overflow bool
	u        Usage
}

// newUsageReader returns a watcher for resp, or nil when resp cannot carry LLM usage.
func newUsageReader(resp *http.Response) *usageReader {
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	enc := resp.Header.Get("Content-Encoding")
	switch {
	case mt == "text/event-stream" && enc == "":
		return &usageReader{sse: true}
	case mt == "application/json" && (enc == "" || enc == "gzip"):
		if resp.ContentLength > maxUsageBody {
			return nil
		}
		return &usageReader{gzipped: enc == "gzip"}
	}
	return nil
}

func (r *usageReader) write(p []byte) {
	if !r.sse {
		if r.overflow || r.buf.Len()+len(p) > maxUsageBody {
			r.overflow = true
			r.buf.Reset()
			return
		}
		r.buf.Write(p)
		return
	}
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			r.appendLine(p)
			return
		}
		r.appendLine(p[:i])
		r.line()
		p = p[i+1:]
	}
}

func (r *usageReader) appendLine(p []byte) {
	if r.overflow || r.buf.Len()+len(p) > maxUsageLine {
		r.overflow = true
		return
	}
	r.buf.Write(p)
}

// line handles one complete event-stream line: only "data:" lines carry JSON.
func (r *usageReader) line() {
	l := bytes.TrimSpace(r.buf.Bytes())
	if !r.overflow && bytes.HasPrefix(l, []byte("data:")) {
		r.parse(bytes.TrimSpace(l[len("data:"):]))
	}
	r.buf.Reset()
	r.overflow = false
}

// usage is done: the body has ended.
func (r *usageReader) usage() Usage {
	if r.sse {
		r.line()
		return r.u
	}
	if r.overflow {
		return r.u
	}
	body := r.buf.Bytes()
	if r.gzipped {
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			return r.u
		}
		body, err = io.ReadAll(io.LimitReader(zr, maxInflatedSz))
		if err != nil {
			return r.u
		}
	}
	r.parse(body)
	return r.u
}

// usageFields covers the shapes the providers use:
//   - OpenAI chat/responses: model, usage.{prompt_tokens,completion_tokens} or
//     usage.{input_tokens,output_tokens}; in a stream the final chunk carries usage.
//   - Anthropic messages: model, usage.{input_tokens,output_tokens}; in a stream
//     message_start carries message.{model,usage.input_tokens} and message_delta carries
//     usage.output_tokens (cumulative).
type usageFields struct {
	Model   string      `json:"model"`
	Usage   *tokenCount `json:"usage"`
	Message *struct {
		Model string      `json:"model"`
		Usage *tokenCount `json:"usage"`
	} `json:"message"`
	Response *struct { // OpenAI responses API stream: response.completed
		Model string      `json:"model"`
		Usage *tokenCount `json:"usage"`
	} `json:"response"`
}

type tokenCount struct {
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	InputTokens      int64 `json:"input_tokens"`
	OutputTokens     int64 `json:"output_tokens"`
}

func (r *usageReader) parse(b []byte) {
	if len(b) == 0 || b[0] != '{' {
		return
	}
	var f usageFields
	if json.Unmarshal(b, &f) != nil {
		return
	}
	r.take(f.Model, f.Usage)
	if f.Message != nil {
		r.take(f.Message.Model, f.Message.Usage)
	}
	if f.Response != nil {
		r.take(f.Response.Model, f.Response.Usage)
	}
}

// maxModelName bounds the model name an upstream can put in the audit record and the span.
const maxModelName = 128

func (r *usageReader) take(model string, t *tokenCount) {
	if model != "" {
		if len(model) > maxModelName {
			model = model[:maxModelName]
		}
		r.u.Model = strings.ToValidUTF8(model, "")
	}
	if t == nil {
		return
	}
	if in := max(t.PromptTokens, t.InputTokens); in > 0 {
		r.u.InputTokens = in
	}
	if out := max(t.CompletionTokens, t.OutputTokens); out > 0 {
		r.u.OutputTokens = out
	}
}
