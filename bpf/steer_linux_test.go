//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64 || wasm)

package bpf

// Privileged tests: real programs on real cgroups. As root, TestMain re-runs
// the test binary inside a fresh network namespace holding only lo, so no
// connect (even a mis-steered one) can leave loopback. Each test gets its own
// cgroup tree <cgroup2>/wirken-bpftest-<random>/ and pin directory
// /sys/fs/bpf/wirken-bpftest-<random>, removed in t.Cleanup. The "agent" is
// this test binary re-executed into a cgroup (UseCgroupFD) as nobody.

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/bits"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

const (
	envAgent = "WIRKEN_BPFTEST_AGENT" // JSON agentRequest: run as the agent
	envNetns = "WIRKEN_BPFTEST_NETNS" // set inside the private network namespace

	agentUID = 65534 // nobody
	agentGID = 65534
	// agentComm is the file name of the agent binary, hence its comm.
	agentComm = "wirken-agent"
)

// privSkipReason is why the privileged tests cannot run ("" = they can).
var privSkipReason string

func TestMain(m *testing.M) {
	if req := os.Getenv(envAgent); req != "" {
		os.Exit(agentMain(req))
	}
	if os.Geteuid() == 0 && os.Getenv(envNetns) == "" {
		code, err := runInPrivateNetns()
		if err == nil {
			os.Exit(code)
		}
		privSkipReason = fmt.Sprintf("cannot run in a private network namespace: %v", err)
	}
	if os.Getenv(envNetns) != "" {
		if err := loopbackOnly(); err != nil {
			privSkipReason = err.Error()
		}
	}
	code := m.Run()
	removeAgentBinary()
	os.Exit(code)
}

// runInPrivateNetns re-runs this test binary with the same arguments in a new
// network namespace and returns its exit code.
func runInPrivateNetns() (int, error) {
	exe, err := os.Executable()
	if err != nil {
		return 0, err
	}
	cmd := exec.Command(exe, os.Args[1:]...)
	cmd.Env = append(os.Environ(), envNetns+"=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	err = cmd.Wait()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return exit.ExitCode(), nil
	}
	if err != nil {
		return 0, err
	}
	return 0, nil
}

// loopbackOnly brings lo up and checks it is the only interface.
func loopbackOnly() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("bringing lo up: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return fmt.Errorf("bringing lo up: %w", err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bringing lo up: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bringing lo up: %w", err)
	}
	ifs, err := net.Interfaces()
	if err != nil {
		return fmt.Errorf("listing interfaces: %w", err)
	}
	if len(ifs) != 1 || ifs[0].Name != "lo" {
		return fmt.Errorf("network namespace is not private: %d interfaces", len(ifs))
	}
	return nil
}

// agentRequest tells the re-executed agent what to do.
type agentRequest struct {
	Network string // tcp4, tcp6, udp4, udp6: the socket's family and type
	Addr    string // destination ip:port
	Op      string // "" = connect; others in hooks_linux_test.go (agentOp)
	Bind    string // connect only: bind the socket to this ip:port first (SO_REUSEADDR)
	// For Op "socket": socket(Domain, Type, Proto).
	Domain, Type, Proto int
	AsRoot              bool // run the agent as root instead of nobody
}

// agentResult is what the agent reports on stdout after connect().
type agentResult struct {
	Errno int    // 0 on success
	Err   string // connect's error text
	Local string // getsockname after a successful connect
	Peer  string // getpeername after a successful connect
	From  string // Op dns-*: the source address of the reply
	Reply string // Op dns-*: the reply's payload
}

