package mitm

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
)

// DefaultSignBuffer is how many bytes of request bodies the proxy holds at once, over all
// requests, to hash them for SigV4 re-signing (Config.SignBuffer).
const DefaultSignBuffer = 256 << 20

// ErrBusy: the proxy has no room for the request right now (503).
var ErrBusy = errors.New("proxy busy")

// byteBudget counts bytes held against a global cap.
type byteBudget struct {
	mu   sync.Mutex
	max  int64
	used int64
}

func (b *byteBudget) take(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+n > b.max {
		return false
	}
	b.used += n
	return true
}

func (b *byteBudget) give(n int64) {
	b.mu.Lock()
	b.used -= n
	b.mu.Unlock()
}

func (b *byteBudget) inUse() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// heldBody is a buffered request body whose bytes count against the budget until it is
// closed (the transport closes a request's body once sent or failed; serve closes it when the
// request is not sent).
type heldBody struct {
	*bytes.Reader
	once    sync.Once
	release func()
}

func (b *heldBody) Close() error {
	b.once.Do(b.release)
	return nil
}

// hashBody reads the body (up to maxSignedBody, and within the proxy's buffer budget), puts it
// back and returns its SHA-256 in hex.
func (p *Proxy) hashBody(out *http.Request) (string, error) {
	if out.Body == nil || out.Body == http.NoBody {
		sum := sha256.Sum256(nil)
		return hex.EncodeToString(sum[:]), nil
	}
	defer out.Body.Close()
	var (
		buf   bytes.Buffer
		taken int64
		chunk = make([]byte, 32<<10)
	)
	giveBack := func() { p.signBuf.give(taken) }
	for {
		n, err := out.Body.Read(chunk)
		if n > 0 {
			if int64(buf.Len()+n) > maxSignedBody {
				giveBack()
				return "", fmt.Errorf("request body over %d bytes without X-Amz-Content-Sha256 cannot be re-signed", maxSignedBody)
			}
			if !p.signBuf.take(int64(n)) {
				giveBack()
				p.log.Warn("buffer for re-signing request bodies is full; refusing request", "max_bytes", p.signBuf.max)
				return "", fmt.Errorf("%w: too many request bodies being re-signed; retry, or send X-Amz-Content-Sha256", ErrBusy)
			}
			taken += int64(n)
			buf.Write(chunk[:n])
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			giveBack()
			return "", errors.New("reading the request body to sign it failed")
		}
	}
	b := buf.Bytes()
	out.Body = &heldBody{Reader: bytes.NewReader(b), release: giveBack}
	out.ContentLength = int64(len(b))
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}
