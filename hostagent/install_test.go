package hostagent

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
)

func TestInstallLayout(t *testing.T) {
	root := t.TempDir()
	bin := filepath.Join(t.TempDir(), "wirken")
	os.WriteFile(bin, []byte("#!/bin/true\n"), 0o700)
	files := fstest.MapFS{
		"wirken.toml":    {Data: []byte("policy = \"policy.toml\"\n")},
		"policy.toml":    {Data: []byte("version = 1\n")},
		"wirken.service": {Data: []byte("[Service]\nExecStart=/usr/local/bin/wirken run\n")},
	}
	// An operator's policy is already there.
	os.MkdirAll(filepath.Join(root, "etc/wirken"), 0o755)
	os.WriteFile(filepath.Join(root, "etc/wirken/policy.toml"), []byte("mine\n"), 0o600)

	var out bytes.Buffer
	spec := InstallSpec{Root: root, Prefix: "/opt/wirken", Binary: bin, Files: files, Out: &out}
	if err := Install(spec); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]os.FileMode{
		"opt/wirken/bin/wirken": 0o755, "etc/wirken/wirken.toml": 0o644, "etc/wirken/policy.toml": 0o600,
		"var/lib/wirken": 0o711 | os.ModeDir, "var/lib": 0o755 | os.ModeDir, "etc/systemd/system/wirken.service": 0o644,
	} {
		st, err := os.Stat(filepath.Join(root, path))
		if err != nil {
			t.Fatal(err)
		}
		if got := st.Mode() & (os.ModeDir | os.ModePerm); got != want {
			t.Errorf("%s: mode %v, want %v", path, got, want)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(root, "etc/wirken/policy.toml")); string(b) != "mine\n" {
		t.Fatalf("install overwrote the operator's policy: %q", b)
	}
	unit, _ := os.ReadFile(filepath.Join(root, "etc/systemd/system/wirken.service"))
	if !strings.Contains(string(unit), "ExecStart=/opt/wirken/bin/wirken run") {
		t.Fatalf("the unit does not name the installed binary:\n%s", unit)
	}
	if !strings.Contains(out.String(), "kept "+filepath.Join(root, "etc/wirken/policy.toml")) {
		t.Fatalf("install did not say it kept the policy:\n%s", out.String())
	}

	out.Reset()
	if err := Install(spec); err != nil {
		t.Fatal(err)
	}
	if strings.Count(out.String(), "kept ") != 2 || !strings.Contains(out.String(), "up to date") {
		t.Fatalf("a second install:\n%s", out.String())
	}
	for _, bad := range []InstallSpec{{Root: "rel", Binary: bin, Files: files}, {Root: root, Prefix: "usr", Binary: bin, Files: files}} {
		if err := Install(bad); err == nil {
			t.Errorf("Install(%+v) accepted a relative path", bad)
		}
	}
}

func TestCreateExclusive(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if ok, err := createExclusive(p, []byte("one"), 0o640); !ok || err != nil {
		t.Fatalf("first create: %v %v", ok, err)
	}
	if ok, err := createExclusive(p, []byte("two"), 0o640); ok || err != nil {
		t.Fatalf("second create: %v %v; want kept", ok, err)
	}
	if b, _ := os.ReadFile(p); string(b) != "one" {
		t.Fatalf("content %q", b)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(p), ".f.tmp-*")); len(left) != 0 {
		t.Fatalf("temp files left: %v", left)
	}
}
