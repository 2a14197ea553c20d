//go:build linux

package vmtests

// Kernel enforcement end to end: a real agent (this test binary, re-executed through
// `wirken exec` as the agent's unprivileged user) tries every way out, and the daemon is killed
// and restarted under an agent that keeps connecting.

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// escapeAgentArg, as the first argument, makes the test binary an agent helper (TestMain).
const escapeAgentArg = "wirken-escape-agent"

// escapeResult is what the helper prints.
type escapeResult struct {
	Errno  int    // 0: the attempt succeeded
	Err    string // its error
	Detail string // what it got
}

func escapeAgent(args []string) int {
	var res escapeResult
	fail := func(err error) {
		res.Err, res.Errno = err.Error(), -1
		if errno := unix.Errno(0); errors.As(err, &errno) {
			res.Errno = int(errno)
		}
	}
	switch args[0] {
	case "tls": // tls ADDR SNI: connect (family as written) and shake hands; Detail = issuer
		conn, err := dialExact(args[1])
		if err != nil {
			fail(err)
			break
		}
		c := tls.Client(conn, &tls.Config{ServerName: args[2], InsecureSkipVerify: true})
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if err := c.Handshake(); err != nil {
			fail(err)
		} else {
			res.Detail = c.ConnectionState().PeerCertificates[0].Issuer.CommonName
		}
		c.Close()
	case "peer": // peer ADDR: connect; Detail = getpeername
		fd, sa, err := exactSocket(args[1], unix.SOCK_STREAM)
		if err == nil {
			err = unix.Connect(fd, sa)
		}
		if err != nil {
			fail(err)
			break
		}
		pa, err := unix.Getpeername(fd)
		if err != nil {
			fail(err)
		} else {
			res.Detail = sockaddrText(pa)
		}
		unix.Close(fd)
	case "udp": // udp ADDR: one datagram
		fd, sa, err := exactSocket(args[1], unix.SOCK_DGRAM)
		if err == nil {
			err = unix.Sendto(fd, []byte("x"), 0, sa)
			unix.Close(fd)
		}
		if err != nil {
			fail(err)
		}
	case "dns-udp": // dns-udp ADDR NAME connected|unconnected; Detail = "rcode answers from"
		detail, err := dnsOverUDP(args[1], args[2], args[3] == "connected")
		if err != nil {
			fail(err)
		}
		res.Detail = detail
	case "dns-tcp": // dns-tcp ADDR NAME
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn(args[2]), dns.TypeA)
		r, _, err := (&dns.Client{Net: "tcp", Timeout: 5 * time.Second}).Exchange(m, args[1])
		if err != nil {
			fail(err)
		} else {
			res.Detail = dns.RcodeToString[r.Rcode] + " " + answers(r)
		}
	case "socket": // socket DOMAIN TYPE PROTO
		d, _ := strconv.Atoi(args[1])
		ty, _ := strconv.Atoi(args[2])
		p, _ := strconv.Atoi(args[3])
		fd, err := unix.Socket(d, ty, p)
		if err != nil {
			fail(err)
		} else {
			unix.Close(fd)
		}
	case "bind": // bind tcp|udp ADDR
		typ := unix.SOCK_STREAM
		if args[1] == "udp" {
			typ = unix.SOCK_DGRAM
		}
		fd, sa, err := exactSocket(args[2], typ)
		if err == nil {
			err = unix.Bind(fd, sa)
			unix.Close(fd)
		}
		if err != nil {
			fail(err)
		}
	case "join": // join CGROUP.PROCS: write our pid there
		if err := os.WriteFile(args[1], []byte(strconv.Itoa(os.Getpid())), 0); err != nil {
			fail(err)
		}
	case "loop": // loop SECONDS: resolve api.example.test, connect, shake hands; count issuers
		res.Detail = connectLoop(args[1])
	default:
		more, ok := moreEscapes(args) // escape_ops_test.go
		if !ok {
			fmt.Fprintln(os.Stderr, "unknown op", args[0])
			return 2
		}
		res = more
	}
	json.NewEncoder(os.Stdout).Encode(res)
	return 0
}