// agentMain connects as asked with raw syscalls (so the family is exactly the
// one asked for), reports, then for TCP holds the connection until the other
// end closes it.
func agentMain(raw string) int {
	var req agentRequest
	if err := json.Unmarshal([]byte(raw), &req); err != nil {
		fmt.Fprintln(os.Stderr, "agent: bad request:", err)
		return 2
	}
	if req.Op != "" {
		return agentOp(req)
	}
	dst, err := netip.ParseAddrPort(req.Addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "agent: bad address:", err)
		return 2
	}
	domain, typ := unix.AF_INET, unix.SOCK_STREAM
	if strings.HasSuffix(req.Network, "6") {
		domain = unix.AF_INET6
	}
	if strings.HasPrefix(req.Network, "udp") {
		typ = unix.SOCK_DGRAM
	}
	fd, err := unix.Socket(domain, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, "agent: socket:", err)
		return 2
	}
	defer unix.Close(fd)
	var sa unix.Sockaddr
	if domain == unix.AF_INET {
		sa = &unix.SockaddrInet4{Port: int(dst.Port()), Addr: dst.Addr().As4()}
	} else {
		// Dual-stack, so v4-mapped destinations are allowed.
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0); err != nil {
			fmt.Fprintln(os.Stderr, "agent: IPV6_V6ONLY:", err)
			return 2
		}
		sa = &unix.SockaddrInet6{Port: int(dst.Port()), Addr: dst.Addr().As16()}
	}
	if req.Bind != "" {
		if err := bindLocal(fd, domain, req.Bind); err != nil {
			fmt.Fprintln(os.Stderr, "agent: bind:", err)
			return 2
		}
	}
	tv := unix.NsecToTimeval(int64(10 * time.Second))
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)

	var res agentResult
	if err := unix.Connect(fd, sa); err != nil {
		var errno unix.Errno
		if errors.As(err, &errno) {
			res.Errno = int(errno)
		} else {
			res.Errno = -1
		}
		res.Err = err.Error()
	} else {
		res.Local = sockaddrString(unix.Getsockname(fd))
		res.Peer = sockaddrString(unix.Getpeername(fd))
	}
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		return 2
	}
	if res.Errno == 0 && typ == unix.SOCK_STREAM {
		buf := make([]byte, 64)
		for {
			n, err := unix.Read(fd, buf)
			if n <= 0 || err != nil {
				break
			}
		}
	}
	return 0
}

func sockaddrString(sa unix.Sockaddr, err error) string {
	if err != nil {
		return "error: " + err.Error()
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)).String()
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port)).String()
	}
	return fmt.Sprintf("unknown %T", sa)
}

var agentBin struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// agentBinary returns a copy of this test binary that nobody may execute (the
// go test build directory is private to root).
func agentBinary(t *testing.T) string {
	t.Helper()
	agentBin.once.Do(func() {
		exe, err := os.Executable()
		if err != nil {
			agentBin.err = err
			return
		}
		dir, err := os.MkdirTemp("", "wirken-bpftest-bin-")
		if err != nil {
			agentBin.err = err
			return
		}
		agentBin.dir = dir
		if err := os.Chmod(dir, 0o755); err != nil {
			agentBin.err = err
			return
		}
		src, err := os.Open(exe)
		if err != nil {
			agentBin.err = err
			return
		}
		defer src.Close()
		path := filepath.Join(dir, agentComm)
		dst, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o755)
		if err != nil {
			agentBin.err = err
			return
		}
		if _, err := io.Copy(dst, src); err != nil {
			dst.Close()
			agentBin.err = err
			return
		}
		if err := dst.Close(); err != nil {
			agentBin.err = err
			return
		}
		agentBin.path = path
	})
	if agentBin.err != nil {
		t.Fatalf("preparing the agent binary: %v", agentBin.err)
	}
	return agentBin.path
}

func removeAgentBinary() {
	if agentBin.dir != "" {
		os.RemoveAll(agentBin.dir)
	}
}

// requirePrivileged skips (or, under CI=true, fails) when the privileged
// tests cannot run here.
func requirePrivileged(t *testing.T) {
	t.Helper()
	reason := privSkipReason
	switch {
	case os.Geteuid() != 0:
		reason = "needs root"
	case reason == "" && os.Getenv(envNetns) == "":
		reason = "not in a private network namespace"
	}
	if reason == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("privileged test cannot run and CI=true forbids skipping: %s", reason)
	}
	t.Skip(reason)
}

