//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64 || wasm)

package bpf

// Privileged tests of the hooks beyond TCP connect: DNS over connected and
// unconnected UDP (sendmsg, recvmsg, getpeername, the query origin map), DNS
// over TCP, UDP denial, bind, sock_create and loopback destinations. Same
// setup as steer_linux_test.go: a private netns with only lo, a throwaway
// cgroup tree and pin dir, the agent is this binary re-executed as nobody.

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// agentOp runs one of the extra agent operations and reports like agentMain.
func agentOp(req agentRequest) int {
	var res agentResult
	setErr := func(err error) {
		var errno unix.Errno
		if errors.As(err, &errno) {
			res.Errno = int(errno)
		} else {
			res.Errno = -1
		}
		res.Err = err.Error()
	}
	report := func() int {
		b := fmt.Sprintf(`{"Errno":%d,"Err":%q,"Local":%q,"Peer":%q,"From":%q,"Reply":%q}`,
			res.Errno, res.Err, res.Local, res.Peer, res.From, res.Reply)
		fmt.Println(b)
		return 0
	}
	if req.Op == "socket" {
		fd, err := unix.Socket(req.Domain, req.Type|unix.SOCK_CLOEXEC, req.Proto)
		if err != nil {
			setErr(err)
		} else {
			unix.Close(fd)
		}
		return report()
	}
	dst, err := netip.ParseAddrPort(req.Addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "agent: bad address:", err)
		return 2
	}
	fd, sa, err := agentSocket(req.Network, dst)
	if err != nil {
		fmt.Fprintln(os.Stderr, "agent:", err)
		return 2
	}
	defer unix.Close(fd)
	switch req.Op {
	case "bind":
		if err := unix.Bind(fd, sa); err != nil {
			setErr(err)
		}
	case "sendto":
		if err := unix.Sendto(fd, []byte("x"), 0, sa); err != nil {
			setErr(err)
		}
	case "late-udp":
		// Connect and send once (reported), wait for a line on stdin, send again (reported).
		if err := unix.Connect(fd, sa); err != nil {
			setErr(err)
			return report()
		}
		if err := unix.Send(fd, []byte("before"), 0); err != nil {
			setErr(err)
		}
		report()
		res = agentResult{}
		bufio.NewReader(os.Stdin).ReadString('\n')
		if err := unix.Send(fd, []byte("after"), 0); err != nil {
			setErr(err)
		}
	case "dns-connected", "dns-sendto":
		if req.Op == "dns-connected" {
			if err := unix.Connect(fd, sa); err != nil {
				setErr(err)
				return report()
			}
			res.Peer = sockaddrString(unix.Getpeername(fd))
			err = unix.Send(fd, []byte("query"), 0)
		} else {
			err = unix.Sendto(fd, []byte("query"), 0, sa)
		}
		if err != nil {
			setErr(err)
			return report()
		}
		buf := make([]byte, 512)
		n, from, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			setErr(err)
			return report()
		}
		res.From = sockaddrString(from, nil)
		res.Reply = string(buf[:n])
	default:
		fmt.Fprintln(os.Stderr, "agent: unknown op", req.Op)
		return 2
	}
	return report()
}

// agentSocket opens a socket for network ("tcp4", "udp6", ...) and returns
// it with dst as a sockaddr. AF_INET6 sockets are dual-stack.
func agentSocket(network string, dst netip.AddrPort) (int, unix.Sockaddr, error) {
	domain, typ := unix.AF_INET, unix.SOCK_STREAM
	if strings.HasSuffix(network, "6") {
		domain = unix.AF_INET6
	}
	if strings.HasPrefix(network, "udp") {
		typ = unix.SOCK_DGRAM
	}
	fd, err := unix.Socket(domain, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, nil, fmt.Errorf("socket: %w", err)
	}
	tv := unix.NsecToTimeval(int64(10 * time.Second))
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	if domain == unix.AF_INET {
		return fd, &unix.SockaddrInet4{Port: int(dst.Port()), Addr: dst.Addr().As4()}, nil
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0); err != nil {
		unix.Close(fd)
		return -1, nil, fmt.Errorf("IPV6_V6ONLY: %w", err)
	}
	return fd, &unix.SockaddrInet6{Port: int(dst.Port()), Addr: dst.Addr().As16()}, nil
}

