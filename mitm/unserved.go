package mitm

import (
	"context"
	"net"
	"sync"
)

// unserved says whether the agent sent (part of) a request that was never handed to
// onRequest: a header block the scan saw end but nobody asked about, or one begun. goproxy's
// request reader ends the connection without a word on a request it cannot parse (duplicate
// Content-Length, two Transfer-Encodings, a PROXY protocol line), on a header that is too
// large or too slow, or on the request pipelined after a Connection: close.
func (c *framingConn) unserved() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.conflict) > 0 || (c.state == fsHeader && (c.inReq || len(c.line) > 0))
}

// unservedConn is an agent's HTTP/1.x connection as goproxy holds it: when goproxy closes it
// with a request left unserved, the refusal is audited (once), so no request the agent sent
// ends without a record.
type unservedConn struct {
	net.Conn
	fc     *framingConn
	record func()
	once   sync.Once
}

func (c *unservedConn) Close() error {
	c.once.Do(func() {
		if c.fc.unserved() {
			c.record()
		}
	})
	return c.Conn.Close()
}

// auditUnserved wraps an HTTP/1.x session's connection so that a request goproxy did not
// serve leaves a conn.deny record.
func (p *Proxy) auditUnserved(conn net.Conn, s *session) net.Conn {
	if s.fc == nil {
		return conn
	}
	o := s.origin
	return &unservedConn{Conn: conn, fc: s.fc, record: func() {
		ev := Event{Kind: "conn.deny", Agent: o.Agent, Dst: o.Dst, PID: o.PID, UID: o.UID, Comm: o.Comm,
			Port: o.Dst.Port(), Host: s.sni, Reason: unservedReason}
		p.log.Info("HTTP request not served", "agent", o.Agent, "dst", o.Dst, "host", s.sni)
		p.cfg.Recorder.Deny(context.Background(), ev)
	}}
}

const unservedReason = "HTTP request not served (malformed, incomplete, too large, or sent after Connection: close); nothing was forwarded"
