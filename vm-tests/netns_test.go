//go:build linux

package vmtests

import (
	"fmt"
	"net"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// peerNetns is a network namespace the test creates, joined to the host's by a veth pair: a
// destination on this machine that is not loopback, for what the proxy does with other TCP
// toward an address beyond this host's loopback.
type peerNetns struct {
	name   string
	peerIP string // the namespace's address; the host's is the other one of the /30
}

func startPeerNetns(t *testing.T) *peerNetns {
	t.Helper()
	uniq := randHex(t, 4)
	b, _ := strconv.ParseUint(uniq[:2], 16, 8)
	p := &peerNetns{name: "wirken-e2e-" + uniq, peerIP: fmt.Sprintf("198.18.%d.2", b)}
	hostIf, peerIf := "wk"+uniq+"h", "wk"+uniq+"p"
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	t.Cleanup(func() {
		exec.Command("ip", "link", "del", hostIf).Run() // also removes the peer end
		if out, err := exec.Command("ip", "netns", "del", p.name).CombinedOutput(); err != nil {
			t.Logf("cleanup: removing netns %s: %v: %s", p.name, err, out)
		}
	})
	ip("netns", "add", p.name)
	ip("link", "add", hostIf, "type", "veth", "peer", "name", peerIf)
	ip("link", "set", peerIf, "netns", p.name)
	ip("addr", "add", fmt.Sprintf("198.18.%d.1/30", b), "dev", hostIf)
	ip("link", "set", hostIf, "up")
	ip("-n", p.name, "addr", "add", p.peerIP+"/30", "dev", peerIf)
	ip("-n", p.name, "link", "set", peerIf, "up")
	ip("-n", p.name, "link", "set", "lo", "up")
	return p
}

// listen listens on the namespace's address and port; the socket stays in the namespace.
func (p *peerNetns) listen(t *testing.T, port int) net.Listener {
	t.Helper()
	type res struct {
		ln  net.Listener
		err error
	}
	ch := make(chan res, 1)
	go func() {
		// The thread switches namespaces; if it cannot switch back it is not unlocked, and
		// dies with this goroutine.
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			ch <- res{err: err}
			return
		}
		defer unix.Close(orig)
		target, err := unix.Open("/run/netns/"+p.name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			ch <- res{err: err}
			return
		}
		defer unix.Close(target)
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			ch <- res{err: err}
			return
		}
		ln, err := net.Listen("tcp", net.JoinHostPort(p.peerIP, strconv.Itoa(port)))
		if unix.Setns(orig, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		ch <- res{ln, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatalf("listening in netns %s on %s:%d: %v", p.name, p.peerIP, port, r.err)
	}
	t.Cleanup(func() { r.ln.Close() })
	return r.ln
}
