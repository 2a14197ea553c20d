package mitm

import (
	"bytes"
	"net"
	"strconv"
	"sync"
)

// framingConn is an agent's HTTP/1.x connection as goproxy's request reader reads it. It
// follows the message framing of every request that goes by and notes the ones that carry both
// Content-Length and Transfer-Encoding. goproxy (with net/http's parser) accepts such a request
// (it drops the Content-Length), but the two disagreeing is a smuggling attempt: wirken refuses it with 400
// and audits it. The scan only looks; it never changes a byte.
type framingConn struct {
	net.Conn

	// Scanner state, under mu: the upstream transport may read a request body while onRequest asks.
	mu      sync.Mutex
	state   framingState
	skipped bool // bytes went by unscanned while paused
	line    []byte
	n       int64 // bytes left in the body or chunk
	inReq   bool  // a request line has been read in this header block
	hasCL   bool
	hasTE   bool
	chunked bool
	upgrade bool
	cl      int64

	conflict []bool // one per request header seen, oldest first
}

type framingState uint8

const (
	fsHeader    framingState = iota // reading a request line and header fields
	fsBody                          // n bytes of Content-Length body left
	fsChunkSize                     // reading a chunk-size line
	fsChunkData                     // n bytes of chunk data left
	fsChunkCRLF                     // the line ending after chunk data
	fsTrailer                       // trailer fields after the last chunk
	fsPaused                        // after an upgrade request, until its response is known
	fsRaw                           // lost: no more scanning
)

// maxFramingLine bounds what the scanner holds of one line; net/http refuses longer headers.
const maxFramingLine = 64 << 10

func (c *framingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.mu.Lock()
		switch c.state {
		case fsRaw:
		case fsPaused:
			c.skipped = true
		default:
			c.scan(b[:n])
		}
		c.mu.Unlock()
	}
	return n, err
}

// resume follows the framing again after an upgrade request was answered without switching
// protocols. If the client sent more while the answer was pending, the scan has lost its
// place and stops.
func (c *framingConn) resume() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == fsPaused {
		c.state = fsHeader
		if c.skipped {
			c.state = fsRaw
		}
	}
}

// bodyRead says whether the scan is past the current request's body (or has lost its place,
// when nothing better is known).
func (c *framingConn) bodyRead() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state == fsHeader || c.state == fsRaw
}

// next reports whether the oldest request not yet asked about had conflicting framing.
func (c *framingConn) next() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.conflict) == 0 {
		return false
	}
	v := c.conflict[0]
	c.conflict = c.conflict[1:]
	return v
}

func (c *framingConn) scan(p []byte) {
	for len(p) > 0 && c.state != fsRaw && c.state != fsPaused {
		switch c.state {
		case fsBody, fsChunkData:
			k := int64(len(p))
			if k > c.n {
				k = c.n
			}
			p, c.n = p[k:], c.n-k
			if c.n == 0 {
				if c.state == fsBody {
					c.state = fsHeader
				} else {
					c.state = fsChunkCRLF
				}
			}
		default:
			i := bytes.IndexByte(p, '\n')
			if i < 0 {
				c.appendLine(p)
				return
			}
			c.appendLine(p[:i])
			p = p[i+1:]
			c.endLine(bytes.TrimSuffix(c.line, []byte("\r")))
			c.line = c.line[:0]
		}
	}
}

func (c *framingConn) appendLine(p []byte) {
	if len(c.line)+len(p) > maxFramingLine {
		c.state = fsRaw // the server refuses such a header and closes
		return
	}
	c.line = append(c.line, p...)
}

func (c *framingConn) endLine(l []byte) {
	switch c.state {
	case fsHeader:
		c.headerLine(l)
	case fsChunkSize:
		if i := bytes.IndexByte(l, ';'); i >= 0 {
			l = l[:i]
		}
		size, err := strconv.ParseInt(string(bytes.TrimSpace(l)), 16, 64)
		switch {
		case err != nil || size < 0:
			c.state = fsRaw // net/http rejects it too
		case size == 0:
			c.state = fsTrailer
		default:
			c.state, c.n = fsChunkData, size
		}
	case fsChunkCRLF:
		c.state = fsChunkSize
	case fsTrailer:
		if len(l) == 0 {
			c.state = fsHeader
		}
	}
}

func (c *framingConn) headerLine(l []byte) {
	if !c.inReq {
		if len(l) > 0 { // empty lines before a request line are skipped
			c.inReq = true
		}
		return
	}
	if len(l) > 0 {
		name, value, ok := bytes.Cut(l, []byte(":"))
		if !ok {
			return
		}
		name, value = bytes.TrimSpace(name), bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			c.hasCL = true
			c.cl, _ = strconv.ParseInt(string(value), 10, 64)
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			c.hasTE = true
			c.chunked = bytes.EqualFold(value, []byte("chunked"))
		case bytes.EqualFold(name, []byte("Upgrade")):
			c.upgrade = true
		}
		return
	}
	// End of the header block.
	c.conflict = append(c.conflict, c.hasCL && c.hasTE)
	switch {
	case c.upgrade:
		c.state = fsPaused // what follows may be another protocol
	case c.hasTE && c.chunked:
		c.state = fsChunkSize
	case c.hasTE:
		c.state = fsRaw // net/http answers 501 and closes
	case c.hasCL && c.cl > 0:
		c.state, c.n = fsBody, c.cl
	}
	c.inReq, c.hasCL, c.hasTE, c.chunked, c.upgrade, c.cl = false, false, false, false, false, 0
}
