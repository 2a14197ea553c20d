//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64 || wasm)

package bpf

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// hookTypes maps each name in Hooks to the program and attach type that
// implement it.
var hookTypes = map[string]struct {
	prog   ebpf.ProgramType
	attach ebpf.AttachType
}{
	"connect4":          {ebpf.CGroupSockAddr, ebpf.AttachCGroupInet4Connect},
	"connect6":          {ebpf.CGroupSockAddr, ebpf.AttachCGroupInet6Connect},
	"sock_ops":          {ebpf.SockOps, ebpf.AttachCGroupSockOps},
	"sendmsg4":          {ebpf.CGroupSockAddr, ebpf.AttachCGroupUDP4Sendmsg},
	"sendmsg6":          {ebpf.CGroupSockAddr, ebpf.AttachCGroupUDP6Sendmsg},
	"sock_create":       {ebpf.CGroupSock, ebpf.AttachCGroupInetSockCreate},
	"cgroup_skb_egress": {ebpf.CGroupSKB, ebpf.AttachCGroupInetEgress},
	"recvmsg4":          {ebpf.CGroupSockAddr, ebpf.AttachCGroupUDP4Recvmsg},
	"recvmsg6":          {ebpf.CGroupSockAddr, ebpf.AttachCGroupUDP6Recvmsg},
	"getpeername4":      {ebpf.CGroupSockAddr, ebpf.AttachCgroupInet4GetPeername},
	"getpeername6":      {ebpf.CGroupSockAddr, ebpf.AttachCgroupInet6GetPeername},
	"bind4":             {ebpf.CGroupSockAddr, ebpf.AttachCGroupInet4Bind},
	"bind6":             {ebpf.CGroupSockAddr, ebpf.AttachCGroupInet6Bind},
}

// Probe checks, on the running kernel, everything the steering programs
// need. It mounts a private bpffs instance (never /sys/fs/bpf) and creates a
// scratch cgroup wirken-probe-<random> under opts.CgroupParent; both are
// removed before it returns, also when a probe fails. Nothing it attaches
// outlives the call, and no process is ever in the scratch cgroup.
func Probe(opts ProbeOptions) ProbeReport {
	var r ProbeReport
	pinDir, unmount, err := privateBPFFS(opts.BPFFSDir)
	if err != nil {
		r.BPFFS = ProbeResult{Name: "bpffs mount", Detail: "mounting a private bpffs instance", Err: err}
	} else {
		defer unmount()
		r.BPFFS = ProbeResult{Name: "bpffs mount", Detail: "a private bpffs instance mounted, a map and a link pinned in it"}
		if err := pinMap(filepath.Join(pinDir, "probe_map")); err != nil {
			r.BPFFS.Err = err
			pinDir = ""
		}
	}
	r.Features = probeFeatures()

	cg, removeCgroup, err := scratchCgroup(opts.CgroupParent)
	if err != nil {
		err = fmt.Errorf("creating the scratch cgroup: %w", err)
	} else {
		defer removeCgroup()
	}
	pinned := false
	for _, h := range Hooks() {
		res := ProbeResult{Name: h.Name}
		t := hookTypes[h.Name]
		res.Detail = fmt.Sprintf("load and attach a %s program as a bpf_link", t.attach)
		switch {
		case err != nil:
			res.Err = err
		default:
			pin := ""
			if pinDir != "" && !pinned {
				pin = filepath.Join(pinDir, h.Name)
			}
			res.Err = probeHook(cg, t.prog, t.attach, pin)
			if res.Err == nil && pin != "" {
				pinned = true
			}
		}
		r.Hooks = append(r.Hooks, res)
	}
	if r.BPFFS.Err == nil && !pinned {
		r.BPFFS.Detail = "a private bpffs instance mounted and a map pinned in it (no hook attached, so no link was pinned)"
	}
	return r
}

// pinMap creates a one-entry map, pins it at path and unpins it.
func pinMap(path string) error {
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		return fmt.Errorf("creating a map to pin: %w", err)
	}
	defer m.Close()
	if err := m.Pin(path); err != nil {
		return fmt.Errorf("pinning a map: %w", err)
	}
	if err := m.Unpin(); err != nil {
		return fmt.Errorf("unpinning a map: %w", err)
	}
	return nil
}

// probeHook loads a program that allows everything, attaches it to cgroup
// cg as a bpf_link (what wirken pins), optionally pins and unpins it, and
// detaches it.
func probeHook(cg string, pt ebpf.ProgramType, at ebpf.AttachType, pin string) error {
	if err := features.HaveProgramType(pt); err != nil {
		return classify(fmt.Errorf("program type %s: %w", pt, err))
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:       pt,
		AttachType: at,
		// Every cgroup hook wirken uses reads 1 as "allow" or "pass".
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 1), asm.Return()},
		License:      "Dual BSD/GPL",
	})
	if err != nil {
		return classify(fmt.Errorf("loading: %w", err))
	}
	defer prog.Close()
	fd, err := unix.Open(cg, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening %s: %w", cg, err)
	}
	defer unix.Close(fd)
	l, err := link.AttachRawLink(link.RawLinkOptions{Target: fd, Program: prog, Attach: at})
	if err != nil {
		return classify(fmt.Errorf("attaching: %w", err))
	}
	defer l.Close()
	if pin != "" {
		if err := l.Pin(pin); err != nil {
			return fmt.Errorf("pinning the link: %w", err)
		}
		if err := l.Unpin(); err != nil {
			return fmt.Errorf("unpinning the link: %w", err)
		}
	}
	return nil
}