// testEnv is one test's cgroup tree, pin directory and proxy listeners.
type testEnv struct {
	t       *testing.T
	root    string // <cgroup2>/wirken-bpftest-<random>
	agents  string // root/agents
	cgroups []string
	cfg     Config
	ln4     *net.TCPListener // 127.0.0.1:ProxyPort
	ln6     *net.TCPListener // [::1]:ProxyPort
	procs   []*exec.Cmd
}

func newTestEnv(t *testing.T) *testEnv {
	t.Helper()
	requirePrivileged(t)
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	mnt, err := parseCgroup2Mount(f)
	f.Close()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("no cgroup2 and CI=true forbids skipping: %v", err)
		}
		t.Skipf("no cgroup2: %v", err)
	}
	suffix := randomSuffix(t)
	e := &testEnv{t: t, root: filepath.Join(mnt.MountPoint, "wirken-bpftest-"+suffix)}
	e.agents = filepath.Join(e.root, "agents")
	e.cfg = Config{
		AgentsCgroup: e.agents,
		// agents/<name> is two below root, which is one below the mount.
		AgentLevel: uint32(pathDepth(mnt.Root) + 3),
		PinDir:     "/sys/fs/bpf/wirken-bpftest-" + suffix,
	}
	t.Cleanup(e.cleanup) // registered first, so it runs last
	e.mkdir(e.root)
	e.mkdir(e.agents)
	e.listenProxy()
	return e
}

func randomSuffix(t *testing.T) string {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func pathDepth(p string) int {
	n := 0
	for _, part := range strings.Split(p, "/") {
		if part != "" {
			n++
		}
	}
	return n
}

func (e *testEnv) mkdir(path string) {
	e.t.Helper()
	if err := os.Mkdir(path, 0o755); err != nil {
		e.t.Fatal(err)
	}
	e.cgroups = append(e.cgroups, path)
}

// cgroup creates root/<rel> and returns its path.
func (e *testEnv) cgroup(rel string) string {
	e.t.Helper()
	p := filepath.Join(e.root, rel)
	e.mkdir(p)
	return p
}

// cgroupID returns the id of the cgroup at path.
func (e *testEnv) cgroupID(path string) uint64 {
	e.t.Helper()
	id, err := CgroupID(path)
	if err != nil {
		e.t.Fatal(err)
	}
	return id
}

// listenProxy listens on 127.0.0.1:P and [::1]:P for a random high port P
// whose two bytes differ, so a byte-order slip cannot go unnoticed.
func (e *testEnv) listenProxy() {
	e.t.Helper()
	for range 50 {
		port := randomPort()
		ln4, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(port)})
		if err != nil {
			continue
		}
		ln6, err := net.ListenTCP("tcp6", &net.TCPAddr{IP: net.IPv6loopback, Port: int(port)})
		if err != nil {
			ln4.Close()
			continue
		}
		e.ln4, e.ln6, e.cfg.ProxyPort = ln4, ln6, port
		return
	}
	e.t.Fatal("no free proxy port")
}

// randomPort is a random high port whose two bytes differ and that is none of avoid.
func randomPort(avoid ...uint16) uint16 {
	for {
		port := uint16(20000 + mrand.IntN(40000))
		if bits.ReverseBytes16(port) != port && !slices.Contains(avoid, port) {
			return port
		}
	}
}

func (e *testEnv) closeProxy() {
	e.ln4.Close()
	e.ln6.Close()
}

// load loads the steering and closes it at the end of the test.
func (e *testEnv) load() *Steering {
	e.t.Helper()
	s, err := Load(e.cfg)
	if err != nil {
		e.t.Fatalf("Load: %v", err)
	}
	e.t.Cleanup(func() { s.Close() })
	return s
}

// agent is a running agent process and what it reported.
type agent struct {
	cmd *exec.Cmd
	res agentResult
}

// spawn starts the agent binary in the cgroup at cgPath as nobody, asks it
// to connect and waits for its report.
func (e *testEnv) spawn(cgPath, network, addr string) *agent {
	e.t.Helper()
	return e.spawnReq(cgPath, agentRequest{Network: network, Addr: addr})
}