// loadedAgent creates agents/a, loads the steering and registers the agent.
func (e *testEnv) loadedAgent() (string, *Steering) {
	e.t.Helper()
	leaf := e.cgroup("agents/a")
	s := e.load()
	if err := s.RegisterAgent(e.cgroupID(leaf)); err != nil {
		e.t.Fatal(err)
	}
	return leaf, s
}

// dnsServer stands in for wirken's resolver: it answers each UDP datagram
// with who sent it according to QueryOrigin ("<cgroup id> <original dst>"),
// and accepts TCP on the same port.
type dnsServer struct {
	udp4, udp6 *net.UDPConn
	tcp4       *net.TCPListener
}

// listenDNS picks DNSPort (two distinct bytes, not the proxy port) and
// listens there; call before load.
func (e *testEnv) listenDNS() *dnsServer {
	e.t.Helper()
	for range 50 {
		port := randomPort(e.cfg.ProxyPort, e.cfg.ProxyPort+1)
		u4, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(port)})
		if err != nil {
			continue
		}
		u6, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback, Port: int(port)})
		if err != nil {
			u4.Close()
			continue
		}
		t4, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(port)})
		if err != nil {
			u4.Close()
			u6.Close()
			continue
		}
		e.cfg.DNSPort = port
		d := &dnsServer{udp4: u4, udp6: u6, tcp4: t4}
		e.t.Cleanup(func() { u4.Close(); u6.Close(); t4.Close() })
		return d
	}
	e.t.Fatal("no free DNS port")
	return nil
}

// serve answers datagrams on both sockets until they are closed.
func (d *dnsServer) serve(s *Steering) {
	for _, c := range []*net.UDPConn{d.udp4, d.udp6} {
		go func() {
			buf := make([]byte, 512)
			for {
				_, from, err := c.ReadFromUDPAddrPort(buf)
				if err != nil {
					return
				}
				local := c.LocalAddr().(*net.UDPAddr).AddrPort()
				reply := "miss"
				if o, err := s.QueryOrigin(from, local); err == nil {
					reply = fmt.Sprintf("%d %s", o.CgroupID, o.Dst)
				}
				c.WriteToUDPAddrPort([]byte(reply), from)
			}
		}()
	}
}

func TestDNSOverUDP(t *testing.T) {
	e := newTestEnv(t)
	dns := e.listenDNS()
	leaf := e.cgroup("agents/a")
	s := e.load()
	dns.serve(s)
	id := e.cgroupID(leaf)
	if err := s.RegisterAgent(id); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, network, op, dst string
		wantFrom               string // the reply's source as the agent sees it
		wantDst                string // the original destination the resolver is told
	}{
		{"connected v4", "udp4", "dns-connected", "192.0.2.53:53", "192.0.2.53:53", "192.0.2.53:53"},
		{"unconnected v4", "udp4", "dns-sendto", "198.51.100.53:53", "198.51.100.53:53", "198.51.100.53:53"},
		{"unconnected v4 to a loopback stub", "udp4", "dns-sendto", "127.0.0.53:53", "127.0.0.53:53", "127.0.0.53:53"},
		{"connected v4-mapped", "udp6", "dns-connected", "[::ffff:192.0.2.53]:53", "[::ffff:192.0.2.53]:53", "192.0.2.53:53"},
		{"unconnected v4-mapped", "udp6", "dns-sendto", "[::ffff:192.0.2.54]:53", "[::ffff:192.0.2.54]:53", "192.0.2.54:53"},
		{"connected v6", "udp6", "dns-connected", "[2001:db8::53]:53", "[2001:db8::53]:53", "[2001:db8::53]:53"},
		{"unconnected v6", "udp6", "dns-sendto", "[2001:db8::54]:53", "[2001:db8::54]:53", "[2001:db8::54]:53"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := e.spawnReq(leaf, agentRequest{Network: tt.network, Addr: tt.dst, Op: tt.op})
			defer a.finish(t, nil)
			if a.res.Errno != 0 {
				t.Fatalf("agent: %s", a.res.Err)
			}
			if tt.op == "dns-connected" && a.res.Peer != tt.dst {
				t.Errorf("getpeername = %s, want the resolver the agent asked for, %s", a.res.Peer, tt.dst)
			}
			if a.res.From != tt.wantFrom {
				t.Errorf("reply came from %s, want %s (recvmsg rewrite)", a.res.From, tt.wantFrom)
			}
			if want := fmt.Sprintf("%d %s", id, tt.wantDst); a.res.Reply != want {
				t.Errorf("resolver was told %q, want %q", a.res.Reply, want)
			}
		})
	}
}

