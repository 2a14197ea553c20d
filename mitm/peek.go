package mitm

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"time"
)

// kind is what the first bytes of a connection say it carries.
type kind uint8

const (
	kindOther kind = iota
	kindTLS
	kindHTTP
)

// errHelloSeen stops the handshake once the ClientHello has been read.
var errHelloSeen = errors.New("client hello seen")

// peekClientHello reads the TLS ClientHello from r using crypto/tls's own parser. It returns the
// server name and a reader that replays what was read followed by the rest of r.
func peekClientHello(r io.Reader) (string, io.Reader, error) {
	var rec bytes.Buffer
	var sni string
	seen := false
	srv := tls.Server(&replayConn{r: io.TeeReader(r, &rec)}, &tls.Config{
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			sni, seen = h.ServerName, true
			return nil, errHelloSeen
		},
	})
	err := srv.Handshake()
	if !seen {
		return "", nil, err
	}
	return strings.ToLower(strings.TrimSuffix(sni, ".")), io.MultiReader(&rec, r), nil
}

// sniff classifies a connection by its first bytes without consuming them.
func sniff(br *bufio.Reader) kind {
	b, err := br.Peek(1)
	if err != nil {
		return kindOther
	}
	if b[0] == 0x16 { // TLS handshake record
		return kindTLS
	}
	// An HTTP/1.x request line starts with an upper-case method token and a space.
	// Only what has arrived: a short first message must not wait for more.
	head, _ := br.Peek(min(8, br.Buffered()))
	for i, c := range head {
		if c == ' ' && i > 2 {
			return kindHTTP
		}
		if c < 'A' || c > 'Z' {
			break
		}
	}
	return kindOther
}

// replayConn is a read-only net.Conn over a reader, for crypto/tls's hello parser. Writes (the
// alert crypto/tls sends when we abort) are discarded.
type replayConn struct{ r io.Reader }

func (c *replayConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *replayConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c *replayConn) Close() error                     { return nil }
func (c *replayConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *replayConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *replayConn) SetDeadline(time.Time) error      { return nil }
func (c *replayConn) SetReadDeadline(time.Time) error  { return nil }
func (c *replayConn) SetWriteDeadline(time.Time) error { return nil }
