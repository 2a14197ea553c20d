package hostagent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/wirken/wirken/bpf"
)

// MinKernel is the oldest kernel wirken supports: 5.8 has every cgroup hook
// it uses (getpeername4/6 came last).
var MinKernel = [2]int{5, 8}

// CheckStatus is the outcome of one doctor check.
type CheckStatus string

const (
	StatusOK      CheckStatus = "ok"
	StatusMissing CheckStatus = "missing" // the kernel or host lacks it
	StatusFailed  CheckStatus = "failed"  // it is there but did not work, or could not be checked
)

// Check is one row of the doctor's table.
type Check struct {
	Name     string      `json:"check"`
	Status   CheckStatus `json:"status"`
	Required bool        `json:"required"`
	Detail   string      `json:"detail"`
}

// Diagnosis is the doctor's answer: every check, and whether wirken can
// enforce its policy on this host.
type Diagnosis struct {
	Kernel string  `json:"kernel"`
	Checks []Check `json:"checks"`
	// OK is true when every required check passed.
	OK bool `json:"ok"`
	// Failed names the required checks that did not pass.
	Failed []string `json:"required_not_ok,omitempty"`
	// Degraded names the optional checks that did not pass.
	Degraded []string `json:"optional_not_ok,omitempty"`
}

// DoctorFacts is what the doctor gathered from the host, before judging it.
type DoctorFacts struct {
	KernelRelease string // uname -r
	KernelErr     error  // reading it failed
	BTFErr        error  // stat of /sys/kernel/btf/vmlinux
	Cgroup2       string // the cgroup2 mount point
	Cgroup2Err    error  // finding it failed
	BPFFSMounted  bool   // /sys/fs/bpf is a bpffs
	BPFFSErr      error  // checking that failed
	Probe         bpf.ProbeReport
}

// btfPath is the kernel's own BTF.
const btfPath = "/sys/kernel/btf/vmlinux"

// Diagnose judges the facts. It is pure, so every verdict can be tested.
func Diagnose(f DoctorFacts) Diagnosis {
	d := Diagnosis{Kernel: f.KernelRelease}
	add := func(c Check) { d.Checks = append(d.Checks, c) }

	add(kernelCheck(f.KernelRelease, f.KernelErr))

	switch {
	case f.BTFErr == nil:
		add(Check{"btf", StatusOK, false, btfPath + " present"})
	case errors.Is(f.BTFErr, fs.ErrNotExist):
		add(Check{"btf", StatusMissing, false, btfPath + " absent; not needed: wirken's programs use no CO-RE relocations"})
	default:
		add(Check{"btf", StatusFailed, false, f.BTFErr.Error()})
	}

	if f.Cgroup2Err != nil {
		add(Check{"cgroup2", StatusMissing, true, f.Cgroup2Err.Error() + "; mount it (mount -t cgroup2 none /sys/fs/cgroup)"})
	} else {
		add(Check{"cgroup2", StatusOK, true, "mounted at " + f.Cgroup2})
	}

	switch {
	case f.BPFFSErr != nil:
		add(Check{"bpffs", StatusFailed, true, fmt.Sprintf("checking /sys/fs/bpf: %v", f.BPFFSErr)})
	case f.BPFFSMounted:
		add(Check{"bpffs", StatusOK, true, "mounted at /sys/fs/bpf"})
	case f.Probe.BPFFS.Err == nil:
		add(Check{"bpffs", StatusOK, true, "not mounted at /sys/fs/bpf; `wirken run` mounts it (a test mount worked)"})
	default:
		add(Check{"bpffs", StatusFailed, true, "not mounted at /sys/fs/bpf, and it cannot be mounted (see bpffs mount)"})
	}
	add(probeCheck(f.Probe.BPFFS, true, ""))

	for _, r := range f.Probe.Features {
		add(probeCheck(r, true, ""))
	}
	hooks := bpf.Hooks()
	for i, h := range hooks {
		r := bpf.ProbeResult{Name: h.Name, Err: errors.New("not probed")}
		if i < len(f.Probe.Hooks) && f.Probe.Hooks[i].Name == h.Name {
			r = f.Probe.Hooks[i]
		}
		r.Name = "hook " + h.Name
		c := probeCheck(r, h.Required, h.Role)
		if c.Status == StatusMissing {
			c.Detail += " (the hook exists since kernel " + h.MinKernel + ")"
		}
		add(c)
	}

	d.OK = true
	for _, c := range d.Checks {
		switch {
		case c.Status == StatusOK:
		case c.Required:
			d.OK = false
			d.Failed = append(d.Failed, c.Name)
		default:
			d.Degraded = append(d.Degraded, c.Name)
		}
	}
	return d
}