func TestDNSOverTCP(t *testing.T) {
	e := newTestEnv(t)
	dns := e.listenDNS()
	leaf, s := e.loadedAgent()
	a := e.spawn(leaf, "tcp4", "192.0.2.53:53")
	if a.res.Errno != 0 {
		t.Fatalf("agent connect: %s", a.res.Err)
	}
	if a.res.Peer != "192.0.2.53:53" {
		t.Errorf("getpeername = %s, want 192.0.2.53:53", a.res.Peer)
	}
	c := accept(t, dns.tcp4)
	defer a.finish(t, c)
	remote, local := addrPorts(c)
	o, err := s.Origin(remote, local)
	if err != nil {
		t.Fatal(err)
	}
	if o.Dst.String() != "192.0.2.53:53" || o.CgroupID != e.cgroupID(leaf) {
		t.Fatalf("Origin = %+v, want 192.0.2.53:53 from cgroup %d", o, e.cgroupID(leaf))
	}
	nothingPending(t, e.ln4)
}

// TestUDPDenied: UDP anywhere but port 53 fails, connected or not; so does
// DNS when no resolver is configured.
func TestUDPDenied(t *testing.T) {
	e := newTestEnv(t)
	dns := e.listenDNS()
	leaf, _ := e.loadedAgent()
	for _, tt := range []struct{ name, network, op, dst string }{
		{"sendto v4 443 (QUIC)", "udp4", "sendto", "192.0.2.1:443"},
		{"sendto v6 443", "udp6", "sendto", "[2001:db8::1]:443"},
		{"sendto v4-mapped 443", "udp6", "sendto", "[::ffff:192.0.2.1]:443"},
		{"sendto loopback", "udp4", "sendto", "127.0.0.1:9"},
		{"connect v4 443", "udp4", "dns-connected", "192.0.2.1:443"},
		{"connect v6 443", "udp6", "dns-connected", "[2001:db8::1]:443"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a := e.spawnReq(leaf, agentRequest{Network: tt.network, Addr: tt.dst, Op: tt.op})
			defer a.finish(t, nil)
			if a.res.Errno != int(unix.EPERM) {
				t.Fatalf("errno %d (%s), want EPERM", a.res.Errno, a.res.Err)
			}
		})
	}
	dns.udp4.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if _, from, err := dns.udp4.ReadFromUDPAddrPort(make([]byte, 16)); err == nil {
		t.Fatalf("a denied datagram reached the resolver from %s", from)
	}

	// Without a resolver, DNS is just UDP: denied.
	e2 := newTestEnv(t)
	leaf2, _ := e2.loadedAgent()
	a := e2.spawnReq(leaf2, agentRequest{Network: "udp4", Addr: "192.0.2.53:53", Op: "sendto"})
	defer a.finish(t, nil)
	if a.res.Errno != int(unix.EPERM) {
		t.Fatalf("DNS without a resolver: errno %d (%s), want EPERM", a.res.Errno, a.res.Err)
	}
}

func TestBindDenied(t *testing.T) {
	e := newTestEnv(t)
	e.listenDNS()
	leaf, _ := e.loadedAgent()
	p, d := e.cfg.ProxyPort, e.cfg.DNSPort
	for _, tt := range []struct {
		name, network, addr string
		want                unix.Errno
	}{
		{"proxy port, any v4", "tcp4", fmt.Sprintf("0.0.0.0:%d", p), unix.EPERM},
		{"proxy port, other loopback", "tcp4", fmt.Sprintf("127.0.0.9:%d", p), unix.EPERM},
		{"proxy port, any v6", "tcp6", fmt.Sprintf("[::]:%d", p), unix.EPERM},
		{"resolver port, UDP v4", "udp4", fmt.Sprintf("127.0.0.9:%d", d), unix.EPERM},
		{"resolver port, UDP v6", "udp6", fmt.Sprintf("[::]:%d", d), unix.EPERM},
		{"resolver port, TCP v4", "tcp4", fmt.Sprintf("0.0.0.0:%d", d), unix.EPERM},
		{"another port is fine", "tcp4", fmt.Sprintf("127.0.0.9:%d", p+2), 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a := e.spawnReq(leaf, agentRequest{Network: tt.network, Addr: tt.addr, Op: "bind"})
			defer a.finish(t, nil)
			if a.res.Errno != int(tt.want) {
				t.Fatalf("bind %s: errno %d (%s), want %d", tt.addr, a.res.Errno, a.res.Err, tt.want)
			}
		})
	}
}

