// Package bpf is wirken's kernel side: the eBPF cgroup programs that tie each
// agent process to its identity (the cgroup id of its agents/<name> cgroup)
// and steer its TCP connects into the local proxy, plus a thin loader.
//
// Load mounts bpffs if needed, loads steer.c's programs (compiled by bpf2go
// into the committed steer_bpfel.o), reuses the maps pinned under
// <PinDir>/maps and attaches the programs to the agents cgroup as bpf_links
// pinned under <PinDir>/links, or atomically swaps the programs of links that
// are already pinned. Pins outlive the daemon, so steering keeps applying
// (and fails closed) when it dies. The proxy calls Steering.Origin after
// accept() to learn where the agent meant to connect and who it is.
//
// The programs steer TCP only; every other protocol from an agent (UDP, so
// also DNS, for now) is denied, as is any process in an unregistered cgroup
// under agents/.
//
// Only Linux on little-endian architectures is supported; elsewhere Load
// returns ErrNotSupported. This package imports nothing from the wirken
// module; it is meant to be imported by hostagent (and tests) only.
package bpf
