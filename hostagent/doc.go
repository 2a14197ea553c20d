// Package hostagent is the wirken daemon: it reads the configuration, builds the cgroup tree
// (<cgroup2>/<root>/daemon and <root>/agents/<name>), loads and pins the eBPF steering programs,
// keeps the agent registry in step with the policy, runs the proxy and the root-only control
// socket, and launches agents into their cgroups for `wirken exec`.
//
// It wires bpf, mitm, policy, vault and audit together and may import all of them; only cmd/
// and the tests import it.
package hostagent
