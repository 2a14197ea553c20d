// Package vmtests holds wirken's privileged end-to-end tests: the built binary as the daemon,
// real eBPF steering in throwaway cgroups, unmodified clients (curl) as agents, and real TLS
// upstreams on loopback. They run as root; with CI=true a test that would skip fails instead.
// vm-tests/qemu (make test-vm) runs wirken doctor and the privileged bpf tests inside qemu on
// Debian bookworm's 6.1 kernel; the client-based tests here do not run there yet.
package vmtests
