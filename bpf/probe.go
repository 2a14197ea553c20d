package bpf

import "errors"

// Hook is one cgroup attach point wirken uses. `wirken doctor` probes each
// one by loading and attaching a trivial program to a scratch cgroup. Every
// hook exists from kernel 5.8, wirken's minimum, and the loader attaches all
// of them or refuses to start, so every hook is required.
type Hook struct {
	Name      string // as in the ELF section name: "connect4", "sock_ops", ...
	Required  bool   // wirken cannot start without it
	MinKernel string // first mainline kernel with the hook
	Role      string // what wirken uses it for
}

// Hooks lists every hook wirken attaches to an agents cgroup, in the order
// doctor reports them.
func Hooks() []Hook {
	return []Hook{
		{Name: "connect4", Required: true, MinKernel: "4.17", Role: "steer IPv4 TCP to the proxy and DNS to the resolver, deny other UDP"},
		{Name: "connect6", Required: true, MinKernel: "4.17", Role: "steer IPv6 and v4-mapped TCP, DNS over IPv6"},
		{Name: "sock_ops", Required: true, MinKernel: "4.13", Role: "publish each steered connection's original destination to the proxy"},
		{Name: "sendmsg4", Required: true, MinKernel: "4.18", Role: "redirect unconnected UDP DNS, deny other unconnected UDP"},
		{Name: "sendmsg6", Required: true, MinKernel: "4.18", Role: "the same for IPv6 sockets"},
		{Name: "sock_create", Required: true, MinKernel: "4.10", Role: "deny raw, packet, ICMP, SCTP and MPTCP sockets"},
		{Name: "cgroup_skb_egress", Required: true, MinKernel: "4.10", Role: "backstop: drop any agent packet that is not on loopback"},
		{Name: "recvmsg4", Required: true, MinKernel: "5.2", Role: "rewrite unconnected DNS replies back to the resolver the agent asked"},
		{Name: "recvmsg6", Required: true, MinKernel: "5.2", Role: "the same for IPv6 sockets"},
		{Name: "getpeername4", Required: true, MinKernel: "5.8", Role: "show the agent its original peer, not the proxy"},
		{Name: "getpeername6", Required: true, MinKernel: "5.8", Role: "the same for IPv6 sockets"},
		{Name: "bind4", Required: true, MinKernel: "4.17", Role: "stop agents binding the proxy and resolver ports"},
		{Name: "bind6", Required: true, MinKernel: "4.17", Role: "the same for IPv6 sockets"},
	}
}

// ErrMissing marks a probe failure that means the kernel lacks the feature
// (as opposed to a probe that could not run, e.g. for lack of privilege).
var ErrMissing = errors.New("not supported by this kernel")

// ProbeResult is the outcome of one kernel probe. Err is nil when the
// feature works; errors.Is(Err, ErrMissing) when the kernel lacks it; any
// other error means the probe itself failed.
type ProbeResult struct {
	Name   string // "hook connect4", "helper bpf_sk_storage_get", ...
	Detail string // what was probed, or what was found
	Err    error
}

// ProbeOptions says where Probe may make its scratch objects.
type ProbeOptions struct {
	// CgroupParent is a cgroup2 directory; Probe makes (and removes) the
	// scratch cgroup wirken-probe-<random> in it and attaches there.
	CgroupParent string
	// BPFFSDir is an existing empty directory where Probe mounts a private
	// bpffs instance to pin a link in; "" means a new temporary directory.
	BPFFSDir string
}

// ProbeReport is what Probe found.
type ProbeReport struct {
	BPFFS    ProbeResult   // mounting a private bpffs and pinning a link in it
	Features []ProbeResult // map types, helpers, and loading wirken's own programs
	Hooks    []ProbeResult // one per Hooks() entry, in that order; Name is the hook's
}
