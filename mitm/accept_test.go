package mitm

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// fdStarvedListener fails its first accepts with EMFILE, as accept4 does when the process has
// no file descriptor left, then accepts normally.
type fdStarvedListener struct {
	net.Listener
	failures atomic.Int32
}

func (l *fdStarvedListener) Accept() (net.Conn, error) {
	if l.failures.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// Found while preparing the 10,000-connection load test (issue 10): an Accept that failed with "too many open files"
// ended Serve, so the proxy stopped accepting for good while the daemon ran on and every agent
// connection was then refused. It must wait and accept again once descriptors are free.
func TestServeSurvivesRunningOutOfFileDescriptors(t *testing.T) {
	h := newHarness(t)
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := &fdStarvedListener{Listener: inner}
	ln.failures.Store(3)
	served := make(chan error, 1)
	go func() { served <- h.proxy.Serve(ln) }()
	t.Cleanup(func() { inner.Close() })

	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(h.ca.CertPEM())
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", inner.Addr().String(),
		&tls.Config{ServerName: "api.example.test", RootCAs: roots, NextProtos: []string{"http/1.1"}})
	if err != nil {
		select {
		case err := <-served:
			t.Fatalf("Serve returned %v after EMFILE; the connection then failed", err)
		default:
		}
		t.Fatalf("dialing the proxy after EMFILE: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprint(c, "GET /v1/x HTTP/1.1\r\nHost: api.example.test\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d; want 200", resp.StatusCode)
	}
	if n := h.proxy.AcceptErrors(); n != 3 {
		t.Errorf("AcceptErrors = %d; want the 3 failures", n)
	}
	if !strings.Contains(h.logs.String(), "accepting agent connections failed") {
		t.Error("the failing accept was not logged")
	}
	inner.Close()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve after the listener closed: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after its listener closed")
	}
}

func TestAcceptRetryable(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want bool
	}{
		{&net.OpError{Op: "accept", Err: os.NewSyscallError("accept4", syscall.EMFILE)}, true},
		{&net.OpError{Op: "accept", Err: os.NewSyscallError("accept4", syscall.ENFILE)}, true},
		{&net.OpError{Op: "accept", Err: os.NewSyscallError("accept4", syscall.ECONNABORTED)}, true},
		{&net.OpError{Op: "accept", Err: os.NewSyscallError("accept4", syscall.EBADF)}, false},
		{errors.New("something else"), false},
	} {
		if got := acceptRetryable(tt.err); got != tt.want {
			t.Errorf("acceptRetryable(%v) = %v; want %v", tt.err, got, tt.want)
		}
	}
}