// spawnReq is spawn with any request.
func (e *testEnv) spawnReq(cgPath string, r agentRequest) *agent {
	e.t.Helper()
	req, err := json.Marshal(r)
	if err != nil {
		e.t.Fatal(err)
	}
	cg, err := os.Open(cgPath)
	if err != nil {
		e.t.Fatal(err)
	}
	defer cg.Close()
	cmd := exec.Command(agentBinary(e.t))
	cmd.Env = []string{envAgent + "=" + string(req)}
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{
		UseCgroupFD: true,
		CgroupFD:    int(cg.Fd()),
		Credential:  &syscall.Credential{Uid: agentUID, Gid: agentGID},
		Pdeathsig:   syscall.SIGKILL,
	}
	if r.AsRoot {
		cmd.SysProcAttr.Credential = nil
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		e.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		e.t.Fatalf("starting agent: %v", err)
	}
	e.procs = append(e.procs, cmd)
	line := make(chan []byte, 1)
	go func() {
		b, _ := bufio.NewReader(out).ReadBytes('\n')
		line <- b
	}()
	a := &agent{cmd: cmd}
	select {
	case b := <-line:
		if err := json.Unmarshal(b, &a.res); err != nil {
			e.t.Fatalf("agent report %q: %v", b, err)
		}
	case <-time.After(15 * time.Second):
		e.t.Fatal("agent did not report")
	}
	return a
}

// accept takes the next connection from ln, or fails after a timeout.
func accept(t *testing.T, ln *net.TCPListener) *net.TCPConn {
	t.Helper()
	ln.SetDeadline(time.Now().Add(5 * time.Second))
	c, err := ln.AcceptTCP()
	if err != nil {
		t.Fatalf("accept on %s: %v", ln.Addr(), err)
	}
	return c
}

// nothingPending fails if ln has a connection waiting.
func nothingPending(t *testing.T, ln *net.TCPListener) {
	t.Helper()
	ln.SetDeadline(time.Now().Add(200 * time.Millisecond))
	c, err := ln.AcceptTCP()
	if err == nil {
		c.Close()
		t.Fatalf("unexpected connection from %s on %s", c.RemoteAddr(), ln.Addr())
	}
}

func addrPorts(c *net.TCPConn) (remote, local netip.AddrPort) {
	return c.RemoteAddr().(*net.TCPAddr).AddrPort(), c.LocalAddr().(*net.TCPAddr).AddrPort()
}

