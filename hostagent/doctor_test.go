package hostagent

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"strings"
	"syscall"
	"testing"

	"github.com/wirken/wirken/bpf"
)

// healthyFacts is a host where every probe passed.
func healthyFacts() DoctorFacts {
	f := DoctorFacts{KernelRelease: "6.1.0-26-cloud-amd64", Cgroup2: "/sys/fs/cgroup", BPFFSMounted: true}
	f.Probe.BPFFS = bpf.ProbeResult{Name: "bpffs mount", Detail: "pinned"}
	f.Probe.Features = []bpf.ProbeResult{{Name: "map sk_storage", Detail: "created"}, {Name: "wirken programs", Detail: "loaded"}}
	for _, h := range bpf.Hooks() {
		f.Probe.Hooks = append(f.Probe.Hooks, bpf.ProbeResult{Name: h.Name, Detail: "attached"})
	}
	return f
}

// withHook replaces one hook's result.
func withHook(f DoctorFacts, name string, err error) DoctorFacts {
	hooks := append([]bpf.ProbeResult(nil), f.Probe.Hooks...)
	for i := range hooks {
		if hooks[i].Name == name {
			hooks[i].Err = err
		}
	}
	f.Probe.Hooks = hooks
	return f
}

func check(t *testing.T, d Diagnosis, name string) Check {
	t.Helper()
	for _, c := range d.Checks {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no check %q in %+v", name, d.Checks)
	return Check{}
}

func TestDiagnose(t *testing.T) {
	missing := fmt.Errorf("%w: attaching: %w", bpf.ErrMissing, syscall.EINVAL)
	tests := []struct {
		name     string
		facts    func() DoctorFacts
		ok       bool
		row      string      // the check to look at
		status   CheckStatus // its status
		detail   string      // a substring of its detail
		failed   []string
		degraded []string
	}{
		{name: "healthy", facts: healthyFacts, ok: true, row: "hook connect4", status: StatusOK, detail: "steer IPv4 TCP"},
		{name: "kernel too old", ok: false, row: "kernel", status: StatusMissing, detail: "older than 5.8",
			facts:  func() DoctorFacts { f := healthyFacts(); f.KernelRelease = "5.4.0-150-generic"; return f },
			failed: []string{"kernel"}},
		{name: "kernel 5.8 is enough", ok: true, row: "kernel", status: StatusOK, detail: "5.8.0 (minimum 5.8)",
			facts: func() DoctorFacts { f := healthyFacts(); f.KernelRelease = "5.8.0"; return f }},
		{name: "kernel 5.10+ parses minor", ok: true, row: "kernel", status: StatusOK,
			facts: func() DoctorFacts { f := healthyFacts(); f.KernelRelease = "5.10-rc1"; return f }},
		{name: "kernel unreadable", ok: false, row: "kernel", status: StatusFailed, detail: "cannot read a version",
			facts:  func() DoctorFacts { f := healthyFacts(); f.KernelRelease = "weird"; return f },
			failed: []string{"kernel"}},
		{name: "uname failed", ok: false, row: "kernel", status: StatusFailed, detail: "reading the kernel release",
			facts:  func() DoctorFacts { f := healthyFacts(); f.KernelErr = syscall.EFAULT; return f },
			failed: []string{"kernel"}},
		{name: "no BTF is fine", ok: true, row: "btf", status: StatusMissing, detail: "no CO-RE",
			facts:    func() DoctorFacts { f := healthyFacts(); f.BTFErr = fs.ErrNotExist; return f },
			degraded: []string{"btf"}},
		{name: "no cgroup2", ok: false, row: "cgroup2", status: StatusMissing, detail: "mount -t cgroup2",
			facts:  func() DoctorFacts { f := healthyFacts(); f.Cgroup2Err = fmt.Errorf("no cgroup2 mount found"); return f },
			failed: []string{"cgroup2"}},
		{name: "bpffs unmounted but mountable", ok: true, row: "bpffs", status: StatusOK, detail: "`wirken run` mounts it",
			facts: func() DoctorFacts { f := healthyFacts(); f.BPFFSMounted = false; return f }},
		{name: "bpffs cannot be mounted", ok: false, row: "bpffs", status: StatusFailed, detail: "cannot be mounted",
			facts: func() DoctorFacts {
				f := healthyFacts()
				f.BPFFSMounted = false
				f.Probe.BPFFS.Err = fmt.Errorf("mounting bpffs at /tmp/x: %w", syscall.EPERM)
				return f
			},
			failed: []string{"bpffs", "bpffs mount"}},
		{name: "bpffs mounted but private mount refused", ok: false, row: "bpffs mount", status: StatusFailed, detail: "operation not permitted",
			facts: func() DoctorFacts {
				f := healthyFacts()
				f.Probe.BPFFS.Err = fmt.Errorf("mounting bpffs at /tmp/x: %w", syscall.EPERM)
				return f
			},
			failed: []string{"bpffs mount"}},
		{name: "required hook missing", ok: false, row: "hook sendmsg4", status: StatusMissing, detail: "not supported by this kernel: attaching: invalid argument (the hook exists since kernel 4.18)",
			facts:  func() DoctorFacts { return withHook(healthyFacts(), "sendmsg4", missing) },
			failed: []string{"hook sendmsg4"}},
		{name: "required hook failed", ok: false, row: "hook sock_ops", status: StatusFailed, detail: "operation not permitted",
			facts: func() DoctorFacts {
				return withHook(healthyFacts(), "sock_ops", fmt.Errorf("loading: %w", syscall.EPERM))
			},
			failed: []string{"hook sock_ops"}},
		{name: "newest hook missing", ok: false, row: "hook getpeername6", status: StatusMissing, detail: "(the hook exists since kernel 5.8)",
			facts:  func() DoctorFacts { return withHook(healthyFacts(), "getpeername6", missing) },
			failed: []string{"hook getpeername6"}},
		// A hook that was not probed fails: it never passes by default.
		{name: "hook not probed", ok: false, row: "hook bind6", status: StatusFailed, detail: "not probed",
			facts: func() DoctorFacts {
				f := healthyFacts()
				f.Probe.Hooks = f.Probe.Hooks[:len(f.Probe.Hooks)-1]
				return f
			},
			failed: []string{"hook bind6"}},
		{name: "feature missing", ok: false, row: "map sk_storage", status: StatusMissing,
			facts: func() DoctorFacts {
				f := healthyFacts()
				f.Probe.Features = []bpf.ProbeResult{{Name: "map sk_storage", Err: fmt.Errorf("%w: no", bpf.ErrMissing)}}
				return f
			},
			failed: []string{"map sk_storage"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Diagnose(tt.facts())
			if d.OK != tt.ok {
				t.Errorf("OK = %v, want %v; failed %v", d.OK, tt.ok, d.Failed)
			}
			c := check(t, d, tt.row)
			if c.Status != tt.status || !strings.Contains(c.Detail, tt.detail) {
				t.Errorf("%s = %s %q, want %s containing %q", tt.row, c.Status, c.Detail, tt.status, tt.detail)
			}
			if fmt.Sprint(d.Failed) != fmt.Sprint(tt.failed) {
				t.Errorf("failed = %v, want %v", d.Failed, tt.failed)
			}
			if fmt.Sprint(d.Degraded) != fmt.Sprint(tt.degraded) {
				t.Errorf("degraded = %v, want %v", d.Degraded, tt.degraded)
			}
			if want := len(bpf.Hooks()) + 5 + len(tt.facts().Probe.Features); len(d.Checks) != want {
				t.Errorf("%d checks, want %d", len(d.Checks), want)
			}
		})
	}
}

func TestDiagnosisOutput(t *testing.T) {
	d := Diagnose(withHook(healthyFacts(), "connect6", fmt.Errorf("%w: x", bpf.ErrMissing)))
	var b bytes.Buffer
	if err := d.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != len(d.Checks)+2 {
		t.Fatalf("%d lines for %d checks:\n%s", len(lines), len(d.Checks), out)
	}
	if !strings.HasPrefix(lines[0], "CHECK") || !strings.Contains(lines[0], "STATUS") {
		t.Errorf("header: %q", lines[0])
	}
	if f := strings.Fields(lines[len(lines)-1]); len(f) < 2 || f[1] != "FAILED:" || !strings.Contains(lines[len(lines)-1], "hook connect6") {
		t.Errorf("verdict line: %q", lines[len(lines)-1])
	}
	found := false
	for _, l := range lines {
		if f := strings.Fields(l); len(f) > 4 && f[1] == "connect6" {
			found = f[2] == "missing" && f[3] == "required"
		}
	}
	if !found {
		t.Errorf("no 'hook connect6 missing required' row:\n%s", out)
	}

	b.Reset()
	if err := d.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var back Diagnosis
	if err := json.Unmarshal(b.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if back.OK || len(back.Checks) != len(d.Checks) || back.Failed[0] != "hook connect6" || back.Kernel != d.Kernel {
		t.Errorf("JSON round trip: %+v", back)
	}

	ok := Diagnose(healthyFacts())
	if v := ok.Verdict(); !strings.HasPrefix(v, "verdict: ok") || strings.Contains(v, "degraded") {
		t.Errorf("healthy verdict: %q", v)
	}
}
