//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// The 6.1 cloud kernel is built without 9p (CONFIG_NET_9P is not set), so
// the host's userland cannot be shared into the VM with -virtfs. Instead the
// end-to-end suite's real clients (curl and the few tools the tests run as
// the agent) are copied from the host into the initramfs with every shared
// library ldd says they load.

// stageClients adds the host programs the tests run and the shared
// libraries (and the dynamic loader) they need, at the paths ldd reports. A
// name is looked up on PATH and added as /usr/bin/<name> with a /bin/<name>
// link; an absolute path is added at that path: a program (python3 at
// /usr/bin/python3) or a directory tree (its stdlib, /usr/lib/python3.11),
// whose .so files bring their libraries too. It also adds the few /etc
// files a glibc client reads.
func stageClients(ctx context.Context, a *archive, names []string) error {
	libs := map[string]bool{}
	addELF := func(dst, src string, perm uint32) error {
		a.file(dst, src, perm)
		deps, err := sharedLibs(ctx, src)
		for _, d := range deps {
			libs[d] = true
		}
		return err
	}
	for _, n := range names {
		if strings.HasPrefix(n, "/") {
			if err := stagePath(a, n, addELF); err != nil {
				return fmt.Errorf("-clients %s: %w", n, err)
			}
			continue
		}
		if strings.Contains(n, "/") {
			return fmt.Errorf("-clients %q: give a program name found on PATH or an absolute path", n)
		}
		p, err := exec.LookPath(n)
		if err != nil {
			return fmt.Errorf("-clients: %s is not installed on this host (make deps installs the clients): %w", n, err)
		}
		real, err := programFile(p)
		if err != nil {
			return fmt.Errorf("-clients %s: %w", n, err)
		}
		if err := addELF("usr/bin/"+n, real, 0o755); err != nil {
			return err
		}
		if _, taken := a.entries["bin/"+n]; !taken {
			a.symlink("bin/"+n, "/usr/bin/"+n)
		}
	}
	for l := range libs {
		real, err := filepath.EvalSymlinks(l)
		if err != nil {
			return fmt.Errorf("-clients: resolving %s: %w", l, err)
		}
		a.file(l, real, 0o755)
	}
	// glibc's resolver: names from /etc/hosts, then DNS. An agent's DNS is
	// steered to wirken's resolver whatever the nameserver says.
	a.bytes("etc/nsswitch.conf", []byte("passwd: files\ngroup: files\nhosts: files dns\n"), 0o644)
	a.bytes("etc/hosts", []byte("127.0.0.1 localhost\n::1 localhost\n"), 0o644)
	a.bytes("etc/resolv.conf", []byte("nameserver 127.0.0.1\n"), 0o644)
	return nil
}

// programFile resolves p's symlinks and refuses a script, whose interpreter
// would be missing.
func programFile(p string) (string, error) {
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return "", err
	}
	head, err := readHead(real, 2)
	if err != nil {
		return "", err
	}
	if string(head) == "#!" {
		return "", fmt.Errorf("%s (%s) is a script; its interpreter is not copied", p, real)
	}
	return real, nil
}

// stagePath adds an absolute host path: a program, or a directory tree whose
// regular files keep their permission bits and whose .so files bring their
// libraries. Symbolic links inside the tree are kept as links.
func stagePath(a *archive, root string, addELF func(dst, src string, perm uint32) error) error {
	st, err := os.Stat(root)
	if err != nil {
		return err
	}
	if !st.IsDir() {
		real, err := programFile(root)
		if err != nil {
			return err
		}
		return addELF(root, real, 0o755)
	}
	return filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			a.dir(p)
		case d.Type()&os.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			a.symlink(p, target)
		case d.Type().IsRegular():
			info, err := d.Info()
			if err != nil {
				return err
			}
			perm := uint32(info.Mode().Perm())
			if strings.HasSuffix(p, ".so") || strings.Contains(p, ".so.") {
				return addELF(p, p, perm)
			}
			a.file(p, p, perm)
		}
		return nil
	})
}

// sharedLibs returns the absolute paths of the shared objects ldd says bin
// loads, the dynamic loader included; none for a static binary.
func sharedLibs(ctx context.Context, bin string) ([]string, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "ldd", bin)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if all := stdout.String() + stderr.String(); strings.Contains(all, "not a dynamic executable") || strings.Contains(all, "statically linked") {
		return nil, nil
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		return nil, fmt.Errorf("ldd %s: %w", bin, err)
	}
	libs, perr := parseLdd(stdout.String())
	if perr != nil {
		return nil, fmt.Errorf("ldd %s: %w", bin, perr)
	}
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %w: %s", bin, err, strings.TrimSpace(stderr.String()))
	}
	return libs, nil
}

// parseLdd reads ldd's output: "name => /path (addr)" for a library found,
// "/path (addr)" for the loader, "name (addr)" for the vDSO (no file), and
// "name => not found" for a library that is missing, which is an error.
func parseLdd(out string) ([]string, error) {
	var libs []string
	for line := range strings.Lines(out) {
		name, target, found := strings.Cut(strings.TrimSpace(line), "=>")
		if found {
			target = strings.TrimSpace(target)
			if strings.HasPrefix(target, "not found") {
				return nil, fmt.Errorf("%s is not found", strings.TrimSpace(name))
			}
			if f := strings.Fields(target); len(f) > 0 && strings.HasPrefix(f[0], "/") {
				libs = append(libs, f[0])
			}
			continue
		}
		if f := strings.Fields(name); len(f) > 0 && strings.HasPrefix(f[0], "/") {
			libs = append(libs, f[0])
		}
	}
	return libs, nil
}

// readHead returns up to n bytes from the start of the file.
func readHead(path string, n int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, n)
	k, err := io.ReadFull(f, b)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return b[:k], nil
}