// exactSocket opens a socket of the family the address is written in: "[::ffff:a.b.c.d]:p"
// gives a dual-stack AF_INET6 socket (Go's dialer would pick AF_INET).
func exactSocket(addr string, typ int) (int, unix.Sockaddr, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return -1, nil, err
	}
	if !strings.HasPrefix(addr, "[") {
		fd, err := unix.Socket(unix.AF_INET, typ|unix.SOCK_CLOEXEC, 0)
		return fd, &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}, err
	}
	fd, err := unix.Socket(unix.AF_INET6, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, nil, err
	}
	unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0)
	return fd, &unix.SockaddrInet6{Addr: ap.Addr().As16(), Port: int(ap.Port())}, nil
}

func dialExact(addr string) (net.Conn, error) {
	fd, sa, err := exactSocket(addr, unix.SOCK_STREAM)
	if err != nil {
		return nil, err
	}
	if err := unix.Connect(fd, sa); err != nil {
		unix.Close(fd)
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "agent-conn")
	defer f.Close()
	return net.FileConn(f)
}

func sockaddrText(sa unix.Sockaddr) string {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)).String()
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port)).String()
	}
	return fmt.Sprintf("%T", sa)
}

func answers(m *dns.Msg) string {
	var ips []string
	for _, rr := range m.Answer {
		if a, ok := rr.(*dns.A); ok {
			ips = append(ips, a.A.String())
		}
	}
	return strings.Join(ips, ",")
}

// dnsOverUDP asks for name's A record at server, from a connected or unconnected socket, and
// returns "RCODE answers source".
func dnsOverUDP(server, name string, connected bool) (string, error) {
	fd, sa, err := exactSocket(server, unix.SOCK_DGRAM)
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	tv := unix.NsecToTimeval(int64(5 * time.Second))
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	q, err := m.Pack()
	if err != nil {
		return "", err
	}
	if connected {
		if err := unix.Connect(fd, sa); err != nil {
			return "", err
		}
		err = unix.Send(fd, q, 0)
	} else {
		err = unix.Sendto(fd, q, 0, sa)
	}
	if err != nil {
		return "", err
	}
	buf := make([]byte, 1500)
	n, from, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		return "", err
	}
	var r dns.Msg
	if err := r.Unpack(buf[:n]); err != nil {
		return "", err
	}
	return dns.RcodeToString[r.Rcode] + " " + answers(&r) + " " + sockaddrText(from), nil
}

// connectLoop resolves api.example.test through the system resolver (steered to wirken) and
// shakes hands with it, again and again; when resolving fails it tries 127.0.0.2 anyway, as an
// agent with a cached address would. It returns "issuer=count;..." ("error" for failures).
func connectLoop(secs string) string {
	s, _ := strconv.Atoi(secs)
	deadline := time.Now().Add(time.Duration(s) * time.Second)
	counts := map[string]int{}
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		ip := "127.0.0.2"
		if ips, err := net.DefaultResolver.LookupHost(ctx, "api.example.test"); err == nil && len(ips) > 0 {
			ip = ips[0]
		} else {
			counts["dns-error"]++
		}
		cancel()
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", net.JoinHostPort(ip, "443"),
			&tls.Config{ServerName: "api.example.test", InsecureSkipVerify: true})
		if err != nil {
			counts["error"]++
			time.Sleep(20 * time.Millisecond)
			continue
		}
		counts[c.ConnectionState().PeerCertificates[0].Issuer.CommonName]++
		c.Close()
	}
	var parts []string
	for k, v := range counts {
		parts = append(parts, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(parts)
	return strings.Join(parts, ";")
}

var escapeBin struct {
	once sync.Once
	path string
	err  error
}

// escapeBinary is a copy of this test binary that the agent user may run.
func escapeBinary(t *testing.T) string {
	t.Helper()
	escapeBin.once.Do(func() {
		exe, err := os.Executable()
		if err != nil {
			escapeBin.err = err
			return
		}
		data, err := os.ReadFile(exe)
		if err != nil {
			escapeBin.err = err
			return
		}
		escapeBin.path = filepath.Join(filepath.Dir(wirkenBin), "escape-agent") // 0755, removed by TestMain
		escapeBin.err = os.WriteFile(escapeBin.path, data, 0o755)
	})
	if escapeBin.err != nil {
		t.Fatalf("preparing the agent helper: %v", escapeBin.err)
	}
	return escapeBin.path
}

// escape runs the helper as agent demo and returns its report.
func (e *env) escape(args ...string) escapeResult {
	e.t.Helper()
	r := e.asAgent(append([]string{escapeBinary(e.t), escapeAgentArg}, args...)...)
	var res escapeResult
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &res) != nil {
		e.t.Fatalf("agent helper %v: exit %d\nstdout: %s\nstderr: %s", args, r.code, r.stdout, r.stderr)
	}
	return res
}