// TestSockCreate: as root (so capabilities do not hide the hook), an agent
// gets only TCP and UDP sockets. Each denied kind is first created by the
// test itself, outside the agents, to show the kernel offers it.
func TestSockCreate(t *testing.T) {
	e := newTestEnv(t)
	leaf, _ := e.loadedAgent()
	const ipprotoMPTCP = 262
	// Ping sockets are refused to every group by default; open them to all
	// (this is the test's private network namespace) so the hook is what
	// refuses the agent.
	if err := os.WriteFile("/proc/sys/net/ipv4/ping_group_range", []byte("0 2147483647"), 0); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name                 string
		domain, typ, proto   int
		allowed, mayBeAbsent bool
	}{
		{"tcp4", unix.AF_INET, unix.SOCK_STREAM, 0, true, false},
		{"udp6", unix.AF_INET6, unix.SOCK_DGRAM, 0, true, false},
		{"raw v4", unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_ICMP, false, false},
		{"raw v6", unix.AF_INET6, unix.SOCK_RAW, unix.IPPROTO_ICMPV6, false, false},
		{"raw v4 udp", unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_UDP, false, false},
		{"ping v4", unix.AF_INET, unix.SOCK_DGRAM, unix.IPPROTO_ICMP, false, false},
		{"udplite", unix.AF_INET, unix.SOCK_DGRAM, unix.IPPROTO_UDPLITE, false, true},
		{"sctp", unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_SCTP, false, true},
		{"mptcp", unix.AF_INET, unix.SOCK_STREAM, ipprotoMPTCP, false, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fd, err := unix.Socket(tt.domain, tt.typ|unix.SOCK_CLOEXEC, tt.proto)
			if err != nil {
				if !tt.mayBeAbsent {
					t.Fatalf("outside the agents: %v", err)
				}
				t.Logf("this kernel offers no %s socket (%v); checking the agent is refused anyway", tt.name, err)
			} else {
				unix.Close(fd)
			}
			a := e.spawnReq(leaf, agentRequest{Op: "socket", Domain: tt.domain, Type: tt.typ, Proto: tt.proto, AsRoot: true})
			defer a.finish(t, nil)
			switch {
			case tt.allowed && a.res.Errno != 0:
				t.Fatalf("agent socket: %s, want success", a.res.Err)
			case !tt.allowed && err == nil && a.res.Errno != int(unix.EPERM):
				t.Fatalf("agent socket: errno %d (%s), want EPERM", a.res.Errno, a.res.Err)
			case !tt.allowed && a.res.Errno == 0:
				t.Fatal("agent got the socket")
			}
		})
	}
}

