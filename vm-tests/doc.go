// Package vmtests holds wirken's privileged end-to-end tests: the built binary as the daemon,
// real eBPF steering in throwaway cgroups, unmodified clients (curl) as agents, and real TLS
// upstreams on loopback. They run as root; with CI=true a test that would skip fails instead.
// Later the same suite runs inside qemu on other kernels.
package vmtests
