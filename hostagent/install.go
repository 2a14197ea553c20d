package hostagent

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// The installed layout, as seen on the target host (below InstallSpec.Root).
const (
	ConfigDir     = "/etc/wirken"
	UnitPath      = "/etc/systemd/system/wirken.service"
	DefaultState  = "/var/lib/wirken"
	DefaultPrefix = "/usr/local"
	// TrustAnchor is where `wirken ca install` puts the CA for update-ca-certificates.
	TrustAnchor = "/usr/local/share/ca-certificates/wirken.crt"
	// unitBinary is the binary path written in configs/wirken.service; Install replaces it.
	unitBinary = "/usr/local/bin/wirken"
)

// InstallSpec says what `wirken install` lays out, and where.
type InstallSpec struct {
	Root   string    // DESTDIR: every path below is created under it; "/" (or "") for the host
	Prefix string    // the binary goes to <Prefix>/bin/wirken; default /usr/local
	Binary string    // the binary to install (normally the running one)
	Files  fs.FS     // wirken.toml, policy.toml and wirken.service (configs/)
	Out    io.Writer // one line per thing done
}

// BinaryPath is where the binary goes on the target host (without Root).
func (s InstallSpec) BinaryPath() string {
	p := s.Prefix
	if p == "" {
		p = DefaultPrefix
	}
	return filepath.Join(p, "bin", "wirken")
}

// under maps a target-host path into the install root.
func under(root, p string) string {
	if root == "" || root == "/" {
		return p
	}
	if rel, err := filepath.Rel(root, p); err == nil && !strings.HasPrefix(rel, "..") {
		return p // already below the root (a config with relative paths)
	}
	return filepath.Join(root, p)
}

// Install puts the binary, the configuration (never overwriting a file that exists), the state
// directory and the systemd unit in place. It is idempotent: a second run replaces the binary
// and the unit and keeps everything else.
func Install(spec InstallSpec) error {
	if spec.Out == nil {
		spec.Out = io.Discard
	}
	if spec.Root != "" && !filepath.IsAbs(spec.Root) {
		return fmt.Errorf("install root %q: must be an absolute path", spec.Root)
	}
	if spec.Prefix != "" && !filepath.IsAbs(spec.Prefix) {
		return fmt.Errorf("install prefix %q: must be an absolute path", spec.Prefix)
	}
	unit, err := fs.ReadFile(spec.Files, "wirken.service")
	if err != nil {
		return fmt.Errorf("reading the embedded unit: %w", err)
	}
	if !bytes.Contains(unit, []byte(unitBinary)) {
		return fmt.Errorf("the embedded unit does not name %s", unitBinary)
	}
	bin, err := os.ReadFile(spec.Binary)
	if err != nil {
		return fmt.Errorf("reading the binary to install: %w", err)
	}

	binPath := under(spec.Root, spec.BinaryPath())
	if err := os.MkdirAll(filepath.Dir(binPath), 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", filepath.Dir(binPath), err)
	}
	if err := writeFileAtomic(binPath, bin, 0o755); err != nil {
		return err
	}
	fmt.Fprintf(spec.Out, "installed %s\n", binPath)

	confDir := under(spec.Root, ConfigDir)
	if err := os.MkdirAll(confDir, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", confDir, err)
	}
	for _, name := range []string{"wirken.toml", "policy.toml"} {
		data, err := fs.ReadFile(spec.Files, name)
		if err != nil {
			return fmt.Errorf("reading the embedded %s: %w", name, err)
		}
		path := filepath.Join(confDir, name)
		created, err := createExclusive(path, data, 0o644)
		if err != nil {
			return err
		}
		if created {
			fmt.Fprintf(spec.Out, "created %s\n", path)
		} else {
			fmt.Fprintf(spec.Out, "kept %s: it exists and is never overwritten\n", path)
		}
	}

	state := under(spec.Root, DefaultState)
	if err := os.MkdirAll(filepath.Dir(state), 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", filepath.Dir(state), err)
	}
	if err := os.Mkdir(state, 0o711); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("creating %s: %w", state, err)
	}
	// 0711: agents may reach the public CA bundle in it by name; every other file is 0600.
	if err := os.Chmod(state, 0o711); err != nil {
		return fmt.Errorf("securing %s: %w", state, err)
	}
	fmt.Fprintf(spec.Out, "state directory %s (mode 0711)\n", state)

	unit = bytes.ReplaceAll(unit, []byte(unitBinary), []byte(spec.BinaryPath()))
	unitPath := under(spec.Root, UnitPath)
	if err := os.MkdirAll(filepath.Dir(unitPath), 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", filepath.Dir(unitPath), err)
	}
	old, _ := os.ReadFile(unitPath)
	if !bytes.Equal(old, unit) {
		if err := writeFileAtomic(unitPath, unit, 0o644); err != nil {
			return err
		}
		if old == nil {
			fmt.Fprintf(spec.Out, "installed %s\n", unitPath)
		} else {
			fmt.Fprintf(spec.Out, "updated %s (local changes belong in a drop-in: systemctl edit wirken)\n", unitPath)
		}
		daemonReload(spec.Root, spec.Out)
	} else {
		fmt.Fprintf(spec.Out, "%s is up to date\n", unitPath)
	}
	return nil
}

// createExclusive writes data to a new file at path, or does nothing if path exists. The file
// appears whole or not at all.
func createExclusive(path string, data []byte, mode os.FileMode) (bool, error) {
	if _, err := os.Lstat(path); err == nil {
		return false, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return false, fmt.Errorf("checking %s: %w", path, err)
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return false, fmt.Errorf("writing %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(mode)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return false, fmt.Errorf("writing %s: %w", path, err)
	}
	// link(2) fails if path appeared meanwhile: an existing file is never replaced.
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, os.ErrExist) {
			return false, nil
		}
		return false, fmt.Errorf("creating %s: %w", path, err)
	}
	return true, nil
}

// systemdRunning reports whether this host runs systemd as PID 1 and the install is the host's.
func systemdRunning(root string) bool {
	if root != "" && root != "/" {
		return false
	}
	_, err := os.Stat("/run/systemd/system")
	return err == nil
}

// daemonReload tells systemd about a changed unit file, when the install is this host's and
// systemd runs it.
func daemonReload(root string, out io.Writer) {
	if !systemdRunning(root) {
		return
	}
	if b, err := exec.Command("systemctl", "daemon-reload").CombinedOutput(); err != nil {
		fmt.Fprintf(out, "systemctl daemon-reload: %v: %s\n", err, strings.TrimSpace(string(b)))
		return
	}
	fmt.Fprintln(out, "systemctl daemon-reload: done")
}
