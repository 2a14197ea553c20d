package hostagent

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/wirken/wirken/bpf"
)

// UninstallSpec says what `wirken uninstall` removes.
type UninstallSpec struct {
	Root   string  // DESTDIR the files were installed under; "/" (or "") for the host
	Prefix string  // as given to install; default /usr/local
	Config *Config // the installed configuration: cgroup root, pin dir, state paths
	Force  bool    // kill agents' processes instead of refusing
	Purge  bool    // also remove the configuration, the vault, the CA and the audit log
	Out    io.Writer
}

// Uninstall detaches the steering programs (removing their pins), removes wirken's cgroups,
// the unit, the binary and the system trust anchor, and (with Purge) the configuration and
// state. It refuses while the daemon runs, and while agents have processes unless Force: with
// the programs gone those processes would reach the network unsteered, so Force kills them.
func Uninstall(spec UninstallSpec) error {
	if spec.Out == nil {
		spec.Out = io.Discard
	}
	cfg := spec.Config
	if c, err := net.DialTimeout("unix", cfg.ControlSocket, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("the daemon is running (control socket %s): stop it first (systemctl stop wirken)", cfg.ControlSocket)
	}

	if err := detach(cfg, spec.Force, spec.Out); err != nil {
		return err
	}

	r := spec.Root
	is := InstallSpec{Prefix: spec.Prefix}
	wants := filepath.Join(filepath.Dir(UnitPath), "multi-user.target.wants", filepath.Base(UnitPath))
	for _, p := range []string{wants, UnitPath, is.BinaryPath()} {
		if err := removeFile(under(r, p), spec.Out); err != nil {
			return err
		}
	}
	anchor := under(r, TrustAnchor)
	if _, err := os.Stat(anchor); err == nil {
		if err := removeFile(anchor, spec.Out); err != nil {
			return err
		}
		if err := UpdateCATrust(r, spec.Out); err != nil {
			return err
		}
	}
	daemonReload(r, spec.Out)

	kept := []string{under(r, ConfigDir), cfg.Vault.File, cfg.CA.Cert, cfg.CA.Key, cfg.Audit.Log, cfg.Audit.VerifierKey}
	for _, sc := range cfg.Seals() {
		if kf := sc.Options["key_file"]; kf != "" {
			kept = append(kept, kf)
		}
	}
	if !spec.Purge {
		fmt.Fprintf(spec.Out, "kept (remove with --purge): %s\n", strings.Join(existing(r, kept), ", "))
		return nil
	}
	segments, _ := filepath.Glob(under(r, cfg.Audit.Log) + ".*")
	for _, p := range append(kept[1:], segments...) {
		if err := removeFile(under(r, p), spec.Out); err != nil {
			return err
		}
	}
	for _, p := range []string{ConfigDir, UnitPath + ".d", cfg.StateDir} {
		if depth(under(r, p)) < 2 {
			return fmt.Errorf("refusing to remove %s: not a directory of wirken's own", under(r, p))
		}
		if err := os.RemoveAll(under(r, p)); err != nil {
			return fmt.Errorf("removing %s: %w", under(r, p), err)
		}
		fmt.Fprintf(spec.Out, "removed %s\n", under(r, p))
	}
	return nil
}

// Detach is the kernel half of uninstall, for `wirken run --detach` after the daemon has
// stopped: it moves the calling process out of wirken's daemon cgroup, then removes the pinned
// programs and maps and wirken's cgroups. It refuses while an agent has processes, which would
// then reach the network unsteered; the programs stay pinned and agents stay fail-closed.
func Detach(cfg *Config, out io.Writer) error {
	root, err := wirkenCgroup(cfg)
	if err != nil {
		return err
	}
	parent := filepath.Join(filepath.Dir(root), "cgroup.procs")
	if err := os.WriteFile(parent, []byte(strconv.Itoa(os.Getpid())), 0); err != nil {
		return fmt.Errorf("leaving the daemon cgroup: %w", err)
	}
	return detach(cfg, false, out)
}

func detach(cfg *Config, force bool, out io.Writer) error {
	root, err := wirkenCgroup(cfg)
	if err != nil {
		return err
	}
	// Bound agents' cgroups (systemd units') lose their programs with the pins too.
	point, err := cgroup2Point()
	if err != nil {
		return err
	}
	bound, err := bpf.BoundCgroups(cfg.BPF.PinDir, point)
	if err != nil {
		return err
	}
	if err := emptyCgroups(root, bound, force, out); err != nil {
		return err
	}
	if err := bpf.Remove(cfg.BPF.PinDir); err != nil {
		return err
	}
	fmt.Fprintf(out, "removed the steering programs and maps pinned at %s\n", cfg.BPF.PinDir)
	if parent := filepath.Dir(filepath.Clean(cfg.BPF.PinDir)); parent != "/sys/fs/bpf" {
		_ = os.Remove(parent) // /sys/fs/bpf/wirken, once no other version is pinned there
	}
	if err := removeCgroupTree(root); err != nil {
		return err
	}
	fmt.Fprintf(out, "removed cgroup %s\n", root)
	return nil
}

