//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64 || wasm)

package bpf

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// bindLocal binds fd to addr (ip:port) with SO_REUSEADDR, for the agent.
func bindLocal(fd, domain int, addr string) error {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return err
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return err
	}
	if domain == unix.AF_INET {
		return unix.Bind(fd, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()})
	}
	return unix.Bind(fd, &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()})
}

// bootNow is CLOCK_BOOTTIME, the clock of the records' ktime_boot.
func bootNow(t *testing.T) uint64 {
	t.Helper()
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		t.Fatal(err)
	}
	return uint64(ts.Nano())
}

// entriesFor lists the keys of m whose client port is port.
func entriesFor(t *testing.T, s *Steering, port uint16) []steerTupleKey {
	t.Helper()
	var (
		k     steerTupleKey
		v     steerSkMeta
		found []steerTupleKey
	)
	it := s.objs.OrigByTuple.Iterate()
	for it.Next(&k, &v) {
		if k.ClientPort == port {
			found = append(found, k)
		}
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return found
}

// TestRefusedConnectLeavesNoRecord: an agent's steered connect refused while
// no proxy listens leaves no tuple record behind, so a later connection from
// the same address and port, made straight to the proxy's port by a process
// without metadata, is not served as the first agent.
func TestRefusedConnectLeavesNoRecord(t *testing.T) {
	e := newTestEnv(t)
	a1 := e.cgroup("agents/a")
	b := e.cgroup("agents/b")
	s := e.load()
	for _, cg := range []string{a1, b} {
		if err := s.RegisterAgent(e.cgroupID(cg)); err != nil {
			t.Fatal(err)
		}
	}
	client := randomPort(e.cfg.ProxyPort, e.cfg.DNSPort)
	bind := fmt.Sprintf("127.0.0.1:%d", client)

	// The daemon is down: nothing listens on the proxy port.
	e.closeProxy()
	first := e.spawnReq(a1, agentRequest{Network: "tcp4", Addr: fmt.Sprintf("127.0.0.2:%d", e.cfg.ProxyPort+1), Bind: bind})
	if first.res.Errno != int(unix.ECONNREFUSED) {
		t.Fatalf("agent a's connect with no proxy: %+v, want ECONNREFUSED", first.res)
	}
	first.finish(t, nil)
	if got := entriesFor(t, s, client); len(got) != 0 {
		t.Fatalf("records left by a refused connect: %+v", got)
	}

	// The daemon is back; agent b connects from the same port straight to the proxy.
	ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(e.cfg.ProxyPort)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	second := e.spawnReq(b, agentRequest{Network: "tcp4", Addr: fmt.Sprintf("127.0.0.1:%d", e.cfg.ProxyPort), Bind: bind})
	if second.res.Errno != 0 {
		t.Fatalf("agent b's direct connect: %s", second.res.Err)
	}
	c := accept(t, ln)
	defer second.finish(t, c)
	remote, local := addrPorts(c)
	if remote.Port() != client {
		t.Fatalf("agent b connected from %s, want port %d", remote, client)
	}
	if o, err := s.Origin(remote, local); !errors.Is(err, ErrNoOrigin) {
		t.Fatalf("Origin = %+v, %v; want ErrNoOrigin (no record from agent a's refused connect)", o, err)
	}
}

// TestUnsteeredConnectDropsPlantedRecord: a record for a tuple (planted here,
// as an older socket could have left it) is deleted when a socket without
// metadata connects from that tuple straight to the proxy.
func TestUnsteeredConnectDropsPlantedRecord(t *testing.T) {
	e := newTestEnv(t)
	leaf := e.cgroup("agents/b")
	s := e.load()
	if err := s.RegisterAgent(e.cgroupID(leaf)); err != nil {
		t.Fatal(err)
	}
	client := randomPort(e.cfg.ProxyPort, e.cfg.DNSPort)
	clientAP := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), client)
	proxyAP := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), e.cfg.ProxyPort)
	planted := steerSkMeta{OrigPort: 443, CgroupId: 4242, Pid: 1, KtimeBoot: bootNow(t)}
	planted.OrigAddr[10], planted.OrigAddr[11], planted.OrigAddr[12] = 0xff, 0xff, 10
	if err := s.objs.OrigByTuple.Put(tupleKey(clientAP, proxyAP), planted); err != nil {
		t.Fatal(err)
	}
	a := e.spawnReq(leaf, agentRequest{Network: "tcp4", Addr: proxyAP.String(), Bind: clientAP.String()})
	if a.res.Errno != 0 {
		t.Fatalf("direct connect: %s", a.res.Err)
	}
	c := accept(t, e.ln4)
	defer a.finish(t, c)
	remote, local := addrPorts(c)
	if o, err := s.Origin(remote, local); !errors.Is(err, ErrNoOrigin) {
		t.Fatalf("Origin = %+v, %v; want ErrNoOrigin (the planted record must be gone)", o, err)
	}
}

