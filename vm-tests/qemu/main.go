//go:build linux

// Command qemu runs wirken's privileged tests inside a qemu VM booted with a
// Debian kernel (by default bookworm's 6.1 cloud kernel), so they are shown to
// pass on a kernel other than the host's. `make test-vm` runs it from the
// repository root:
//
//	go run ./vm-tests/qemu [-kernel-package linux-image-cloud-amd64] [-timeout 30m]
//
// It fetches the kernel package with `apt-get download` into
// vm-tests/.cache/qemu/kernels (git-ignored), extracts it with dpkg-deb,
// builds vminit (the VM's /init), the wirken binary and static test binaries,
// packs them into a cpio initramfs, boots it with qemu (KVM when /dev/kvm
// works, else software emulation), streams the console, and exits 0 only when
// the VM printed its PASS verdict with the nonce of this run. The kernel that
// ran is printed from inside the VM.
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "test-vm: error: %v\n", err)
		os.Exit(1)
	}
}

// testSpec is one package to build as a test binary and run in the VM:
// "./bpf" or "./cmd/wirken:^TestCLIDoctor" (package:-test.run pattern).
type testSpec struct {
	pkg, run string
	env      []string // extra environment of the step
}

func parseTests(s string) ([]testSpec, error) {
	var out []testSpec
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		pkg, re, _ := strings.Cut(f, ":")
		if !strings.HasPrefix(pkg, "./") {
			return nil, fmt.Errorf("-tests %q: packages are ./relative paths", f)
		}
		if re != "" {
			if _, err := regexp.Compile(re); err != nil {
				return nil, fmt.Errorf("-tests %q: %w", f, err)
			}
		}
		out = append(out, testSpec{pkg: pkg, run: re})
	}
	if len(out) == 0 {
		return nil, errors.New("-tests: nothing to run")
	}
	return out, nil
}

