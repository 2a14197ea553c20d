package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/wirken/wirken/hostagent"
)

const doctorUsage = "doctor [--json] [--cgroup DIR] [--bpffs-dir DIR]"

// cmdDoctor checks that this host can run wirken: kernel, BTF, cgroup2,
// bpffs, and a real load+attach of every hook in a scratch cgroup. It exits 1
// when a required check does not pass.
func cmdDoctor(args []string) error {
	fs := newFlags("doctor")
	asJSON := fs.Bool("json", false, "print the checks as JSON")
	cgroup := fs.String("cgroup", "", "cgroup2 directory to make the scratch cgroup in (default: the cgroup2 mount point)")
	bpffsDir := fs.String("bpffs-dir", "", "empty directory to mount a private bpffs in for the pin test (default: a new temporary directory)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usageError("doctor takes no arguments: %s", doctorUsage)
	}
	if os.Geteuid() != 0 {
		return errors.New("doctor: run me as root: the probes load and attach eBPF programs")
	}
	d := hostagent.Doctor(hostagent.DoctorOptions{CgroupParent: *cgroup, BPFFSDir: *bpffsDir})
	var err error
	if *asJSON {
		err = d.WriteJSON(os.Stdout)
	} else {
		err = d.WriteTable(os.Stdout)
	}
	if err != nil {
		return fmt.Errorf("writing the report: %w", err)
	}
	if !d.OK {
		return &exitError{code: 1, err: fmt.Errorf("doctor: this host cannot run wirken: required checks not ok: %s", strings.Join(d.Failed, ", "))}
	}
	return nil
}
