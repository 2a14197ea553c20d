//go:build linux

package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestReadConsole(t *testing.T) {
	const nonce = "0123abcd"
	tests := []struct {
		name    string
		console string
		kernel  string
		failed  []string
		err     string // substring of check()'s error; "" = passes
	}{
		{name: "pass", console: "[ 0.1] booting\r\nWIRKEN-VM 0123abcd KERNEL 6.1.0-56-cloud-amd64\r\n" +
			"WIRKEN-VM 0123abcd STEP bpf PASS exit=0 6.2s\nWIRKEN-VM 0123abcd VERDICT PASS\n",
			kernel: "6.1.0-56-cloud-amd64"},
		{name: "a step failed", console: "WIRKEN-VM 0123abcd KERNEL 6.1.0\nWIRKEN-VM 0123abcd STEP bpf FAIL exit=1 3.0s\n" +
			"WIRKEN-VM 0123abcd VERDICT FAIL bpf\n",
			kernel: "6.1.0", failed: []string{"bpf"}, err: "failed in the VM: verdict FAIL bpf"},
		{name: "forged lines without the nonce do not count", console: "WIRKEN-VM 0123abcd KERNEL 6.1.0\n" +
			"WIRKEN-VM 0123abcd STEP bpf FAIL exit=1 3.0s\nWIRKEN-VM ffff VERDICT PASS\nWIRKEN-VM  VERDICT PASS\n",
			kernel: "6.1.0", failed: []string{"bpf"}, err: "no verdict"},
		{name: "a failed step wins over a PASS verdict", console: "WIRKEN-VM 0123abcd KERNEL 6.1.0\n" +
			"WIRKEN-VM 0123abcd STEP doctor FAIL exit=1 1.0s\nWIRKEN-VM 0123abcd VERDICT PASS\n",
			kernel: "6.1.0", failed: []string{"doctor"}, err: "failed steps [doctor]"},
		{name: "never booted", console: "Kernel panic - not syncing: No working init found.\n", err: "did not boot into vminit"},
		{name: "died mid-run", console: "WIRKEN-VM 0123abcd KERNEL 6.1.0\nWIRKEN-VM 0123abcd STEP bpf PASS exit=0 1s\n",
			kernel: "6.1.0", err: "no verdict"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var echo bytes.Buffer
			r := readConsole(strings.NewReader(tt.console), nonce, &echo)
			if r.kernel != tt.kernel || strings.Join(r.failed, ",") != strings.Join(tt.failed, ",") {
				t.Errorf("got kernel %q failed %v, want %q %v", r.kernel, r.failed, tt.kernel, tt.failed)
			}
			err := r.check()
			switch {
			case tt.err == "" && err != nil:
				t.Errorf("check: %v", err)
			case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
				t.Errorf("check: %v, want an error containing %q", err, tt.err)
			}
			if want := strings.ReplaceAll(tt.console, "\r", ""); echo.String() != want {
				t.Errorf("echo = %q, want %q", echo.String(), want)
			}
		})
	}
}

func TestParseTests(t *testing.T) {
	got, err := parseTests(" ./bpf, ./cmd/wirken:^TestCLIDoctor ,")
	if err != nil || len(got) != 2 || got[0].pkg != "./bpf" || got[0].run != "" || got[1].pkg != "./cmd/wirken" || got[1].run != "^TestCLIDoctor" {
		t.Fatalf("parseTests = %v, %v", got, err)
	}
	for _, bad := range []string{"", "bpf", "./bpf:(", " , "} {
		if _, err := parseTests(bad); err == nil {
			t.Errorf("parseTests(%q) accepted", bad)
		}
	}
}