// otherResolver is a DNS server on 127.0.0.4:53 that an agent might try instead of the one
// it is given: it answers every name with 127.0.0.3 and counts queries.
func startOtherResolver(t *testing.T) *dnsUpstream {
	t.Helper()
	u := &dnsUpstream{addr: "127.0.0.4:53"}
	pc, err := net.ListenPacket("udp", u.addr)
	if err != nil {
		t.Fatalf("other resolver on %s: %v", u.addr, err)
	}
	ln, err := net.Listen("tcp", u.addr)
	if err != nil {
		pc.Close()
		t.Fatalf("other resolver on %s: %v", u.addr, err)
	}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		u.mu.Lock()
		u.asked = append(u.asked, req.Question[0].Name)
		u.mu.Unlock()
		m := new(dns.Msg)
		m.SetReply(req)
		m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: req.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 30}, A: net.ParseIP("127.0.0.3")})
		w.WriteMsg(m)
	})
	for _, s := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}} {
		go s.ActivateAndServe()
		t.Cleanup(func() { s.Shutdown() })
	}
	return u
}

func TestKernelEnforcement(t *testing.T) {
	e := newEnv(t)
	other := startOtherResolver(t)

	t.Run("DNS works over connected and unconnected UDP and over TCP", func(t *testing.T) {
		for _, tt := range []struct{ op, addr, mode, want string }{
			{"dns-udp", "127.0.0.4:53", "unconnected", "NOERROR 127.0.0.2 127.0.0.4:53"},
			{"dns-udp", "127.0.0.4:53", "connected", "NOERROR 127.0.0.2 127.0.0.4:53"},
			{"dns-udp", "[::ffff:127.0.0.4]:53", "unconnected", "NOERROR 127.0.0.2 [::ffff:127.0.0.4]:53"},
			{"dns-udp", "[::ffff:127.0.0.4]:53", "connected", "NOERROR 127.0.0.2 [::ffff:127.0.0.4]:53"},
			{"dns-tcp", "127.0.0.4:53", "", "NOERROR 127.0.0.2"},
		} {
			args := []string{tt.op, tt.addr, "api.example.test"}
			if tt.mode != "" {
				args = append(args, tt.mode)
			}
			r := e.escape(args...)
			if r.Errno != 0 || r.Detail != tt.want {
				t.Errorf("%v: %+v; want the answer of wirken's resolver %q", args, r, tt.want)
			}
		}
	})

	t.Run("DNS for a name with no rule is NXDOMAIN", func(t *testing.T) {
		for _, mode := range []string{"connected", "unconnected"} {
			r := e.escape("dns-udp", "127.0.0.4:53", "evil.example.test", mode)
			if r.Errno != 0 || !strings.HasPrefix(r.Detail, "NXDOMAIN ") {
				t.Errorf("%s: %+v; want NXDOMAIN", mode, r)
			}
		}
		for _, q := range e.dnsUp.queries() {
			if q == "evil.example.test" {
				t.Error("the name with no rule was forwarded upstream")
			}
		}
		deny := e.records("dns.deny")
		if len(deny) < 2 || deny[len(deny)-1]["host"] != "evil.example.test" || deny[len(deny)-1]["agent"] != "demo" {
			t.Errorf("dns.deny records = %v", deny)
		}
		allow := e.records("dns.query")
		if len(allow) == 0 || allow[0]["host"] != "api.example.test" || allow[0]["decision"] != "allow" {
			t.Errorf("dns.query records = %v", allow)
		}
	})

	t.Run("DNS to another resolver never reaches it", func(t *testing.T) {
		if r := e.escape("udp", "127.0.0.4:5353"); r.Errno != int(unix.EPERM) {
			t.Errorf("DNS to a non-53 port: %+v; want EPERM", r)
		}
		if q := other.queries(); len(q) != 0 {
			t.Errorf("the other resolver was asked %v", q)
		}
	})

	t.Run("getpeername shows the original peer", func(t *testing.T) {
		for _, addr := range []string{"127.0.0.2:443", "[::ffff:127.0.0.2]:443"} {
			if r := e.escape("peer", addr); r.Errno != 0 || r.Detail != addr {
				t.Errorf("peer %s: %+v", addr, r)
			}
		}
	})

	t.Run("audit records name the calling process", func(t *testing.T) {
		e.asAgent(curlArgs("api.example.test", "127.0.0.2", "/echo", "--fail")...).mustSucceed(t)
		use := e.records("credential.use")
		if len(use) == 0 {
			t.Fatal("no credential.use record")
		}
		last := use[len(use)-1]
		if last["comm"] != "curl" || last["uid"] != float64(65534) || last["pid"] == nil || last["pid"].(float64) <= 0 {
			t.Fatalf("credential.use has comm %v uid %v pid %v; want curl, 65534 (nobody), a pid", last["comm"], last["uid"], last["pid"])
		}
	})

	t.Run("escapes fail", func(t *testing.T) {
		deniesBefore := len(e.records("conn.deny"))
		for _, tt := range []struct {
			name string
			args []string
			want unix.Errno // 0: any failure
		}{
			{"TCP to a non-allowed IP", []string{"tls", "127.0.0.3:443", "evil.example.test"}, 0},
			{"TCP to an allowed name's host at an address it was not resolved to", []string{"tls", "127.0.0.3:443", "api.example.test"}, 0},
			{"native IPv6", []string{"tls", "[2001:db8::1]:443", "api.example.test"}, 0},
			{"::ffff: mapped IPv4", []string{"tls", "[::ffff:127.0.0.3]:443", "evil.example.test"}, 0},
			{"UDP to 443 (v4)", []string{"udp", "127.0.0.3:443"}, unix.EPERM},
			{"UDP to 443 (mapped)", []string{"udp", "[::ffff:127.0.0.3]:443"}, unix.EPERM},
			{"UDP to 443 (v6)", []string{"udp", "[2001:db8::1]:443"}, unix.EPERM},
			{"raw socket", []string{"socket", "2", strconv.Itoa(unix.SOCK_RAW), "1"}, unix.EPERM},
			{"raw IPv6 socket", []string{"socket", "10", strconv.Itoa(unix.SOCK_RAW), "58"}, unix.EPERM},
			{"AF_PACKET socket", []string{"socket", "17", strconv.Itoa(unix.SOCK_RAW), "768"}, unix.EPERM},
			{"UDP-Lite socket", []string{"socket", "2", strconv.Itoa(unix.SOCK_DGRAM), "136"}, unix.EPERM},
			{"MPTCP socket", []string{"socket", "2", strconv.Itoa(unix.SOCK_STREAM), "262"}, 0},
			{"binding the proxy port", []string{"bind", "tcp", fmt.Sprintf("127.0.0.1:%d", e.proxyPort)}, unix.EPERM},
			{"binding the resolver port", []string{"bind", "udp", fmt.Sprintf("0.0.0.0:%d", e.dnsPort)}, unix.EPERM},
			{"joining the daemon's cgroup", []string{"join", filepath.Join(e.cgroup, "daemon", "cgroup.procs")}, 0},
			{"joining the root cgroup", []string{"join", filepath.Join(cgroup2Mount(t), "cgroup.procs")}, 0},
		} {
			r := e.escape(tt.args...)
			switch {
			case r.Errno == 0:
				t.Errorf("%s: succeeded (%+v)", tt.name, r)
			case tt.want != 0 && r.Errno != int(tt.want):
				t.Errorf("%s: %+v; want %v", tt.name, r, tt.want)
			}
			if r.Detail == "wirken e2e upstream CA" {
				t.Errorf("%s: reached the upstream directly", tt.name)
			}
		}
		if n := e.other.ln.accepted.Load(); n != 0 {
			t.Errorf("the upstream with no rule accepted %d connections", n)
		}
		kdeny := map[string]bool{}
		for range 50 { // the daemon audits kernel denials as it reads them
			for _, r := range e.records("kernel.deny") {
				if r["agent"] == "demo" && r["comm"] == "escape-agent" {
					kdeny[r["reason"].(string)] = true
				}
			}
			if len(kdeny) >= 4 {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		for _, want := range []string{"sendmsg4 refused", "sendmsg6 refused", "sock_create refused", "bind4 refused"} {
			if !kdeny[want] {
				t.Errorf("no kernel.deny record %q for the agent (have %v)", want, kdeny)
			}
		}
		// Raw and packet sockets are refused by the kernel itself (no CAP_NET_RAW) before the
		// hook runs; the UDP-Lite attempt reaches sock_create. The native IPv6 attempt is
		// refused without a record if the host has no [::1].
		if n := len(e.records("conn.deny")) - deniesBefore; n < 3 {
			t.Errorf("%d conn.deny records for the refused TCP attempts, want at least 3", n)
		}
	})
}

// TestDaemonRestartUnderLoad: an agent keeps resolving and connecting while the daemon is
// SIGKILLed and restarted. No connection may go direct; traffic resumes after the restart.
func TestDaemonRestartUnderLoad(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, wirkenBin, "exec", "--agent", "demo", "--", escapeBinary(t), escapeAgentArg, "loop", "9")
	cmd.Env = append(os.Environ(), "WIRKEN_CONFIG="+e.config)
	var out strings.Builder
	cmd.Stdout = &out
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	e.killDaemon()
	time.Sleep(2 * time.Second)
	e.startDaemon()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("agent loop: %v", err)
	}
	var res escapeResult
	if err := json.Unmarshal([]byte(out.String()), &res); err != nil {
		t.Fatalf("agent loop report %q: %v", out.String(), err)
	}
	t.Logf("handshakes by issuer: %s", res.Detail)
	counts := map[string]int{}
	for _, kv := range strings.Split(res.Detail, ";") {
		k, v, _ := strings.Cut(kv, "=")
		counts[k], _ = strconv.Atoi(v)
	}
	if counts["wirken e2e upstream CA"] != 0 {
		t.Fatalf("%d connections reached the upstream directly", counts["wirken e2e upstream CA"])
	}
	if counts["error"] == 0 {
		t.Error("no connection failed while the daemon was dead: was it really killed?")
	}
	proxied := 0
	for k, v := range counts {
		if k != "error" && k != "dns-error" {
			proxied += v
		}
	}
	if proxied == 0 {
		t.Fatal("no handshake went through the proxy")
	}
	// After the restart: the pinned programs kept steering, the new daemon serves again.
	if r := e.escape("dns-udp", "127.0.0.4:53", "api.example.test", "connected"); r.Errno != 0 || r.Detail != "NOERROR 127.0.0.2 127.0.0.4:53" {
		t.Errorf("DNS after the restart: %+v; want wirken's answer (nothing listens on 127.0.0.4 here)", r)
	}
	e.asAgent(curlArgs("api.example.test", "127.0.0.2", "/echo", "--fail")...).mustSucceed(t)
}