func existing(root string, paths []string) []string {
	var out []string
	for _, p := range paths {
		if _, err := os.Stat(under(root, p)); err == nil {
			out = append(out, under(root, p))
		}
	}
	return out
}

func removeFile(p string, out io.Writer) error {
	err := os.Remove(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("removing %s: %w", p, err)
	}
	fmt.Fprintf(out, "removed %s\n", p)
	return nil
}

// wirkenCgroup is <cgroup2>/<cgroup.root>.
func wirkenCgroup(cfg *Config) (string, error) {
	point, err := cgroup2Point()
	if err != nil {
		return "", err
	}
	return filepath.Join(point, cfg.Cgroup.Root), nil
}

// cgroup2Point is where cgroup2 is mounted.
func cgroup2Point() (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("reading mountinfo: %w", err)
	}
	defer f.Close()
	m, err := cgroup2Mount(f)
	if err != nil {
		return "", err
	}
	return m.point, nil
}

// cgroupProcs lists the processes in dir and every cgroup below it, by cgroup.
func cgroupProcs(dir string) (map[string][]int, error) {
	out := map[string][]int{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return err
		}
		if !d.IsDir() {
			return nil
		}
		pids, err := readProcs(filepath.Join(p, "cgroup.procs"))
		if err != nil {
			return err
		}
		if len(pids) > 0 {
			out[p] = pids
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing processes in %s: %w", dir, err)
	}
	return out, nil
}

func readProcs(path string) ([]int, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// emptyCgroups makes sure nothing runs in wirken's tree nor in the cgroups bound agents' links
// are attached to (name -> path, see bpf.BoundCgroups): agents' processes are refused, or killed
// with force; anything in daemon/ means a daemon is still alive.
func emptyCgroups(root string, bound map[string]string, force bool, out io.Writer) error {
	procs, err := cgroupProcs(filepath.Join(root, "daemon"))
	if err != nil {
		return err
	}
	if len(procs) > 0 {
		return fmt.Errorf("processes %v are in %s: the daemon is still running; stop it first", procs, filepath.Join(root, "daemon"))
	}
	agents := filepath.Join(root, "agents")
	// Every cgroup to empty, by the name shown for it.
	tops := map[string]string{}
	procs, err = cgroupProcs(agents)
	if err != nil {
		return err
	}
	if len(procs) > 0 {
		tops[""] = agents
	}
	var names []string
	for cg, pids := range procs {
		names = append(names, fmt.Sprintf("%s (%d processes)", strings.TrimPrefix(cg, agents+"/"), len(pids)))
	}
	for name, path := range bound {
		bp, err := cgroupProcs(path)
		if err != nil {
			return err
		}
		n := 0
		for _, pids := range bp {
			n += len(pids)
		}
		if n > 0 {
			tops[name] = path
			names = append(names, fmt.Sprintf("%s (bound to %s, %d processes)", name, path, n))
		}
	}
	if len(tops) == 0 {
		return nil
	}
	sort.Strings(names)
	if !force {
		return fmt.Errorf("agents still run: %s; stop them, or pass --force to kill them (without wirken's programs they would reach the network unsteered)", strings.Join(names, ", "))
	}
	for _, top := range tops {
		if err := os.WriteFile(filepath.Join(top, "cgroup.kill"), []byte("1"), 0); err != nil {
			// Kernels before 5.14 have no cgroup.kill: signal each process.
			left, _ := cgroupProcs(top)
			for _, pids := range left {
				for _, pid := range pids {
					_ = killPID(pid)
				}
			}
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, top := range tops {
		for {
			left, err := cgroupProcs(top)
			if err != nil {
				return err
			}
			if len(left) == 0 {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("agents' processes %v did not exit after SIGKILL", left)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	fmt.Fprintf(out, "killed the agents' processes: %s\n", strings.Join(names, ", "))
	return nil
}

func killPID(pid int) error {
	p, err := os.FindProcess(pid)
	if err != nil {
		return err
	}
	return p.Kill()
}

// removeCgroupTree removes a cgroup and every cgroup below it, leaves first. Empty cgroups
// are removed with rmdir; their control files go with them.
func removeCgroupTree(root string) error {
	var dirs []string
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("listing cgroup %s: %w", root, err)
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := os.Remove(dirs[i]); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("removing cgroup %s: %w", dirs[i], err)
		}
	}
	return nil
}