// TestLoopbackSteered: the kernel connects an agent to no loopback service
// directly, not even one listening there: a connect to 127/8, ::1 or
// ::ffff:127.0.0.x goes to the proxy with the original destination in its
// record, so the proxy decides (a passthrough rule splices it) and audits it.
func TestLoopbackSteered(t *testing.T) {
	e := newTestEnv(t)
	leaf := e.cgroup("agents/a")
	s := e.load()
	id := e.cgroupID(leaf)
	if err := s.RegisterAgent(id); err != nil {
		t.Fatal(err)
	}
	port := e.cfg.ProxyPort + 2
	svc4 := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.5"), port)
	svc1 := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)
	svc6 := netip.AddrPortFrom(netip.IPv6Loopback(), port)
	direct4 := decoy(t, "tcp4", svc4.String())
	direct1 := decoy(t, "tcp4", svc1.String())
	direct6 := decoy(t, "tcp6", svc6.String())
	for _, tt := range []struct {
		network, dst string
		proxy        *net.TCPListener
		wantDst      netip.AddrPort
	}{
		{"tcp4", svc4.String(), e.ln4, svc4},
		{"tcp4", svc1.String(), e.ln4, svc1},
		{"tcp6", fmt.Sprintf("[::ffff:127.0.0.5]:%d", port), e.ln4, svc4},
		{"tcp6", svc6.String(), e.ln6, svc6},
	} {
		a := e.spawn(leaf, tt.network, tt.dst)
		if a.res.Errno != 0 {
			t.Fatalf("connect %s: %s", tt.dst, a.res.Err)
		}
		c := accept(t, tt.proxy)
		remote, local := addrPorts(c)
		o, err := s.Origin(remote, local)
		if err != nil {
			t.Fatalf("%s: Origin(%s, %s): %v", tt.dst, remote, local, err)
		}
		if o.Dst != tt.wantDst || o.CgroupID != id {
			t.Fatalf("%s: Origin = %+v, want destination %s of cgroup %d", tt.dst, o, tt.wantDst, id)
		}
		a.finish(t, c)
	}
	nothingPending(t, direct4)
	nothingPending(t, direct1)
	nothingPending(t, direct6)
}

// TestEgressBackstop: a UDP socket an agent connected before the programs were attached is
// not checked by connect or sendmsg again (the kernel runs those hooks at connect and for
// unconnected sends only), so only the cgroup_skb backstop stands between it and a real
// device. Before the attach its datagram leaves through a TUN device (the test reads it);
// after, it is dropped.
func TestEgressBackstop(t *testing.T) {
	e := newTestEnv(t)
	leaf := e.cgroup("agents/a")
	tun := openTUN(t, "wktun0", "198.51.100.1/24")

	cmd, stdin, readResult := e.lateUDP(leaf, "198.51.100.2:9")
	if r := readResult(); r.Errno != 0 {
		t.Fatalf("send before the programs were attached: %s", r.Err)
	}
	if got := udpPayloads(t, tun); !slices.Contains(got, "before") {
		t.Fatalf("the datagram sent before the attach did not leave through the TUN device (saw %q): the check below would prove nothing", got)
	}

	s := e.load()
	if err := s.RegisterAgent(e.cgroupID(leaf)); err != nil {
		t.Fatal(err)
	}
	io.WriteString(stdin, "go\n")
	if r := readResult(); r.Errno == 0 {
		t.Error("send after the attach succeeded")
	}
	if got := udpPayloads(t, tun); slices.Contains(got, "after") {
		t.Fatal("the datagram sent after the attach left through the TUN device")
	}
	cmd.Wait()
}

// lateUDP starts a "late-udp" agent in the cgroup at leaf toward dst: it connects and sends
// once, then sends again after a line on stdin. readResult reads its next report.
func (e *testEnv) lateUDP(leaf, dst string) (cmd *exec.Cmd, stdin io.Writer, readResult func() agentResult) {
	t := e.t
	t.Helper()
	req, _ := json.Marshal(agentRequest{Network: "udp4", Addr: dst, Op: "late-udp"})
	cg, err := os.Open(leaf)
	if err != nil {
		t.Fatal(err)
	}
	defer cg.Close()
	cmd = exec.Command(agentBinary(t))
	cmd.Env = []string{envAgent + "=" + string(req)}
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.Fd()),
		Credential: &syscall.Credential{Uid: agentUID, Gid: agentGID}, Pdeathsig: syscall.SIGKILL}
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	e.procs = append(e.procs, cmd)
	out := bufio.NewReader(stdout)
	return cmd, in, func() agentResult {
		t.Helper()
		line, err := out.ReadBytes('\n')
		var r agentResult
		if err != nil || json.Unmarshal(line, &r) != nil {
			t.Fatalf("agent report %q: %v", line, err)
		}
		return r
	}
}

// openTUN creates a TUN device (no packet info) with addr in the private netns and returns
// its file; what the kernel routes there can be read from it.
func openTUN(t *testing.T, name, addr string) *os.File {
	t.Helper()
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatalf("opening /dev/net/tun: %v", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		t.Fatal(err)
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		t.Fatalf("creating TUN device: %v", err)
	}
	f := os.NewFile(uintptr(fd), name)
	t.Cleanup(func() { f.Close() })
	// No IPv6 on it, so nothing but the agent's datagram is ever routed there.
	os.WriteFile("/proc/sys/net/ipv6/conf/"+name+"/disable_ipv6", []byte("1"), 0)
	for _, args := range [][]string{{"addr", "add", addr, "dev", name}, {"link", "set", name, "up"}} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v\n%s", args, err, out)
		}
	}
	return f
}

