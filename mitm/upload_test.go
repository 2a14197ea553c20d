package mitm

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// An upstream that answers before it has read the request body does not cut off the agent's
// upload: the rest of the body is not taken for the next request header (whose limit is
// MaxHeaderBytes).
func TestUploadOutlivesAnEarlyAnswer(t *testing.T) {
	h := newHarness(t)
	c := h.dialTLS(t)
	c.SetDeadline(time.Now().Add(20 * time.Second))
	const size = 32 << 20 // well over the 1 MiB header limit and what socket buffers hold
	fmt.Fprintf(c, "POST /v1/upload HTTP/1.1\r\nHost: api.example.test\r\nContent-Length: %d\r\n\r\n", size)
	uploaded := make(chan error, 1)
	go func() {
		chunk := []byte(strings.Repeat("u", 64<<10))
		var err error
		for sent := 0; sent < size && err == nil; sent += len(chunk) {
			_, err = c.Write(chunk)
		}
		uploaded <- err
	}()
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("first response: %v %v", resp, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err := <-uploaded; err != nil {
		t.Fatalf("the upload was cut off: %v", err)
	}
	// (The harness's upstream closes its connection after an unread body, and goproxy ends
	// the agent's connection with it, so no next request is tried here.)
}
