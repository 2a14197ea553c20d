package mitm

import (
	"io"
	"strings"
	"testing"

	"github.com/wirken/wirken/internal/fuzzseed"
)

func TestChunkResignerMalformed(t *testing.T) {
	sig := strings.Repeat("0", 64)
	for _, body := range []string{
		"",
		"5;chunk-signature=" + sig + "\r\nabc\r\n",                      // short chunk
		"5;chunk-signature=" + sig + "\nabcde\r\n",                      // bare LF
		"zz;chunk-signature=" + sig + "\r\n\r\n",                        // bad size
		"5\r\nabcde\r\n",                                                // no signature
		"-1;chunk-signature=" + sig + "\r\n\r\n",                        // negative
		"5;chunk-signature=" + sig + "\r\nabcdeXX",                      // no CRLF after data
		"2000000;chunk-signature=" + sig + "\r\n",                       // over the chunk cap
		"3;chunk-signature=" + sig + "\r\nabc\r\n",                      // no final chunk
		strings.Repeat("1", maxChunkHeader+1) + ";chunk-signature=\r\n", // header too long
	} {
		r := newChunkResigner(io.NopCloser(strings.NewReader(body)), make([]byte, 32), "20261126T010000Z", "20261126/us-east-1/s3/aws4_request", sig)
		if _, err := io.ReadAll(r); err == nil {
			t.Errorf("%q: no error", body)
		}
	}
	good := "3;chunk-signature=" + sig + "\r\nabc\r\n0;chunk-signature=" + sig + "\r\n\r\n"
	r := newChunkResigner(io.NopCloser(strings.NewReader(good)), make([]byte, 32), "20261126T010000Z", "20261126/us-east-1/s3/aws4_request", sig)
	out, err := io.ReadAll(r)
	if err != nil || len(out) != len(good) || strings.Contains(string(out), sig) {
		t.Fatalf("good body: %q %v", out, err)
	}
}

func FuzzChunkResigner(f *testing.F) {
	seeds := fuzzseed.New(f)
	sig := strings.Repeat("a", 64)
	seeds.Add("3;chunk-signature=" + sig + "\r\nabc\r\n0;chunk-signature=" + sig + "\r\n\r\n")
	seeds.Add("0;chunk-signature=\r\n\r\n")
	f.Fuzz(func(t *testing.T, body string) {
		r := newChunkResigner(io.NopCloser(strings.NewReader(body)), make([]byte, 32), "20261126T010000Z", "s", sig)
		out, err := io.ReadAll(r)
		if err == nil && len(out) != len(body) && strings.Count(body, ";chunk-signature=") == strings.Count(string(out), ";chunk-signature=") {
			// Re-signing keeps the length when every signature had 64 characters.
			for _, l := range strings.Split(body, "\r\n") {
				if i := strings.Index(l, ";chunk-signature="); i >= 0 && len(l)-i-len(";chunk-signature=") != 64 {
					return
				}
			}
			t.Fatalf("length changed: %d -> %d", len(body), len(out))
		}
	})
}