// udpPayloads reads what reaches the TUN device for half a second and returns the payloads
// of the IPv4 UDP datagrams.
func udpPayloads(t *testing.T, tun *os.File) []string {
	t.Helper()
	var out []string
	buf := make([]byte, 2048)
	tun.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	for {
		n, err := tun.Read(buf)
		if err != nil {
			return out
		}
		p := buf[:n]
		if n < 28 || p[0]>>4 != 4 || p[9] != unix.IPPROTO_UDP {
			continue
		}
		ihl := int(p[0]&0xf) * 4
		if n >= ihl+8 {
			out = append(out, string(p[ihl+8:]))
		}
	}
}

// TestBind: an agent bound to an existing cgroup outside agents/ (and its sub-cgroups) is
// steered as that agent; after Unbind its cgroup is no longer touched; a restarted loader
// finds the bound links and updates them in place.
func TestBind(t *testing.T) {
	e := newTestEnv(t)
	unit := e.cgroup("unit.service")
	sub := e.cgroup("unit.service/sub")
	s := e.load()
	id, err := s.Bind("svc", unit)
	if err != nil {
		t.Fatal(err)
	}
	if id != e.cgroupID(unit) {
		t.Fatalf("Bind returned id %d, want %d", id, e.cgroupID(unit))
	}
	dst := fmt.Sprintf("127.0.0.2:%d", e.cfg.ProxyPort+1)
	direct := decoy(t, "tcp4", dst)
	for _, cg := range []string{unit, sub} {
		a := e.spawn(cg, "tcp4", dst)
		if a.res.Errno != 0 {
			t.Fatalf("connect from %s: %s", cg, a.res.Err)
		}
		c := accept(t, e.ln4)
		remote, local := addrPorts(c)
		o, err := s.Origin(remote, local)
		if err != nil || o.CgroupID != id || o.Dst.String() != dst {
			t.Fatalf("Origin from %s = %+v, %v; want %s as cgroup %d", cg, o, err, dst, id)
		}
		a.finish(t, c)
	}
	nothingPending(t, direct)

	// A restarted loader keeps the bound links and updates them.
	before := pinnedLinksIn(t, filepath.Join(e.cfg.PinDir, "links", "bound", "svc"))
	s.Close()
	s = e.load()
	if names, err := s.Bound(); err != nil || len(names) != 1 || names[0] != "svc" {
		t.Fatalf("Bound() = %v, %v; want [svc]", names, err)
	}
	if _, err := s.Bind("svc", unit); err != nil {
		t.Fatal(err)
	}
	after := pinnedLinksIn(t, filepath.Join(e.cfg.PinDir, "links", "bound", "svc"))
	if len(before) != len(hookNames) || len(after) != len(hookNames) {
		t.Fatalf("bound links before %d after %d, want %d", len(before), len(after), len(hookNames))
	}
	for name, b := range before {
		if after[name].ID != b.ID || after[name].Program == b.Program {
			t.Errorf("bound link %s: %+v -> %+v, want the same link with a new program", name, b, after[name])
		}
	}

	if _, err := s.Bind("../x", unit); err == nil {
		t.Fatal("Bind accepted a path as a name")
	}
	if err := s.Unbind("svc"); err != nil {
		t.Fatal(err)
	}
	if err := s.UnregisterAgent(id); err != nil {
		t.Fatal(err)
	}
	if names, _ := s.Bound(); len(names) != 0 {
		t.Fatalf("Bound() after Unbind = %v", names)
	}
	// The links go once the kernel releases them; then the unit's connects are its own.
	deadline := time.Now().Add(5 * time.Second)
	for attachedPrograms(t, unit, ebpf.AttachCGroupInet4Connect) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("connect4 still attached to the unbound cgroup")
		}
		time.Sleep(50 * time.Millisecond)
	}
	a := e.spawn(unit, "tcp4", dst)
	if a.res.Errno != 0 {
		t.Fatalf("connect after Unbind: %s", a.res.Err)
	}
	a.finish(t, accept(t, direct))
}

