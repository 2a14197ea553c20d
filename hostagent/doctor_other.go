//go:build !linux

package hostagent

import (
	"errors"

	"github.com/wirken/wirken/bpf"
)

// DoctorOptions says where the doctor may make its scratch objects.
type DoctorOptions struct {
	CgroupParent string
	BPFFSDir     string
}

// Doctor reports every check as failed: wirken runs on Linux only.
func Doctor(opts DoctorOptions) Diagnosis {
	return Diagnose(DoctorFacts{
		KernelErr:  errLinuxOnly,
		BTFErr:     errLinuxOnly,
		Cgroup2Err: errors.New("no cgroup2: " + errLinuxOnly.Error()),
		BPFFSErr:   errLinuxOnly,
		Probe:      bpf.Probe(bpf.ProbeOptions{}),
	})
}
