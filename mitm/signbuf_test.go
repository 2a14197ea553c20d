package mitm

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// Bodies buffered to re-sign SigV4 requests count against one global budget: a request that
// does not fit is answered 503 and sent nowhere, and every byte is given back afterwards.
func TestSignBufferIsBounded(t *testing.T) {
	h := newInjectHarness(t)
	h.proxy.signBuf.max = 1 << 20
	ph := h.placeholder(t, "aws")
	url := "https://bedrock-runtime.us-east-1.amazonaws.test/model/m/converse"
	send := func(body string) (int, string) {
		req := newReq(t, "POST", url, body, "Content-Type", "application/json")
		err := v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: ph, SecretAccessKey: "agent-dummy-secret"},
			req, "UNSIGNED-PAYLOAD", "bedrock", "us-east-1", time.Now())
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Del("X-Amz-Content-Sha256") // no declared hash: wirken must read the body
		return h.do(t, req)
	}
	before := h.count()
	if code, msg := send(strings.Repeat("a", 2<<20)); code != 503 || !strings.Contains(msg, "re-signed") {
		t.Fatalf("2 MiB body over a 1 MiB buffer: %d %q; want 503", code, msg)
	}
	if h.count() != before {
		t.Fatal("a request refused for buffer space reached the upstream")
	}
	if n := h.proxy.signBuf.inUse(); n != 0 {
		t.Fatalf("%d bytes still counted after a refused request", n)
	}
	for range 3 { // more in total than the buffer: each gives its bytes back
		if code, msg := send(strings.Repeat("b", 600<<10)); code != 200 {
			t.Fatalf("600 KiB body: %d %q", code, msg)
		}
	}
	// The transport closes a sent body on its own goroutine: allow it a moment.
	for deadline := time.Now().Add(2 * time.Second); h.proxy.signBuf.inUse() != 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if n := h.proxy.signBuf.inUse(); n != 0 {
		t.Fatalf("%d bytes still counted after the requests ended", n)
	}
}