// TestRefuseIPv6: with RefuseIPv6, native IPv6 TCP fails at connect; ::1, v4-mapped and DNS
// are steered as before.
func TestRefuseIPv6(t *testing.T) {
	e := newTestEnv(t)
	e.listenDNS()
	e.cfg.RefuseIPv6 = true
	leaf, s := e.loadedAgent()
	a := e.spawn(leaf, "tcp6", fmt.Sprintf("[2001:db8::7]:%d", e.cfg.ProxyPort+1))
	a.finish(t, nil)
	if a.res.Errno != int(unix.EPERM) {
		t.Fatalf("native IPv6: errno %d (%s), want EPERM", a.res.Errno, a.res.Err)
	}
	for _, tt := range []struct {
		dst string
		ln  *net.TCPListener
	}{
		{fmt.Sprintf("[::1]:%d", e.cfg.ProxyPort+1), e.ln6},
		{fmt.Sprintf("[::ffff:192.0.2.7]:%d", e.cfg.ProxyPort+1), e.ln4},
	} {
		a := e.spawn(leaf, "tcp6", tt.dst)
		if a.res.Errno != 0 {
			t.Fatalf("%s: %s", tt.dst, a.res.Err)
		}
		c := accept(t, tt.ln)
		remote, local := addrPorts(c)
		want := netip.MustParseAddrPort(tt.dst)
		want = netip.AddrPortFrom(want.Addr().Unmap(), want.Port())
		if o, err := s.Origin(remote, local); err != nil || o.Dst != want {
			t.Fatalf("Origin %+v, %v", o, err)
		}
		a.finish(t, c)
	}
}

// TestDenials: each denying hook reports the refusal, with the agent and the caller.
func TestDenials(t *testing.T) {
	e := newTestEnv(t)
	e.listenDNS()
	leaf, s := e.loadedAgent()
	rd, err := s.Denials()
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	next := func() Denial {
		t.Helper()
		rd.r.SetDeadline(time.Now().Add(5 * time.Second))
		d, err := rd.Read()
		if err != nil {
			t.Fatalf("no denial reported: %v", err)
		}
		return d
	}
	id := e.cgroupID(leaf)
	for _, tt := range []struct {
		req  agentRequest
		want Denial
	}{
		{agentRequest{Network: "udp4", Addr: "192.0.2.1:443", Op: "sendto"},
			Denial{Hook: "sendmsg4", Addr: netip.MustParseAddrPort("192.0.2.1:443"), Family: unix.AF_INET, Protocol: unix.IPPROTO_UDP}},
		{agentRequest{Network: "udp6", Addr: "[2001:db8::1]:443", Op: "dns-connected"},
			Denial{Hook: "connect6", Addr: netip.MustParseAddrPort("[2001:db8::1]:443"), Family: unix.AF_INET6, Protocol: unix.IPPROTO_UDP}},
		{agentRequest{Network: "tcp4", Addr: fmt.Sprintf("0.0.0.0:%d", e.cfg.ProxyPort), Op: "bind"},
			Denial{Hook: "bind4", Addr: netip.AddrPortFrom(netip.IPv4Unspecified(), e.cfg.ProxyPort), Family: unix.AF_INET, Protocol: unix.IPPROTO_TCP}},
		{agentRequest{Op: "socket", Domain: unix.AF_INET, Type: unix.SOCK_RAW, Proto: unix.IPPROTO_ICMP, AsRoot: true},
			Denial{Hook: "sock_create", Family: unix.AF_INET, SockType: unix.SOCK_RAW, Protocol: unix.IPPROTO_ICMP}},
	} {
		t.Run(tt.want.Hook, func(t *testing.T) {
			a := e.spawnReq(leaf, tt.req)
			a.finish(t, nil)
			if a.res.Errno == 0 {
				t.Fatal("the agent's attempt succeeded")
			}
			want := tt.want
			want.CgroupID, want.PID, want.Comm = id, uint32(a.cmd.Process.Pid), agentComm
			if !tt.req.AsRoot {
				want.UID = agentUID
			}
			if got := next(); got != want {
				t.Fatalf("denial = %+v, want %+v", got, want)
			}
		})
	}
}
