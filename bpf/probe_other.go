//go:build !linux || !(386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64 || wasm)

package bpf

import "fmt"

// Probe reports every probe as failed with ErrNotSupported: the eBPF cgroup
// hooks exist on Linux only.
func Probe(opts ProbeOptions) ProbeReport {
	err := fmt.Errorf("probing: %w", ErrNotSupported)
	r := ProbeReport{BPFFS: ProbeResult{Name: "bpffs mount", Err: err}}
	r.Features = []ProbeResult{{Name: "wirken programs", Err: err}}
	for _, h := range Hooks() {
		r.Hooks = append(r.Hooks, ProbeResult{Name: h.Name, Err: err})
	}
	return r
}

// BPFFSMounted returns ErrNotSupported.
func BPFFSMounted(path string) (bool, error) {
	return false, fmt.Errorf("checking bpffs: %w", ErrNotSupported)
}