func run() error {
	kernelPkg := flag.String("kernel-package", "linux-image-cloud-amd64", "Debian kernel package (a meta package is resolved with apt-cache to the image it depends on)")
	cache := flag.String("cache", "vm-tests/.cache/qemu", "directory for the kernel package and the build (git-ignored)")
	tests := flag.String("tests", "./bpf,./audit:^TestDiskFull,./cmd/wirken:^TestCLIDoctor", "comma-separated test packages to run in the VM, each optionally :pattern for -test.run")
	e2e := flag.String("e2e", "^(TestWalkingSkeleton|TestAuditDiskFull|TestKernelEnforcement|TestDaemonRestartUnderLoad|TestBoundAgent|TestRunDetach|TestEscapes|TestFault.*|TestLoad10k|TestSoak)$", "-test.run pattern of the vm-tests end-to-end tests to run in the VM with the host's -clients copied in (\"\" runs none)")
	clients := flag.String("clients", "curl,env,id,grep,sh,seq,sleep,head,ip,setpriv", "comma-separated host programs the tests run, copied into the VM's /usr/bin with their shared libraries")
	modules := flag.String("modules", "veth,dummy,tun", "comma-separated kernel modules (with their dependencies) to load in the VM")
	timeout := flag.Duration("timeout", 30*time.Minute, "budget for building, booting and running everything")
	mem := flag.String("mem", "2G", "VM memory")
	smp := flag.Int("smp", 2, "VM CPUs")
	soak := flag.String("soak", envOr("WIRKEN_SOAK", "2m"), "WIRKEN_SOAK for TestSoak in the VM (default $WIRKEN_SOAK, else 2m: the VM emulates its CPUs)")
	loadConns := flag.String("load-conns", envOr("WIRKEN_LOAD_CONNS", "500"), "WIRKEN_LOAD_CONNS for TestLoad10k in the VM (default $WIRKEN_LOAD_CONNS, else 500: thousands of TLS handshakes take too long under software emulation)")
	testTimeout := flag.Duration("test-timeout", 25*time.Minute, "-test.timeout of each test binary in the VM")
	flag.Parse()
	specs, err := parseTests(*tests)
	if err != nil {
		return err
	}
	if *e2e != "" {
		if _, err := regexp.Compile(*e2e); err != nil {
			return fmt.Errorf("-e2e %q: %w", *e2e, err)
		}
		// The suite's TestMain copies this wirken binary instead of building one with go.
		specs = append(specs, testSpec{pkg: "./vm-tests", run: *e2e, env: []string{"WIRKEN_E2E_BIN=/bin/wirken",
			"WIRKEN_SOAK=" + *soak, "WIRKEN_LOAD_CONNS=" + *loadConns}})
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	cacheDir, err := filepath.Abs(*cache)
	if err != nil {
		return err
	}
	kdir, release, err := fetchKernel(ctx, cacheDir, *kernelPkg)
	if err != nil {
		return err
	}
	var u unix.Utsname
	if err := unix.Uname(&u); err == nil {
		fmt.Printf("test-vm: host kernel %s; VM kernel package %s (%s)\n", unix.ByteSliceToString(u.Release[:]), filepath.Base(kdir), release)
	}

	build := filepath.Join(cacheDir, "build")
	if err := os.RemoveAll(build); err != nil {
		return err
	}
	if err := os.MkdirAll(build, 0o755); err != nil {
		return err
	}
	a := newArchive()
	if err := stage(ctx, a, build, specs, *testTimeout); err != nil {
		return err
	}
	if *clients != "" {
		if err := stageClients(ctx, a, splitList(*clients)); err != nil {
			return err
		}
	}
	if err := stageModules(a, filepath.Join(kdir, "lib/modules", release), splitList(*modules)); err != nil {
		return err
	}
	initrd := filepath.Join(build, "initramfs.cpio")
	if err := writeFile(initrd, a.Write); err != nil {
		return err
	}
	fmt.Printf("test-vm: built the initramfs in %.0fs\n", time.Since(start).Seconds())

	nonce := make([]byte, 8)
	if _, err := rand.Read(nonce); err != nil {
		return err
	}
	verdict, err := boot(ctx, bootConfig{
		kernel: filepath.Join(kdir, "boot", "vmlinuz-"+release),
		initrd: initrd,
		nonce:  hex.EncodeToString(nonce),
		mem:    *mem,
		smp:    *smp,
		log:    filepath.Join(cacheDir, "console.log"),
	})
	fmt.Printf("test-vm: %s in %.0fs (console log: %s)\n", verdict, time.Since(start).Seconds(), filepath.Join(cacheDir, "console.log"))
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("timed out after %s", *timeout)
	}
	return err
}

// envOr is the environment variable name, or def when it is unset.
func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// fetchKernel makes sure the kernel package is downloaded and extracted
// under cache/kernels/<package> and returns that directory and the kernel
// release it holds.
func fetchKernel(ctx context.Context, cache, pkg string) (string, string, error) {
	concrete, err := resolvePackage(ctx, pkg)
	if err != nil {
		// A fresh host may have no package lists yet: fetch them once.
		fmt.Printf("test-vm: %v; running apt-get update\n", err)
		upd := exec.CommandContext(ctx, "apt-get", "update", "-q")
		upd.Stdout, upd.Stderr = os.Stdout, os.Stderr
		if uerr := upd.Run(); uerr != nil {
			return "", "", fmt.Errorf("%w (and apt-get update failed: %v)", err, uerr)
		}
		if concrete, err = resolvePackage(ctx, pkg); err != nil {
			return "", "", err
		}
	}
	kernels := filepath.Join(cache, "kernels")
	dir := filepath.Join(kernels, concrete)
	if rel, err := findRelease(dir); err == nil {
		return dir, rel, nil
	}
	if err := os.MkdirAll(kernels, 0o755); err != nil {
		return "", "", err
	}
	fmt.Printf("test-vm: downloading %s\n", concrete)
	dl := exec.CommandContext(ctx, "apt-get", "download", concrete)
	dl.Dir = kernels
	dl.Stdout, dl.Stderr = os.Stdout, os.Stderr
	if err := dl.Run(); err != nil {
		return "", "", fmt.Errorf("apt-get download %s: %w", concrete, err)
	}
	debs, _ := filepath.Glob(filepath.Join(kernels, concrete+"_*.deb"))
	if len(debs) != 1 {
		return "", "", fmt.Errorf("apt-get download %s: expected one .deb in %s, found %d", concrete, kernels, len(debs))
	}
	tmp := dir + ".tmp"
	os.RemoveAll(tmp)
	if out, err := exec.CommandContext(ctx, "dpkg-deb", "-x", debs[0], tmp).CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("dpkg-deb -x %s: %w: %s", debs[0], err, out)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return "", "", err
	}
	os.Remove(debs[0])
	rel, err := findRelease(dir)
	return dir, rel, err
}

