//go:build linux

// Command vminit is PID 1 inside the qemu test VM (see ../main.go): it mounts
// the file systems the tests need, brings lo up, loads the kernel modules
// listed in /modules/order, runs each step of /plan.json with CI=true, prints
// one result line per step and a verdict line on the console, and powers the
// VM off. Its lines start with "WIRKEN-VM" and carry the nonce from the
// kernel command line (wirken.nonce=...), so test output cannot forge them.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// step is one command the VM runs; the host writes them to /plan.json.
type step struct {
	Name string   `json:"name"`
	Dir  string   `json:"dir"`
	Argv []string `json:"argv"`
	Env  []string `json:"env,omitempty"` // added to the base environment
}

var nonce = "none"

func say(format string, a ...any) {
	fmt.Printf("WIRKEN-VM %s "+format+"\n", append([]any{nonce}, a...)...)
}

func main() {
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "vminit: I am the init of the wirken test VM; do not run me elsewhere")
		os.Exit(2)
	}
	failed := run()
	if len(failed) == 0 {
		say("VERDICT PASS")
	} else {
		say("VERDICT FAIL %s", strings.Join(failed, ","))
	}
	unix.Sync()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		fmt.Println("vminit: power off:", err)
	}
	select {} // PID 1 must not exit; the host's timeout ends the VM
}

// run sets the VM up and runs the plan; it returns the names of what failed.
func run() []string {
	if err := mountAll(); err != nil {
		fmt.Println("vminit:", err)
		return []string{"setup"}
	}
	for _, f := range strings.Fields(readString("/proc/cmdline")) {
		if v, ok := strings.CutPrefix(f, "wirken.nonce="); ok {
			nonce = v
		}
	}
	var u unix.Utsname
	if err := unix.Uname(&u); err == nil {
		say("KERNEL %s", unix.ByteSliceToString(u.Release[:]))
	}
	if err := loopbackUp(); err != nil {
		fmt.Println("vminit:", err)
		return []string{"setup"}
	}
	if err := loadModules("/modules"); err != nil {
		fmt.Println("vminit:", err)
		return []string{"modules"}
	}
	var plan []step
	if err := json.Unmarshal([]byte(readString("/plan.json")), &plan); err != nil || len(plan) == 0 {
		fmt.Println("vminit: reading /plan.json:", err)
		return []string{"plan"}
	}
	var failed []string
	for _, s := range plan {
		start := time.Now()
		cmd := exec.Command(s.Argv[0], s.Argv[1:]...)
		cmd.Dir = s.Dir
		watch := &noTestsWatch{w: os.Stdout}
		cmd.Stdout, cmd.Stderr = watch, watch
		// /usr/bin holds the host clients the runner copied in (-clients).
		cmd.Env = append([]string{"CI=true", "PATH=/bin:/usr/bin", "HOME=/root", "TMPDIR=/tmp", "USER=root"}, s.Env...)
		err := cmd.Run()
		code := 0
		if err != nil {
			code = -1
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			} else {
				fmt.Println("vminit:", err)
			}
		}
		verdict := "PASS"
		if code == 0 && watch.seen {
			fmt.Println("vminit: the step ran no tests (does its -test.run pattern match?)")
			code = -2
		}
		if code != 0 {
			verdict = "FAIL"
			failed = append(failed, s.Name)
		}
		say("STEP %s %s exit=%d %.1fs", s.Name, verdict, code, time.Since(start).Seconds())
	}
	return failed
}

func mountAll() error {
	for _, m := range []struct {
		src, dst, fstype, data string
		flags                  uintptr
	}{
		{"proc", "/proc", "proc", "", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
		{"sysfs", "/sys", "sysfs", "", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
		{"devtmpfs", "/dev", "devtmpfs", "mode=0755", unix.MS_NOSUID},
		{"tmpfs", "/tmp", "tmpfs", "mode=1777", unix.MS_NOSUID | unix.MS_NODEV},
		{"tmpfs", "/run", "tmpfs", "mode=0755", unix.MS_NOSUID | unix.MS_NODEV},
		{"cgroup2", "/sys/fs/cgroup", "cgroup2", "", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
		{"bpffs", "/sys/fs/bpf", "bpf", "mode=0700", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
	} {
		if err := os.MkdirAll(m.dst, 0o755); err != nil {
			return fmt.Errorf("mounting %s: %w", m.dst, err)
		}
		if err := unix.Mount(m.src, m.dst, m.fstype, m.flags, m.data); err != nil {
			return fmt.Errorf("mounting %s on %s: %w", m.fstype, m.dst, err)
		}
	}
	return nil
}

// loopbackUp brings lo up.
func loopbackUp() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("bringing lo up: %w", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("bringing lo up: %w", err)
	}
	return nil
}

// loadModules loads dir/<name> for each name in dir/order (dependencies
// first; the host orders them).
func loadModules(dir string) error {
	f, err := os.Open(filepath.Join(dir, "order"))
	if os.IsNotExist(err) {
		return nil
	} else if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name := strings.TrimSpace(sc.Text())
		if name == "" {
			continue
		}
		m, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			return fmt.Errorf("loading module %s: %w", name, err)
		}
		err = unix.FinitModule(int(m.Fd()), "", 0)
		m.Close()
		if err != nil && err != unix.EEXIST {
			return fmt.Errorf("loading module %s: %w", name, err)
		}
		say("MODULE %s loaded", name)
	}
	return sc.Err()
}

func readString(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return string(b)
}

// noTestsWatch passes output through and notes whether a test binary said it
// ran no tests: a step that tests nothing must not pass.
type noTestsWatch struct {
	w    io.Writer
	tail []byte
	seen bool
}

const noTests = "testing: warning: no tests to run"

func (n *noTestsWatch) Write(p []byte) (int, error) {
	buf := append(n.tail, p...)
	if bytes.Contains(buf, []byte(noTests)) {
		n.seen = true
	}
	if len(buf) > len(noTests) {
		buf = buf[len(buf)-len(noTests):]
	}
	n.tail = append(n.tail[:0], buf...)
	return n.w.Write(p)
}