// unitCgroup makes a cgroup outside wirken's tree, as a systemd unit's, and removes it (killing
// what runs there) at the end of the test. It returns its name (relative to the cgroup2 mount)
// and path.
func unitCgroup(t *testing.T) (string, string) {
	t.Helper()
	name := "wirken-e2e-unit-" + randHex(t, 4)
	unit := filepath.Join(cgroup2Mount(t), name)
	if err := os.Mkdir(unit, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		os.WriteFile(filepath.Join(unit, "cgroup.kill"), []byte("1"), 0)
		for range 50 {
			if err := os.Remove(unit); err == nil || errors.Is(err, os.ErrNotExist) {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Errorf("cleanup: cgroup %s stays", unit)
	})
	return name, unit
}

// TestBoundAgent: an agent bound by the policy to an existing cgroup outside wirken's tree (as
// a systemd unit's would be) is steered as that agent: its DNS goes to wirken, its requests are
// authorized and audited under its name.
func TestBoundAgent(t *testing.T) {
	e := newEnv(t)
	name, unit := unitCgroup(t)
	pol, err := os.ReadFile(filepath.Join(e.dir, "policy.toml"))
	if err != nil {
		t.Fatal(err)
	}
	base := pol
	pol = append(append([]byte(nil), base...), fmt.Sprintf(`
[agents.svc]
user = "nobody"
cgroup = "/%s"

[[rules]]
name = "svc-api"
agent = "svc"
hosts = ["api.example.test"]
ports = [443]
credential = "api"
`, name)...)
	write(t, filepath.Join(e.dir, "policy.toml"), pol)
	e.wirken(nil, "reload").mustSucceed(t)

	// As a unit would start it: straight into its cgroup, not through wirken exec.
	fd, err := unix.Open(unit, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := curlArgs("api.example.test", "127.0.0.2", "/echo", "--fail", "-k")
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd, Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	before := len(e.api.seen())
	run(t, nil, cmd).mustSucceed(t)
	seen := e.api.seen()
	if len(seen) != before+1 || seen[len(seen)-1] != "Bearer "+e.canary {
		t.Fatalf("upstream saw %q; want the credential injected for the bound agent", seen[before:])
	}
	use := e.records("credential.use")
	if last := use[len(use)-1]; last["agent"] != "svc" || last["rule"] != "svc-api" {
		t.Fatalf("credential.use = %v; want agent svc by rule svc-api", last)
	}

	// The unit restarts: a new cgroup at the same path. The daemon binds it again by itself.
	os.WriteFile(filepath.Join(unit, "cgroup.kill"), []byte("1"), 0)
	for i := 0; os.Remove(unit) != nil; i++ {
		if i == 100 {
			t.Fatalf("cannot remove %s", unit)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := os.Mkdir(unit, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := 0; !strings.Contains(e.logs.String(), "bound cgroup recreated"); i++ {
		if i == 100 {
			t.Fatalf("the recreated cgroup was not bound again\n%s", e.logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	fd2, err := unix.Open(unit, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd2)
	cmd = exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd2, Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	run(t, nil, cmd).mustSucceed(t)
	if seen := e.api.seen(); seen[len(seen)-1] != "Bearer "+e.canary {
		t.Fatalf("after the unit restarted the upstream saw %q; want the credential injected (steered)", seen[len(seen)-1])
	}

	// Unbinding (the agent leaves the policy) detaches the programs: the cgroup is the unit's
	// own again and wirken's pins for it are gone.
	write(t, filepath.Join(e.dir, "policy.toml"), base)
	e.wirken(nil, "reload").mustSucceed(t)
	if _, err := os.Stat(filepath.Join(e.pinDir, "links", "bound", "svc")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("bound links left after the agent left the policy: %v", err)
	}
}
