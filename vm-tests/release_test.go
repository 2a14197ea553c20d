//go:build linux

package vmtests

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// copyTree copies the repository's tracked files (as they are in the working tree) to dir.
func copyTree(t *testing.T, dir string) {
	t.Helper()
	cmd := exec.Command("sh", "-c", `cd .. && git ls-files -z | tar --null -T - -cf - | tar -x -C "$0"`, dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("copying the tree: %v\n%s", err, out)
	}
}

func makeIn(t *testing.T, dir string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "make", append([]string{"-C", dir}, args...)...)
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(goTool())+":"+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make %v in %s: %v\n%s", args, dir, err, out)
	}
	return string(out)
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "/usr/local/go/bin/go"
}

// TestRelease builds the release twice from two copies of the tree at different paths and
// expects the same bytes; checks the binary is static; signs SHA256SUMS with a throwaway
// Ed25519 key and verifies it the way the README tells operators to, then shows that one
// changed byte in the binary or in the sums is caught.
func TestRelease(t *testing.T) {
	for _, tool := range []string{"make", "ssh-keygen", "sha256sum", "ldd", "git", "tar"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is required (make deps installs it): %v", tool, err)
		}
	}
	tmp := t.TempDir()
	a, b := filepath.Join(tmp, "a"), filepath.Join(tmp, "build-b", "elsewhere")
	for _, d := range []string{a, b} {
		os.MkdirAll(d, 0o755)
		copyTree(t, d)
	}
	key := filepath.Join(tmp, "release-key")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "wirken-release", "-f", key).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	makeIn(t, a, "release", "VERSION=v0.0.0-test", "RELEASE_KEY="+key)
	makeIn(t, b, "release", "VERSION=v0.0.0-test")

	sumsA, err := os.ReadFile(filepath.Join(a, "dist", "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	sumsB, err := os.ReadFile(filepath.Join(b, "dist", "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	if len(sumsA) < 64 || !bytes.Equal(sumsA, sumsB) {
		t.Fatalf("two builds of the same tree differ:\n%s\n%s", sumsA, sumsB)
	}
	t.Logf("reproducible: %s", bytes.TrimSpace(sumsA))
	name := strings.Fields(string(sumsA))[1]
	bin := filepath.Join(a, "dist", name)
	if out, _ := exec.Command("ldd", bin).CombinedOutput(); !strings.Contains(string(out), "not a dynamic executable") {
		t.Fatalf("ldd %s: %s; want a static binary", name, out)
	}

	// What the README tells an operator to run before installing.
	pub, err := os.ReadFile(key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	signers := filepath.Join(tmp, "allowed_signers")
	write(t, signers, []byte("wirken-release namespaces=\"wirken-release\" "+string(pub)))
	verify := func(dir string) error {
		cmd := exec.Command("sh", "-c", `ssh-keygen -Y verify -f "$0" -I wirken-release -n wirken-release -s SHA256SUMS.sig < SHA256SUMS && sha256sum -c SHA256SUMS`, signers)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Logf("verify: %s", out)
		}
		return err
	}
	dist := filepath.Join(a, "dist")
	if err := verify(dist); err != nil {
		t.Fatalf("the signature or the sums of a fresh release do not verify: %v", err)
	}

	flip := func(path string, at int) func() {
		orig, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		bad := append([]byte(nil), orig...)
		bad[at] ^= 0x01
		if err := os.WriteFile(path, bad, 0o644); err != nil {
			t.Fatal(err)
		}
		return func() { os.WriteFile(path, orig, 0o755) }
	}
	restore := flip(bin, len(sumsA)*1000)
	if err := verify(dist); err == nil {
		t.Fatal("a binary with one byte changed verified")
	}
	restore()
	if err := verify(dist); err != nil {
		t.Fatalf("the restored binary does not verify: %v", err)
	}
	restore = flip(filepath.Join(dist, "SHA256SUMS"), 3)
	if err := verify(dist); err == nil {
		t.Fatal("SHA256SUMS with one byte changed verified")
	}
	restore()
}