func kernelCheck(release string, err error) Check {
	c := Check{Name: "kernel", Required: true}
	if err != nil {
		c.Status, c.Detail = StatusFailed, fmt.Sprintf("reading the kernel release: %v", err)
		return c
	}
	maj, min, ok := parseRelease(release)
	want := fmt.Sprintf("%d.%d", MinKernel[0], MinKernel[1])
	switch {
	case !ok:
		c.Status, c.Detail = StatusFailed, fmt.Sprintf("cannot read a version from %q; the minimum is %s", release, want)
	case maj < MinKernel[0] || maj == MinKernel[0] && min < MinKernel[1]:
		c.Status, c.Detail = StatusMissing, fmt.Sprintf("%s is older than %s, the minimum (getpeername4/6 hooks, bpf_link pinning)", release, want)
	default:
		c.Status, c.Detail = StatusOK, fmt.Sprintf("%s (minimum %s)", release, want)
	}
	return c
}

// parseRelease reads major and minor from a release such as
// "6.1.0-26-cloud-amd64".
func parseRelease(r string) (major, minor int, ok bool) {
	parts := strings.SplitN(r, ".", 3)
	if len(parts) < 2 {
		return 0, 0, false
	}
	major, err1 := strconv.Atoi(parts[0])
	end := strings.IndexFunc(parts[1], func(c rune) bool { return c < '0' || c > '9' })
	if end < 0 {
		end = len(parts[1])
	}
	minor, err2 := strconv.Atoi(parts[1][:end])
	if err1 != nil || err2 != nil || major <= 0 {
		return 0, 0, false
	}
	return major, minor, true
}

func probeCheck(r bpf.ProbeResult, required bool, role string) Check {
	c := Check{Name: r.Name, Required: required}
	switch {
	case r.Err == nil:
		c.Status, c.Detail = StatusOK, r.Detail
		if role != "" {
			c.Detail = role
		}
	case errors.Is(r.Err, bpf.ErrMissing):
		c.Status, c.Detail = StatusMissing, r.Err.Error()
	default:
		c.Status, c.Detail = StatusFailed, r.Err.Error()
	}
	return c
}

// WriteTable prints the checks as a table and a verdict line.
func (d Diagnosis) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CHECK\tSTATUS\tREQUIRED\tDETAIL")
	for _, c := range d.Checks {
		req := "optional"
		if c.Required {
			req = "required"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", c.Name, c.Status, req, c.Detail)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintln(w, d.Verdict())
	return err
}

// Verdict is a one-line summary.
func (d Diagnosis) Verdict() string {
	var b strings.Builder
	if d.OK {
		b.WriteString("verdict: ok: wirken can enforce its policy on this host")
	} else {
		fmt.Fprintf(&b, "verdict: FAILED: required: %s", strings.Join(d.Failed, ", "))
	}
	if len(d.Degraded) > 0 {
		fmt.Fprintf(&b, " (degraded, optional: %s)", strings.Join(d.Degraded, ", "))
	}
	return b.String()
}

// WriteJSON prints the diagnosis as one JSON object.
func (d Diagnosis) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(d)
}