// TestClosedSocketDropsRecord: a steered connection whose record the proxy
// never took leaves none behind once the agent's socket is closed.
func TestClosedSocketDropsRecord(t *testing.T) {
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
	remote, _ := addrPorts(c)
	if got := entriesFor(t, s, remote.Port()); len(got) != 1 {
		t.Fatalf("records while connected: %+v, want 1", got)
	}
	c.SetLinger(0) // reset: the agent's socket closes at once
	c.Close()
	a.finish(t, nil)
	deadline := time.Now().Add(5 * time.Second)
	for len(entriesFor(t, s, remote.Port())) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("record of a closed socket still there: %+v", entriesFor(t, s, remote.Port()))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestOldRecordsRefused: a record older than MaxOriginAge (TCP) or
// MaxQueryAge (UDP) is refused as a miss; a fresh one is returned.
func TestOldRecordsRefused(t *testing.T) {
	e := newTestEnv(t)
	s := e.load()
	client := netip.MustParseAddrPort("127.0.0.1:40001")
	proxy := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), e.cfg.ProxyPort)
	resolver := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), e.cfg.DNSPort)
	tests := []struct {
		name   string
		put    func(steerTupleKey, steerSkMeta) error
		lookup func(client, local netip.AddrPort) (Origin, error)
		local  netip.AddrPort
		max    time.Duration
	}{
		{"tcp", func(k steerTupleKey, v steerSkMeta) error { return s.objs.OrigByTuple.Put(k, v) }, s.Origin, proxy, MaxOriginAge},
		{"udp", func(k steerTupleKey, v steerSkMeta) error { return s.objs.UdpByTuple.Put(k, v) }, s.QueryOrigin, resolver, MaxQueryAge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := steerSkMeta{OrigPort: 443, CgroupId: 77}
			m.OrigAddr[10], m.OrigAddr[11], m.OrigAddr[12] = 0xff, 0xff, 10
			m.KtimeBoot = bootNow(t) - uint64(tt.max+time.Second)
			if err := tt.put(tupleKey(client, tt.local), m); err != nil {
				t.Fatal(err)
			}
			if o, err := tt.lookup(client, tt.local); !errors.Is(err, ErrNoOrigin) {
				t.Fatalf("old record: %+v, %v; want ErrNoOrigin", o, err)
			}
			m.KtimeBoot = bootNow(t)
			if err := tt.put(tupleKey(client, tt.local), m); err != nil {
				t.Fatal(err)
			}
			if o, err := tt.lookup(client, tt.local); err != nil || o.CgroupID != 77 {
				t.Fatalf("fresh record: %+v, %v; want cgroup 77", o, err)
			}
		})
	}
}

// TestLoadClearsRecords: records pinned by an earlier run are gone after Load.
func TestLoadClearsRecords(t *testing.T) {
	e := newTestEnv(t)
	s := e.load()
	k := tupleKey(netip.MustParseAddrPort("127.0.0.1:40002"), netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), e.cfg.ProxyPort))
	m := steerSkMeta{CgroupId: 5, KtimeBoot: bootNow(t)}
	if err := s.objs.OrigByTuple.Put(k, m); err != nil {
		t.Fatal(err)
	}
	if err := s.objs.UdpByTuple.Put(k, m); err != nil {
		t.Fatal(err)
	}
	s2 := e.load() // the daemon restarts
	for name, mp := range map[string]interface {
		Lookup(key, value any) error
	}{"orig_by_tuple": s2.objs.OrigByTuple, "udp_by_tuple": s2.objs.UdpByTuple} {
		var v steerSkMeta
		if err := mp.Lookup(k, &v); err == nil {
			t.Errorf("%s still holds the earlier run's record %+v", name, v)
		}
	}
}

// TestQueryRecordStampedPerDatagram: the resolver's record carries each datagram's time, not
// the socket's connect time, so a long-lived socket's later query is still attributed while an
// old record is refused.
func TestQueryRecordStampedPerDatagram(t *testing.T) {
	e := newTestEnv(t)
	dns := e.listenDNS()
	leaf := e.cgroup("agents/a")
	s := e.load()
	id := e.cgroupID(leaf)
	if err := s.RegisterAgent(id); err != nil {
		t.Fatal(err)
	}
	cmd, stdin, readResult := e.lateUDP(leaf, "192.0.2.53:53")
	query := func(what string) {
		t.Helper()
		if r := readResult(); r.Errno != 0 {
			t.Fatalf("agent's %s send: %s", what, r.Err)
		}
		buf := make([]byte, 64)
		dns.udp4.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, from, err := dns.udp4.ReadFromUDPAddrPort(buf)
		if err != nil || string(buf[:n]) != what {
			t.Fatalf("resolver read %q, %v; want %q", buf[:n], err, what)
		}
		o, err := s.QueryOrigin(from, dns.udp4.LocalAddr().(*net.UDPAddr).AddrPort())
		if err != nil || o.CgroupID != id {
			t.Fatalf("QueryOrigin of the %s datagram = %+v, %v; want cgroup %d", what, o, err, id)
		}
	}
	query("before")
	time.Sleep(MaxQueryAge + 500*time.Millisecond) // the socket's connect is now too old
	io.WriteString(stdin, "go\n")
	query("after")
	cmd.Wait()
}