// resolvePackage turns a meta package (linux-image-cloud-amd64) into the
// concrete image package it depends on; a concrete name is returned as is.
func resolvePackage(ctx context.Context, pkg string) (string, error) {
	if !regexp.MustCompile(`^[a-z0-9][a-z0-9.+-]+$`).MatchString(pkg) {
		return "", fmt.Errorf("-kernel-package %q: not a Debian package name", pkg)
	}
	out, err := exec.CommandContext(ctx, "apt-cache", "depends", pkg).Output()
	if err != nil {
		return "", fmt.Errorf("apt-cache depends %s: %w", pkg, err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		dep, ok := strings.CutPrefix(strings.TrimSpace(line), "Depends: ")
		if ok && regexp.MustCompile(`^linux-image-[0-9]`).MatchString(dep) {
			return dep, nil
		}
	}
	if regexp.MustCompile(`^linux-image-[0-9]`).MatchString(pkg) {
		return pkg, nil
	}
	return "", fmt.Errorf("%s depends on no linux-image-<version> package", pkg)
}

// findRelease returns the release of the one kernel under dir/boot.
func findRelease(dir string) (string, error) {
	m, _ := filepath.Glob(filepath.Join(dir, "boot", "vmlinuz-*"))
	if len(m) != 1 {
		return "", fmt.Errorf("expected one vmlinuz in %s/boot, found %d", dir, len(m))
	}
	return strings.TrimPrefix(filepath.Base(m[0]), "vmlinuz-"), nil
}

// stage builds vminit, wirken and the test binaries into build and adds
// them, with the plan, to the archive.
func stage(ctx context.Context, a *archive, build string, specs []testSpec, testTimeout time.Duration) error {
	gobuild := func(args ...string) error {
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("go %s: %w", strings.Join(args, " "), err)
		}
		return nil
	}
	if err := gobuild("build", "-o", filepath.Join(build, "init"), "./vm-tests/qemu/vminit"); err != nil {
		return err
	}
	if err := gobuild("build", "-trimpath", "-o", filepath.Join(build, "wirken"), "./cmd/wirken"); err != nil {
		return err
	}
	a.file("init", filepath.Join(build, "init"), 0o755)
	a.file("bin/wirken", filepath.Join(build, "wirken"), 0o755)
	// The kernel opens /dev/console for init's output before devtmpfs is up.
	a.chardev("dev/console", 0o600, 5, 1)
	a.bytes("etc/passwd", []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"), 0o644)
	a.bytes("etc/group", []byte("root:x:0:\nnogroup:x:65534:\n"), 0o644)
	for _, d := range []string{"proc", "sys", "tmp", "run", "root"} {
		a.dir(d)
	}
	plan := []step{{Name: "wirken-doctor", Dir: "/", Argv: []string{"/bin/wirken", "doctor"}}}
	seen := map[string]bool{}
	for _, s := range specs {
		name := strings.ReplaceAll(strings.Trim(strings.TrimPrefix(s.pkg, "./"), "/"), "/", "-")
		if seen[name] {
			return fmt.Errorf("-tests: %s given twice", s.pkg)
		}
		seen[name] = true
		bin := filepath.Join(build, name+".test")
		if err := gobuild("test", "-c", "-o", bin, s.pkg); err != nil {
			return err
		}
		if _, err := os.Stat(bin); err != nil {
			return fmt.Errorf("%s has no tests: %w", s.pkg, err)
		}
		// Tests run in their package directory, as under go test.
		dir := "/src/" + strings.TrimPrefix(s.pkg, "./")
		a.file("tests/"+name+".test", bin, 0o755)
		a.dir(dir)
		if err := addTestdata(a, s.pkg, dir); err != nil {
			return err
		}
		argv := []string{"/tests/" + name + ".test", "-test.v", "-test.count=1", "-test.timeout=" + testTimeout.String()}
		if s.run != "" {
			argv = append(argv, "-test.run="+s.run)
		}
		plan = append(plan, step{Name: name, Dir: dir, Argv: argv, Env: s.env})
	}
	b, err := json.Marshal(plan)
	if err != nil {
		return err
	}
	a.bytes("plan.json", b, 0o644)
	return nil
}

// addTestdata copies the package's testdata directory, if any.
func addTestdata(a *archive, pkg, dir string) error {
	root := filepath.Join(pkg, "testdata")
	if _, err := os.Stat(root); os.IsNotExist(err) {
		return nil
	}
	return filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(pkg, p)
		switch {
		case d.IsDir():
			a.dir(filepath.Join(dir, rel))
		case d.Type().IsRegular():
			a.file(filepath.Join(dir, rel), p, 0o644)
		}
		return nil
	})
}

