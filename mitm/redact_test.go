package mitm

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"

	"github.com/wirken/wirken/policy"
)

// splitReader returns its data in pieces of the given sizes, then the rest.
type splitReader struct {
	data  []byte
	sizes []int
}

func (r *splitReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := len(r.data)
	if len(r.sizes) > 0 {
		n, r.sizes = min(r.sizes[0], n), r.sizes[1:]
	}
	n = copy(p, r.data[:n])
	r.data = r.data[n:]
	return n, nil
}

func TestRedactingBodyMasksAcrossReads(t *testing.T) {
	secret := []byte("sk-live-0123456789")
	stars := strings.Repeat("*", len(secret))
	in := "a sk-live-0123456789 b sk-live-01234 c sk-live-0123456789sk-live-0123456789 end sk-live-0"
	want := "a " + stars + " b sk-live-01234 c " + stars + stars + " end sk-live-0"
	for cut := range len(in) {
		for _, second := range []int{1, 3, 17} {
			r := newRedactingBody(io.NopCloser(&splitReader{data: []byte(in), sizes: []int{cut, second}}), nil, [][]byte{secret})
			got, err := io.ReadAll(r)
			if err != nil || string(got) != want {
				t.Fatalf("cut %d,%d: %q %v; want %q", cut, second, got, err, want)
			}
		}
	}
	r := newRedactingBody(io.NopCloser(iotest.OneByteReader(strings.NewReader(in))), nil, [][]byte{secret})
	if got, _ := io.ReadAll(r); string(got) != want {
		t.Fatalf("one byte at a time: %q", got)
	}
}

func TestRedactingBodyDoesNotHoldAStream(t *testing.T) {
	pr, pw := io.Pipe()
	r := newRedactingBody(pr, nil, [][]byte{[]byte("sk-live-0123456789")})
	go pw.Write([]byte("data: one\n\n"))
	buf := make([]byte, 100)
	done := make(chan string, 1)
	go func() {
		n, _ := r.Read(buf)
		done <- string(buf[:n])
	}()
	select {
	case got := <-done:
		if got != "data: one\n\n" {
			t.Fatalf("got %q", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("an event that cannot begin the secret was held back")
	}
	pw.Close()
}

func TestRedactForms(t *testing.T) {
	basic := &policy.Credential{Style: policy.Basic, User: "u"}
	got := redactForms(basic, []byte("secret-value"))
	if len(got) != 2 || string(got[0]) != "secret-value" || string(got[1]) != "dTpzZWNyZXQtdmFsdWU=" {
		t.Fatalf("basic forms %q", got)
	}
	if got := redactForms(&policy.Credential{Style: policy.Query}, []byte("a b+c/d=e")); len(got) != 2 || string(got[1]) != "a+b%2Bc%2Fd%3De" {
		t.Fatalf("query forms %q", got)
	}
	if got := redactForms(&policy.Credential{Style: policy.Header}, []byte("short")); len(got) != 0 {
		t.Fatalf("a value shorter than %d bytes is masked: %q", minRedactLen, got)
	}
}

// An upstream that echoes the injected credential does not hand it to the agent.
func TestReflectedCredentialIsMasked(t *testing.T) {
	h := newHarness(t)
	var sent atomic.Value
	h.upstream(t, false, func(w http.ResponseWriter, r *http.Request) {
		sent.Store(r.Header.Get("Authorization"))
		w.Header().Set("X-Echo", r.Header.Get("Authorization"))
		fmt.Fprintf(w, "you sent %s", r.Header.Get("Authorization"))
	})
	code, hdr, body, err := get(t, h.client("api.example.test"), "https://api.example.test/v1/x", nil)
	if err != nil || code != 200 {
		t.Fatalf("%d %v", code, err)
	}
	stars := strings.Repeat("*", len(h.canary))
	if body != "you sent Bearer "+stars || hdr.Get("X-Echo") != "Bearer "+stars {
		t.Fatalf("the agent got body %q, X-Echo %q; want the secret masked", body, hdr.Get("X-Echo"))
	}
	if got, _ := sent.Load().(string); got != "Bearer "+h.canary {
		t.Fatal("the secret was not injected upstream: the test proves nothing")
	}
}

// An agent cannot switch the masking off: asking for a gzip body (which the masker could not
// see into) gets an identity one, and a secret echoed in a trailer is masked too.
func TestReflectedCredentialMaskedWhateverTheAgentAsks(t *testing.T) {
	h := newHarness(t)
	var askedEncoding, sent atomic.Value
	h.upstream(t, false, func(w http.ResponseWriter, r *http.Request) {
		askedEncoding.Store(r.Header.Get("Accept-Encoding"))
		auth := r.Header.Get("Authorization")
		sent.Store(auth)
		w.Header().Set("Trailer", "X-Echo-Trailer")
		if strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
			w.Header().Set("Content-Encoding", "gzip")
			zw := gzip.NewWriter(w)
			fmt.Fprintf(zw, "you sent %s", auth)
			zw.Close()
		} else {
			fmt.Fprintf(w, "you sent %s", auth)
		}
		w.Header().Set("X-Echo-Trailer", auth)
	})
	req, _ := http.NewRequest(http.MethodGet, "https://api.example.test/v1/x", nil)
	req.Header.Set("Accept-Encoding", "gzip") // set by hand: the client does not unzip for us
	resp, err := h.client("api.example.test").Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	body := raw
	if resp.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			t.Fatal(err)
		}
		if body, err = io.ReadAll(zr); err != nil {
			t.Fatal(err)
		}
	}
	if got, _ := askedEncoding.Load().(string); got != "identity" {
		t.Errorf("the upstream was asked for Accept-Encoding %q; want identity on a credentialed request", got)
	}
	stars := strings.Repeat("*", len(h.canary))
	if string(body) != "you sent Bearer "+stars {
		t.Errorf("the agent got body %q; want the secret masked", body)
	}
	if got := resp.Trailer.Get("X-Echo-Trailer"); got != "Bearer "+stars {
		t.Errorf("the agent got trailer %q; want the secret masked", got)
	}
	if got, _ := sent.Load().(string); got != "Bearer "+h.canary {
		t.Fatal("the secret was not injected upstream: the test proves nothing")
	}
}
