//go:build linux

package vmtests

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestMakeDemo runs `make demo` as a newcomer would and expects its story to end well and
// leave no cgroup or pinned program behind.
func TestMakeDemo(t *testing.T) {
	requireRoot(t)
	out := makeIn(t, "..", "demo")
	for _, want := range []string{"the model says:", "the agent's DNS went through wirken", "NXDOMAIN", "the paste site received no connection", "wirken answered: HTTP/2 403", ": ok: ", "demo passed"} {
		if !strings.Contains(out, want) {
			t.Fatalf("make demo output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "sk-demo-") {
		t.Fatal("the demo printed its API key")
	}
	for _, glob := range []string{filepath.Join(cgroup2Mount(t), "wirken-demo-*"), "/sys/fs/bpf/wirken-demo-*"} {
		if left, _ := filepath.Glob(glob); len(left) > 0 {
			t.Errorf("make demo left %v behind", left)
		}
	}
	if _, err := os.Stat("../bin/wirken-demo"); err != nil {
		t.Errorf("make demo did not build bin/wirken-demo: %v", err)
	}
}