// stageModules adds the named modules and what they depend on, dependencies
// first, with /modules/order listing the order. A Debian kernel package ships
// no modules.dep (depmod makes it at install), so the dependencies are read
// from each module's .modinfo section ("depends=a,b").
func stageModules(a *archive, modDir string, names []string) error {
	if len(names) == 0 {
		return nil
	}
	byName := map[string]string{} // module name -> path
	err := filepath.WalkDir(modDir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.HasSuffix(p, ".ko.xz") || strings.HasSuffix(p, ".ko.zst") || strings.HasSuffix(p, ".ko.gz") {
			return fmt.Errorf("%s is compressed; vminit loads plain .ko files only", p)
		}
		if strings.HasSuffix(p, ".ko") {
			byName[modName(strings.TrimSuffix(d.Name(), ".ko"))] = p
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("listing the kernel's modules: %w", err)
	}
	var order []string
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(name, from string) error
	visit = func(name, from string) error {
		switch state[name] {
		case 1:
			return fmt.Errorf("module dependency cycle at %s", name)
		case 2:
			return nil
		}
		path, ok := byName[name]
		if !ok {
			return fmt.Errorf("module %s (needed by %s) is not a module of this kernel (built in, or absent)", name, from)
		}
		state[name] = 1
		deps, err := moduleDepends(path)
		if err != nil {
			return err
		}
		for _, d := range deps {
			if err := visit(d, name); err != nil {
				return err
			}
		}
		state[name] = 2
		order = append(order, path)
		return nil
	}
	for _, n := range names {
		if err := visit(modName(n), "-modules"); err != nil {
			return err
		}
	}
	var list strings.Builder
	for _, p := range order {
		a.file("modules/"+filepath.Base(p), p, 0o644)
		list.WriteString(filepath.Base(p) + "\n")
	}
	a.bytes("modules/order", []byte(list.String()), 0o644)
	return nil
}

// modName is the kernel's form of a module name: '-' and '_' are the same.
func modName(s string) string { return strings.ReplaceAll(s, "-", "_") }

// moduleDepends reads the depends= field of a module's .modinfo section.
func moduleDepends(path string) ([]string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading module %s: %w", path, err)
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, fmt.Errorf("module %s has no .modinfo section", path)
	}
	b, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf("reading module %s: %w", path, err)
	}
	var deps []string
	for _, kv := range strings.Split(string(b), "\x00") {
		if v, ok := strings.CutPrefix(kv, "depends="); ok {
			for _, d := range strings.Split(v, ",") {
				if d != "" {
					deps = append(deps, modName(d))
				}
			}
		}
	}
	return deps, nil
}

