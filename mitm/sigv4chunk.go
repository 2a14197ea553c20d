package mitm

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Chunk-signed streaming SigV4 (x-amz-content-sha256: STREAMING-AWS4-HMAC-SHA256-PAYLOAD):
// the body is "aws-chunked", each chunk framed as
//
//	<hex size>;chunk-signature=<64 hex>\r\n<data>\r\n
//
// and ended by a chunk of size 0. Each chunk's signature chains from the previous one,
// starting at the header signature, so once wirken re-signs the header it must re-sign every
// chunk too. Signatures keep their length, so the body's length does not change.

const (
	streamingSigned = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
	chunkSigPrefix  = ";chunk-signature="
	emptySHA256     = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	maxChunkHeader  = 256
	maxChunk        = 16 << 20
)

// signingKey derives the SigV4 signing key for one day, region and service.
func signingKey(secret []byte, date, region, service string) []byte {
	mac := func(key []byte, data string) []byte {
		h := hmac.New(sha256.New, key)
		h.Write([]byte(data))
		return h.Sum(nil)
	}
	k := make([]byte, 0, 4+len(secret))
	k = append(append(k, "AWS4"...), secret...)
	out := mac(mac(mac(mac(k, date), region), service), "aws4_request")
	clear(k)
	return out
}

// chunkResigner rewrites an aws-chunked body, replacing each chunk signature by one made
// with the real signing key. It holds one chunk at a time.
type chunkResigner struct {
	src     *bufio.Reader
	closer  io.Closer
	key     []byte
	amzDate string
	scope   string
	prev    string // the previous signature in the chain
	out     bytes.Buffer
	done    bool
	err     error
}

func newChunkResigner(body io.ReadCloser, key []byte, amzDate, scope, seed string) *chunkResigner {
	return &chunkResigner{src: bufio.NewReader(body), closer: body, key: key, amzDate: amzDate, scope: scope, prev: seed}
}

func (c *chunkResigner) Read(p []byte) (int, error) {
	for c.out.Len() == 0 {
		if c.err != nil {
			return 0, c.err
		}
		if c.done {
			return 0, io.EOF
		}
		c.err = c.next()
	}
	return c.out.Read(p)
}

func (c *chunkResigner) Close() error {
	clear(c.key)
	return c.closer.Close()
}

// next reads one chunk and queues it, re-signed.
func (c *chunkResigner) next() error {
	line, err := c.src.ReadSlice('\n')
	if err != nil || len(line) > maxChunkHeader || !bytes.HasSuffix(line, []byte("\r\n")) {
		return errors.New("malformed aws-chunked body")
	}
	sizeHex, _, ok := strings.Cut(string(line[:len(line)-2]), chunkSigPrefix)
	size, perr := strconv.ParseInt(sizeHex, 16, 64)
	if !ok || perr != nil || size < 0 || size > maxChunk {
		return errors.New("malformed aws-chunked chunk header")
	}
	data := make([]byte, size+2)
	if _, err := io.ReadFull(c.src, data); err != nil || !bytes.HasSuffix(data, []byte("\r\n")) {
		return errors.New("malformed aws-chunked chunk")
	}
	data = data[:size]
	sum := sha256.Sum256(data)
	sts := "AWS4-HMAC-SHA256-PAYLOAD\n" + c.amzDate + "\n" + c.scope + "\n" + c.prev + "\n" + emptySHA256 + "\n" + hex.EncodeToString(sum[:])
	h := hmac.New(sha256.New, c.key)
	h.Write([]byte(sts))
	sig := hex.EncodeToString(h.Sum(nil))
	c.prev = sig
	fmt.Fprintf(&c.out, "%s%s%s\r\n", sizeHex, chunkSigPrefix, sig)
	c.out.Write(data)
	c.out.WriteString("\r\n")
	if size == 0 {
		if _, err := c.src.ReadByte(); err != io.EOF {
			return errors.New("data after the final aws-chunked chunk")
		}
		c.done = true
	}
	return nil
}

// headerSignature returns the Signature= value of a SigV4 Authorization header.
func headerSignature(auth string) string {
	for _, part := range strings.Split(auth, ",") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(part), "Signature="); ok {
			return v
		}
	}
	return ""
}