// classify wraps err with ErrMissing when it says the kernel does not know
// the program type, attach type or link type. EPERM and the like stay
// plain failures.
func classify(err error) error {
	if errors.Is(err, ebpf.ErrNotSupported) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
		return fmt.Errorf("%w: %w", ErrMissing, err)
	}
	return err
}

// probeFeatures checks the map types and helpers steer.c uses, then loads
// wirken's own programs (with fresh, unpinned maps) so the kernel's verifier
// checks them exactly as the daemon would load them.
func probeFeatures() []ProbeResult {
	var out []ProbeResult
	for _, m := range []struct {
		t    ebpf.MapType
		name string
	}{{ebpf.Hash, "hash"}, {ebpf.LRUHash, "lru_hash"}, {ebpf.SkStorage, "sk_storage"}} {
		err := features.HaveMapType(m.t)
		if err != nil {
			err = classify(err)
		}
		out = append(out, ProbeResult{Name: "map " + m.name, Detail: "create a " + m.name + " map", Err: err})
	}
	for _, h := range []struct {
		pt ebpf.ProgramType
		fn asm.BuiltinFunc
		c  string
	}{
		{ebpf.CGroupSockAddr, asm.FnGetCurrentAncestorCgroupId, "bpf_get_current_ancestor_cgroup_id"},
		{ebpf.CGroupSockAddr, asm.FnSkStorageGet, "bpf_sk_storage_get"},
		{ebpf.CGroupSockAddr, asm.FnGetCurrentPidTgid, "bpf_get_current_pid_tgid"},
		{ebpf.CGroupSockAddr, asm.FnKtimeGetBootNs, "bpf_ktime_get_boot_ns"},
		{ebpf.SockOps, asm.FnSkStorageGet, "bpf_sk_storage_get"},
	} {
		err := features.HaveProgramHelper(h.pt, h.fn)
		if err != nil {
			err = classify(err)
		}
		out = append(out, ProbeResult{Name: "helper " + h.c + " (" + h.pt.String() + ")", Detail: "callable from " + h.pt.String() + " programs", Err: err})
	}
	out = append(out, probeSteerObjects())
	return out
}

// probeSteerObjects loads the committed steering object with unpinned maps
// and closes it again.
func probeSteerObjects() ProbeResult {
	res := ProbeResult{Name: "wirken programs", Detail: "load the steering object through the verifier"}
	spec, err := loadSteer()
	if err != nil {
		res.Err = fmt.Errorf("reading the steering object: %w", err)
		return res
	}
	for _, m := range spec.Maps {
		m.Pinning = ebpf.PinNone
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		res.Err = classify(fmt.Errorf("loading: %w", err))
		return res
	}
	res.Detail = fmt.Sprintf("%d programs and %d maps loaded through the verifier", len(coll.Programs), len(coll.Maps))
	coll.Close()
	return res
}

// privateBPFFS mounts a new bpffs instance at dir (or at a new temporary
// directory when dir is "") and returns it with a function that unmounts it
// and removes the directory if it made it.
func privateBPFFS(dir string) (string, func(), error) {
	made := false
	if dir == "" {
		d, err := os.MkdirTemp("", "wirken-probe-bpffs-")
		if err != nil {
			return "", nil, fmt.Errorf("making a mount point: %w", err)
		}
		dir, made = d, true
	}
	if err := unix.Mount("bpffs", dir, "bpf", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=0700"); err != nil {
		if made {
			os.Remove(dir)
		}
		return "", nil, fmt.Errorf("mounting bpffs at %s: %w", dir, err)
	}
	return dir, func() {
		unix.Unmount(dir, unix.MNT_DETACH)
		if made {
			os.Remove(dir)
		}
	}, nil
}

// scratchCgroup makes parent/wirken-probe-<random> and returns it with a
// function that removes it.
func scratchCgroup(parent string) (string, func(), error) {
	if parent == "" {
		return "", nil, errors.New("no cgroup2 directory to probe in")
	}
	if ok, err := onFS(parent, unix.CGROUP2_SUPER_MAGIC); err != nil {
		return "", nil, err
	} else if !ok {
		return "", nil, fmt.Errorf("%s is not on a cgroup2 file system", parent)
	}
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		return "", nil, err
	}
	cg := filepath.Join(parent, "wirken-probe-"+hex.EncodeToString(b))
	if err := os.Mkdir(cg, 0o700); err != nil {
		return "", nil, err
	}
	return cg, func() { os.Remove(cg) }, nil
}

// BPFFSMounted reports whether path is on a bpffs.
func BPFFSMounted(path string) (bool, error) {
	return onFS(path, unix.BPF_FS_MAGIC)
}