// step is one command in the VM's plan (vminit has the same type).
type step struct {
	Name string   `json:"name"`
	Dir  string   `json:"dir"`
	Argv []string `json:"argv"`
	Env  []string `json:"env,omitempty"`
}

func writeFile(path string, write func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

type bootConfig struct {
	kernel, initrd, nonce, mem, log string
	smp                             int
}

// kvmWorks reports whether /dev/kvm can be opened for use.
func kvmWorks() bool {
	fd, err := unix.Open("/dev/kvm", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	unix.Close(fd)
	return true
}

// boot runs the VM, copies its console to stdout and the log, and returns
// the verdict it printed.
func boot(ctx context.Context, c bootConfig) (string, error) {
	args := []string{
		"-kernel", c.kernel, "-initrd", c.initrd,
		"-append", "console=ttyS0 panic=-1 wirken.nonce=" + c.nonce,
		"-nographic", "-no-reboot", "-m", c.mem, "-smp", fmt.Sprint(c.smp),
		"-nic", "none",
	}
	accel := "software emulation (TCG; /dev/kvm is not usable)"
	if kvmWorks() {
		args = append(args, "-enable-kvm", "-cpu", "host")
		accel = "KVM"
	} else {
		args = append(args, "-accel", "tcg", "-cpu", "max")
	}
	fmt.Printf("test-vm: booting with %s\n", accel)
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", args...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", err
	}
	cmd.Stderr = os.Stderr
	logf, err := os.Create(c.log)
	if err != nil {
		return "", err
	}
	defer logf.Close()
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("starting qemu-system-x86_64 (make deps installs it): %w", err)
	}
	res := readConsole(out, c.nonce, io.MultiWriter(os.Stdout, logf))
	werr := cmd.Wait()
	summary := fmt.Sprintf("kernel %q ran: verdict %q", res.kernel, res.verdict)
	switch {
	case ctx.Err() != nil:
		return summary, fmt.Errorf("the VM did not finish: %w", ctx.Err())
	case werr != nil:
		return summary, fmt.Errorf("qemu: %w", werr)
	}
	return summary, res.check()
}

// consoleResult is what vminit reported on the console.
type consoleResult struct {
	kernel  string   // uname -r inside the VM
	verdict string   // "PASS", "FAIL <steps>", or "" if it never said
	failed  []string // steps that reported FAIL
}

// check says whether the VM ran everything and everything passed.
func (r consoleResult) check() error {
	switch {
	case r.kernel == "":
		return errors.New("the VM never reported its kernel: it did not boot into vminit")
	case r.verdict == "":
		return errors.New("the VM printed no verdict")
	case r.verdict != "PASS" || len(r.failed) > 0:
		return fmt.Errorf("failed in the VM: verdict %s, failed steps %v", r.verdict, r.failed)
	}
	return nil
}

// readConsole copies the console to echo and picks out vminit's lines: only
// those that carry this run's nonce count.
func readConsole(r io.Reader, nonce string, echo io.Writer) consoleResult {
	var res consoleResult
	prefix := "WIRKEN-VM " + nonce + " "
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		fmt.Fprintln(echo, line)
		msg, ok := strings.CutPrefix(line, prefix)
		if !ok {
			continue
		}
		switch {
		case strings.HasPrefix(msg, "KERNEL "):
			res.kernel = strings.TrimPrefix(msg, "KERNEL ")
		case strings.HasPrefix(msg, "STEP ") && strings.Contains(msg, " FAIL "):
			res.failed = append(res.failed, strings.Fields(msg)[1])
		case strings.HasPrefix(msg, "VERDICT "):
			res.verdict = strings.TrimPrefix(msg, "VERDICT ")
		}
	}
	return res
}
