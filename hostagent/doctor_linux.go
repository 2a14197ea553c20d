package hostagent

import (
	"os"

	"github.com/wirken/wirken/bpf"
	"golang.org/x/sys/unix"
)

// DoctorOptions says where the doctor may make its scratch objects.
type DoctorOptions struct {
	// CgroupParent is the cgroup2 directory the hook probes make their
	// scratch cgroup in; "" means the cgroup2 mount point.
	CgroupParent string
	// BPFFSDir is where a private bpffs instance is mounted for the pin
	// test; "" means a new temporary directory.
	BPFFSDir string
}

// Doctor gathers the facts on this host (loading, attaching and removing a
// probe program for every hook) and judges them. It needs root.
func Doctor(opts DoctorOptions) Diagnosis {
	return Diagnose(gatherFacts(opts))
}

func gatherFacts(opts DoctorOptions) DoctorFacts {
	var f DoctorFacts
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		f.KernelErr = err
	} else {
		f.KernelRelease = unix.ByteSliceToString(u.Release[:])
	}
	_, f.BTFErr = os.Stat(btfPath)

	if mi, err := os.Open("/proc/self/mountinfo"); err != nil {
		f.Cgroup2Err = err
	} else {
		m, err := cgroup2Mount(mi)
		mi.Close()
		f.Cgroup2, f.Cgroup2Err = m.point, err
	}
	f.BPFFSMounted, f.BPFFSErr = bpf.BPFFSMounted("/sys/fs/bpf")
	if os.IsNotExist(f.BPFFSErr) {
		f.BPFFSErr = nil // no mount point: wirken run makes it
	}

	parent := opts.CgroupParent
	if parent == "" {
		parent = f.Cgroup2
	}
	f.Probe = bpf.Probe(bpf.ProbeOptions{CgroupParent: parent, BPFFSDir: opts.BPFFSDir})
	return f
}