// decoy listens on addr (a would-be original destination) so that a connect
// that is not steered visibly lands somewhere else than the proxy.
func decoy(t *testing.T, network, addr string) *net.TCPListener {
	t.Helper()
	a, err := net.ResolveTCPAddr(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.ListenTCP(network, a)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// cleanup kills leftover agents, removes the pins (which detaches the links)
// and removes the cgroups leaf first. It runs even when the test failed.
func (e *testEnv) cleanup() {
	for _, cmd := range e.procs {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}
	if e.root != "" {
		// Anything else left in the tree (grandchildren) dies too.
		os.WriteFile(filepath.Join(e.root, "cgroup.kill"), []byte("1"), 0)
	}
	if e.cfg.PinDir != "" {
		if err := Remove(e.cfg.PinDir); err != nil {
			e.t.Errorf("cleanup: %v", err)
		}
	}
	for i := len(e.cgroups) - 1; i >= 0; i-- {
		var err error
		for range 100 {
			if err = unix.Rmdir(e.cgroups[i]); err == nil || errors.Is(err, unix.ENOENT) {
				err = nil
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			e.t.Errorf("cleanup: removing cgroup %s: %v", e.cgroups[i], err)
		}
	}
	if e.ln4 != nil {
		e.closeProxy()
	}
}

// finish closes the proxy side of the agent's connection and reaps it.
func (a *agent) finish(t *testing.T, c *net.TCPConn) {
	t.Helper()
	if c != nil {
		c.Close()
	}
	done := make(chan error, 1)
	go func() { done <- a.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("agent exited: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Error("agent did not exit")
	}
}

// TestSteerTCP covers v4, v4-mapped and native v6: the agent's connect lands
// on the proxy and Origin returns the destination and the agent's identity.
func TestSteerTCP(t *testing.T) {
	e := newTestEnv(t)
	leaf := e.cgroup("agents/a")
	s := e.load()
	if err := s.RegisterAgent(e.cgroupID(leaf)); err != nil {
		t.Fatal(err)
	}
	dstPort := e.cfg.ProxyPort + 1
	tests := []struct {
		name     string
		network  string
		dst      string
		proxy    *net.TCPListener
		wantPeer string // getpeername4/6: the original peer, not the proxy
		wantDst  string
	}{
		{"v4", "tcp4", fmt.Sprintf("127.0.0.2:%d", dstPort), e.ln4,
			fmt.Sprintf("127.0.0.2:%d", dstPort), fmt.Sprintf("127.0.0.2:%d", dstPort)},
		{"v4-mapped on AF_INET6", "tcp6", fmt.Sprintf("[::ffff:127.0.0.2]:%d", dstPort), e.ln4,
			fmt.Sprintf("[::ffff:127.0.0.2]:%d", dstPort), fmt.Sprintf("127.0.0.2:%d", dstPort)},
		{"native v6", "tcp6", fmt.Sprintf("[2001:db8::7]:%d", dstPort), e.ln6,
			fmt.Sprintf("[2001:db8::7]:%d", dstPort), fmt.Sprintf("[2001:db8::7]:%d", dstPort)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := e.spawn(leaf, tt.network, tt.dst)
			if a.res.Errno != 0 {
				t.Fatalf("agent connect to %s: %s", tt.dst, a.res.Err)
			}
			if a.res.Peer != tt.wantPeer {
				t.Errorf("getpeername says %s, want the original peer %s", a.res.Peer, tt.wantPeer)
			}
			c := accept(t, tt.proxy)
			defer a.finish(t, c)
			remote, local := addrPorts(c)
			o, err := s.Origin(remote, local)
			if err != nil {
				t.Fatalf("Origin(%s, %s): %v", remote, local, err)
			}
			want := Origin{
				Dst:      netip.MustParseAddrPort(tt.wantDst),
				CgroupID: e.cgroupID(leaf),
				PID:      uint32(a.cmd.Process.Pid),
				UID:      agentUID,
				GID:      agentGID,
				Comm:     agentComm,
			}
			if o != want {
				t.Fatalf("Origin = %+v, want %+v", o, want)
			}
			if _, err := s.Origin(remote, local); !errors.Is(err, ErrNoOrigin) {
				t.Fatalf("second Origin = %v, want ErrNoOrigin (entries are taken once)", err)
			}
		})
	}
}

// TestSockopsPortByteOrder reads the tuple entry the sockops program wrote
// and checks both ports are host order on this kernel (remote_port arrives
// in network order; see skops_remote_port in steer.c).
func TestSockopsPortByteOrder(t *testing.T) {
	e := newTestEnv(t)
	leaf := e.cgroup("agents/a")
	s := e.load()
	if err := s.RegisterAgent(e.cgroupID(leaf)); err != nil {
		t.Fatal(err)
	}
	a := e.spawn(leaf, "tcp4", fmt.Sprintf("127.0.0.2:%d", e.cfg.ProxyPort+1))
	if a.res.Errno != 0 {
		t.Fatalf("agent connect: %s", a.res.Err)
	}
	c := accept(t, e.ln4)
	defer a.finish(t, c)
	remote, _ := addrPorts(c)

	var (
		k     steerTupleKey
		v     steerSkMeta
		found []steerTupleKey
	)
	it := s.objs.OrigByTuple.Iterate()
	for it.Next(&k, &v) {
		if v.CgroupId == e.cgroupID(leaf) {
			found = append(found, k)
		}
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	want := tupleKey(remote, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), e.cfg.ProxyPort))
	if len(found) != 1 || found[0] != want {
		t.Fatalf("tuple entries for the agent: %+v, want exactly %+v (proxy port %d = %#04x)",
			found, want, e.cfg.ProxyPort, e.cfg.ProxyPort)
	}
}

// TestDenied: connects that must fail with EPERM.
func TestDenied(t *testing.T) {
	e := newTestEnv(t)
	registered := e.cgroup("agents/a")
	unregistered := e.cgroup("agents/b")
	s := e.load()
	if err := s.RegisterAgent(e.cgroupID(registered)); err != nil {
		t.Fatal(err)
	}
	dst4 := fmt.Sprintf("127.0.0.2:%d", e.cfg.ProxyPort+1)
	dst6 := fmt.Sprintf("[::2]:%d", e.cfg.ProxyPort+1)
	tests := []struct {
		name    string
		cgroup  string
		network string
		dst     string
	}{
		{"unregistered cgroup v4", unregistered, "tcp4", dst4},
		{"unregistered cgroup v6", unregistered, "tcp6", dst6},
		{"process in agents/ itself", e.agents, "tcp4", dst4},
		{"UDP v4 from a registered agent", registered, "udp4", dst4},
		{"UDP v6 from a registered agent", registered, "udp6", dst6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := e.spawn(tt.cgroup, tt.network, tt.dst)
			defer a.finish(t, nil)
			if a.res.Errno != int(unix.EPERM) {
				t.Fatalf("connect: errno %d (%s), want EPERM", a.res.Errno, a.res.Err)
			}
		})
	}
	nothingPending(t, e.ln4)
	nothingPending(t, e.ln6)

	// Unregistering takes effect for the next connect.
	if err := s.UnregisterAgent(e.cgroupID(registered)); err != nil {
		t.Fatal(err)
	}
	if err := s.UnregisterAgent(e.cgroupID(registered)); err != nil {
		t.Fatalf("unregistering twice: %v", err)
	}
	a := e.spawn(registered, "tcp4", dst4)
	defer a.finish(t, nil)
	if a.res.Errno != int(unix.EPERM) {
		t.Fatalf("connect after UnregisterAgent: errno %d (%s), want EPERM", a.res.Errno, a.res.Err)
	}
}

// TestOutsideAgentsNotSteered: a process in a sibling of agents/ connects
// where it asked to.
func TestOutsideAgentsNotSteered(t *testing.T) {
	e := newTestEnv(t)
	leaf := e.cgroup("agents/a")
	outside := e.cgroup("outside")
	s := e.load()
	if err := s.RegisterAgent(e.cgroupID(leaf)); err != nil {
		t.Fatal(err)
	}
	dst := fmt.Sprintf("127.0.0.2:%d", e.cfg.ProxyPort+1)
	target := decoy(t, "tcp4", dst)
	a := e.spawn(outside, "tcp4", dst)
	if a.res.Errno != 0 {
		t.Fatalf("connect from outside agents/: %s", a.res.Err)
	}
	if a.res.Peer != dst {
		t.Errorf("connected to %s, want %s", a.res.Peer, dst)
	}
	c := accept(t, target)
	a.finish(t, c)
	nothingPending(t, e.ln4)
}

// TestReloadKeepsSteering: a second Load on the same pin directory (daemon
// restart) swaps the programs on the same links and keeps the registrations.
func TestReloadKeepsSteering(t *testing.T) {
	e := newTestEnv(t)
	leaf := e.cgroup("agents/a")
	s1, err := Load(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s1.RegisterAgent(e.cgroupID(leaf)); err != nil {
		t.Fatal(err)
	}
	before := pinnedLinks(t, e.cfg.PinDir)
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}

	s2 := e.load() // no RegisterAgent: the pinned agents map carries over
	after := pinnedLinks(t, e.cfg.PinDir)
	if len(before) != len(hookNames) || len(after) != len(hookNames) {
		t.Fatalf("pinned links before %v after %v, want %d each", before, after, len(hookNames))
	}
	for name, b := range before {
		a := after[name]
		if a.ID != b.ID {
			t.Errorf("link %s: id %d became %d, want the same link updated", name, b.ID, a.ID)
		}
		if a.Program == b.Program {
			t.Errorf("link %s: still runs program %d, want the newly loaded one", name, a.Program)
		}
	}
	for _, a := range attachments(s2.objs) {
		if n := attachedPrograms(t, e.agents, a.attach); n != 1 {
			t.Errorf("%s: %d programs attached to agents/, want 1", a.attach, n)
		}
	}

	dst := fmt.Sprintf("127.0.0.2:%d", e.cfg.ProxyPort+1)
	a := e.spawn(leaf, "tcp4", dst)
	if a.res.Errno != 0 {
		t.Fatalf("agent connect after reload: %s", a.res.Err)
	}
	c := accept(t, e.ln4)
	defer a.finish(t, c)
	remote, local := addrPorts(c)
	o, err := s2.Origin(remote, local)
	if err != nil {
		t.Fatal(err)
	}
	if o.Dst.String() != dst || o.CgroupID != e.cgroupID(leaf) {
		t.Fatalf("Origin after reload = %+v, want %s from cgroup %d", o, dst, e.cgroupID(leaf))
	}
}

// TestLoadRefusesForeignPins: a pin directory whose links steer another
// cgroup is not silently taken over.
func TestLoadRefusesForeignPins(t *testing.T) {
	e := newTestEnv(t)
	e.load()
	other := e.cgroup("other-agents")
	cfg := e.cfg
	cfg.AgentsCgroup = other
	if s, err := Load(cfg); err == nil {
		s.Close()
		t.Fatal("Load took over links pinned for another cgroup")
	} else if !strings.Contains(err.Error(), "remove the pin directory") {
		t.Fatalf("Load: %v, want a hint to remove the pins", err)
	}
}

func pinnedLinks(t *testing.T, pinDir string) map[string]link.Info {
	t.Helper()
	return pinnedLinksIn(t, filepath.Join(pinDir, "links"))
}

// pinnedLinksIn returns the links pinned directly in dir (not in its subdirectories).
func pinnedLinksIn(t *testing.T, dir string) map[string]link.Info {
	t.Helper()
	out := map[string]link.Info{}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, ent := range entries {
		if ent.IsDir() {
			continue
		}
		l, err := link.LoadPinnedLink(filepath.Join(dir, ent.Name()), nil)
		if err != nil {
			t.Fatal(err)
		}
		info, err := l.Info()
		l.Close()
		if err != nil {
			t.Fatal(err)
		}
		out[ent.Name()] = *info
	}
	return out
}

func attachedPrograms(t *testing.T, cgPath string, at ebpf.AttachType) int {
	t.Helper()
	f, err := os.Open(cgPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := link.QueryPrograms(link.QueryOptions{Target: int(f.Fd()), Attach: at})
	if err != nil {
		t.Fatal(err)
	}
	return len(res.Programs)
}

// TestFailsClosedAfterClose: with the daemon gone (Steering closed, pins
// kept) and nothing on the proxy port, agents get ECONNREFUSED instead of
// reaching their destination.
func TestFailsClosedAfterClose(t *testing.T) {
	e := newTestEnv(t)
	leaf := e.cgroup("agents/a")
	s, err := Load(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RegisterAgent(e.cgroupID(leaf)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Origin(netip.MustParseAddrPort("127.0.0.1:1"), netip.MustParseAddrPort("127.0.0.1:2")); err == nil {
		t.Fatal("Origin on a closed Steering succeeded")
	}
	e.closeProxy()
	dst4 := fmt.Sprintf("127.0.0.2:%d", e.cfg.ProxyPort+1)
	dst6 := fmt.Sprintf("[::1]:%d", e.cfg.ProxyPort+1)
	target4 := decoy(t, "tcp4", dst4)
	target6 := decoy(t, "tcp6", dst6)
	for _, tc := range []struct{ network, dst string }{{"tcp4", dst4}, {"tcp6", dst6}} {
		a := e.spawn(leaf, tc.network, tc.dst)
		a.finish(t, nil)
		if a.res.Errno != int(unix.ECONNREFUSED) {
			t.Errorf("%s connect to %s with the daemon gone: errno %d (%s), want ECONNREFUSED",
				tc.network, tc.dst, a.res.Errno, a.res.Err)
		}
	}
	nothingPending(t, target4)
	nothingPending(t, target6)
}

// TestOriginMiss: a connection the programs never saw has no origin.
func TestOriginMiss(t *testing.T) {
	e := newTestEnv(t)
	s := e.load()
	// This process is outside agents/, so its connect is not steered.
	d, err := net.Dial("tcp4", e.ln4.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	c := accept(t, e.ln4)
	defer c.Close()
	remote, local := addrPorts(c)
	tests := []struct {
		name          string
		client, local netip.AddrPort
	}{
		{"unsteered connection", remote, local},
		{"made-up tuple", netip.MustParseAddrPort("127.0.0.9:1234"), local},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.Origin(tt.client, tt.local)
			if !errors.Is(err, ErrNoOrigin) {
				t.Fatalf("Origin(%s, %s) = %v, want ErrNoOrigin", tt.client, tt.local, err)
			}
		})
	}
}

// TestDirectToProxyLeftAlone: a connect that already targets the proxy is
// not rewritten and gets no record (idempotence toward rewritten addresses),
// so the proxy finds no origin for it and resets it.
func TestDirectToProxyLeftAlone(t *testing.T) {
	e := newTestEnv(t)
	leaf := e.cgroup("agents/a")
	s := e.load()
	if err := s.RegisterAgent(e.cgroupID(leaf)); err != nil {
		t.Fatal(err)
	}
	p := e.cfg.ProxyPort
	tests := []struct {
		name    string
		network string
		dst     string
		proxy   *net.TCPListener
	}{
		{"v4", "tcp4", fmt.Sprintf("127.0.0.1:%d", p), e.ln4},
		{"v4-mapped", "tcp6", fmt.Sprintf("[::ffff:127.0.0.1]:%d", p), e.ln4},
		{"v6", "tcp6", fmt.Sprintf("[::1]:%d", p), e.ln6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := e.spawn(leaf, tt.network, tt.dst)
			if a.res.Errno != 0 {
				t.Fatalf("connect to the proxy: %s", a.res.Err)
			}
			c := accept(t, tt.proxy)
			defer a.finish(t, c)
			remote, local := addrPorts(c)
			if o, err := s.Origin(remote, local); !errors.Is(err, ErrNoOrigin) {
				t.Fatalf("Origin = %+v, %v; want ErrNoOrigin", o, err)
			}
		})
	}
}

// TestLoadReplacesDefunctLinks: when the agents cgroup was removed and made
// again (new id), the old pinned links steer nothing; Load replaces them.
func TestLoadReplacesDefunctLinks(t *testing.T) {
	e := newTestEnv(t)
	s, err := Load(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	oldID := e.cgroupID(e.agents)
	if err := unix.Rmdir(e.agents); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(e.agents, 0o755); err != nil {
		t.Fatal(err)
	}
	if e.cgroupID(e.agents) == oldID {
		t.Fatal("recreated cgroup kept its id")
	}
	leaf := e.cgroup("agents/a")

	// Straight away: the kernel may not have released the old links yet.
	s2, err := Load(e.cfg)
	if err != nil {
		t.Fatalf("Load after the agents cgroup was recreated: %v", err)
	}
	defer s2.Close()
	for _, a := range attachments(s2.objs) {
		if n := attachedPrograms(t, e.agents, a.attach); n != 1 {
			t.Errorf("%s: %d programs attached to the new agents/, want 1", a.attach, n)
		}
	}
	if err := s2.RegisterAgent(e.cgroupID(leaf)); err != nil {
		t.Fatal(err)
	}
	a := e.spawn(leaf, "tcp4", fmt.Sprintf("127.0.0.2:%d", e.cfg.ProxyPort+1))
	if a.res.Errno != 0 {
		t.Fatalf("agent connect: %s", a.res.Err)
	}
	c := accept(t, e.ln4)
	defer a.finish(t, c)
	remote, local := addrPorts(c)
	if _, err := s2.Origin(remote, local); err != nil {
		t.Fatal(err)
	}
}
