package bpf

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"time"
	"unicode/utf8"
)

// Config says where and how Load attaches the steering programs.
type Config struct {
	// AgentsCgroup is the absolute path of <cgroup2>/<root>/agents. It must
	// exist. The programs are attached here.
	AgentsCgroup string
	// AgentLevel is the cgroup level of the agents/<name> directories (the
	// cgroup2 root is level 0). A wrong level makes every agent connect fail
	// (fail closed), never pass.
	AgentLevel uint32
	// PinDir is the bpffs directory owned by this load, e.g.
	// /sys/fs/bpf/wirken/v1: maps are pinned under PinDir/maps, links under
	// PinDir/links.
	PinDir string
	// ProxyPort is the port the proxy listens on at 127.0.0.1 and [::1].
	ProxyPort uint16
	// DNSPort is the port wirken's resolver listens on at 127.0.0.1 and
	// [::1], over UDP and TCP. Agents' DNS (port 53, any address) is steered
	// there. 0 means no resolver: agents' DNS is denied like other UDP.
	DNSPort uint16
	// RefuseIPv6 denies agents' TCP to native IPv6 addresses (other than ::1) at connect, for
	// hosts without IPv6 upstream: clients then fall back to IPv4 at once instead of reaching
	// the proxy and failing there. v4-mapped addresses and DNS are not affected.
	RefuseIPv6 bool
}

func (c Config) validate() error {
	switch {
	case c.AgentsCgroup == "" || !filepath.IsAbs(c.AgentsCgroup):
		return fmt.Errorf("agents cgroup %q: must be an absolute path", c.AgentsCgroup)
	case c.AgentLevel == 0:
		return errors.New("agent level: must be at least 1 (agents/<name> is below the cgroup2 root)")
	case c.PinDir == "" || !filepath.IsAbs(c.PinDir):
		return fmt.Errorf("pin dir %q: must be an absolute path", c.PinDir)
	case filepath.Clean(c.PinDir) == bpffsRoot:
		return fmt.Errorf("pin dir %q: must be a directory below the bpffs root", c.PinDir)
	case c.ProxyPort == 0:
		return errors.New("proxy port: must not be 0")
	case c.DNSPort != 0 && c.DNSPort == c.ProxyPort:
		return fmt.Errorf("dns port %d: must differ from the proxy port", c.DNSPort)
	}
	return nil
}

// bpffsRoot is where Load mounts bpffs when it is not mounted.
const bpffsRoot = "/sys/fs/bpf"

// Origin is what the kernel recorded when an agent's connect was steered.
// PID, UID, GID and Comm were those of the calling task at connect time; they
// are advisory (a pid can be reused, comm is set by the process itself). The
// identity is CgroupID.
type Origin struct {
	Dst      netip.AddrPort // the destination the agent asked for
	CgroupID uint64         // cgroup id of the agent's agents/<name> cgroup
	PID      uint32         // thread group id
	UID, GID uint32
	Comm     string
}

// ErrNoOrigin means the kernel holds no record for the connection: it was not
// steered by these programs, or its record was already taken or evicted. The
// proxy must reset such a connection.
var ErrNoOrigin = errors.New("no steering record for connection")

// Records older than these are refused (as ErrNoOrigin): a proxy connection
// is accepted moments after its connect, and the resolver reads a datagram
// moments after it was sent; an older record can only belong to an earlier
// socket that used the same addresses and ports.
const (
	MaxOriginAge = 10 * time.Second // TCP: from the agent's connect to the proxy's accept
	MaxQueryAge  = 2 * time.Second  // UDP: from the datagram's send to the resolver's read
)

// ErrNotSupported is returned by the loader on platforms without the eBPF
// cgroup hooks (anything but Linux on a little-endian architecture).
var ErrNotSupported = errors.New("eBPF steering is supported on Linux (little-endian) only")

// addr16 is the 16-byte form used in the BPF maps: IPv4 as v4-mapped IPv6.
// Any zone is dropped.
func addr16(a netip.Addr) [16]byte {
	return a.As16()
}

// dstFrom turns a map address and host-order port back into an address,
// unmapping v4-mapped addresses to plain IPv4.
func dstFrom(addr [16]byte, port uint16) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom16(addr).Unmap(), port)
}

// commString turns the kernel's NUL-padded task comm into a string. comm is
// chosen by the process, so anything that is not UTF-8 is replaced.
func commString(comm [16]int8) string {
	b := make([]byte, 0, len(comm))
	for _, c := range comm {
		if c == 0 {
			break
		}
		b = append(b, byte(c))
	}
	if utf8.Valid(b) {
		return string(b)
	}
	return strings.ToValidUTF8(string(b), "\uFFFD")
}

// Denial is one refusal by a hook, as the kernel reported it to the daemon. PID, UID and Comm
// are advisory, like Origin's.
type Denial struct {
	Hook     string         // connect4, connect6, sendmsg4, sendmsg6, bind4, bind6, sock_create
	CgroupID uint64         // the agent's cgroup id, or the caller's own cgroup when it is no agent
	Addr     netip.AddrPort // destination (connect, sendmsg) or address (bind); invalid for sock_create
	Family   uint16         // socket family
	Protocol uint16         // IP protocol
	SockType uint32         // sock_create: the socket type asked for
	PID, UID uint32
	Comm     string
}

// hookNamesByID are the HOOK_* values of steer.c.
var hookNamesByID = map[uint16]string{
	1: "connect4", 2: "connect6", 3: "sendmsg4", 4: "sendmsg6", 5: "bind4", 6: "bind6", 7: "sock_create",
}
