package hostagent

import (
	"fmt"
	"os"
	"path/filepath"
)

// systemBundles are where Debian, Fedora and Alpine keep their root bundle.
var systemBundles = []string{
	"/etc/ssl/certs/ca-certificates.crt",
	"/etc/pki/tls/certs/ca-bundle.crt",
	"/etc/ssl/cert.pem",
}

// writeCABundle writes the bundle agents trust: the system roots (for passthrough hosts) plus
// the wirken CA. It is public (0644) and replaced atomically. A copy goes into certDir (0755),
// for runtimes that read a directory (SSL_CERT_DIR): Go reads every file there; OpenSSL looks
// there only by subject hash and finds everything through SSL_CERT_FILE instead.
func writeCABundle(path, certDir string, caPEM []byte) error {
	var bundle []byte
	for _, f := range systemBundles {
		if b, err := os.ReadFile(f); err == nil {
			bundle = append(b, '\n')
			break
		}
	}
	bundle = append(bundle, caPEM...)
	if err := writeFileAtomic(path, bundle, 0o644); err != nil {
		return err
	}
	if err := os.MkdirAll(certDir, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", certDir, err)
	}
	if err := os.Chmod(certDir, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", certDir, err)
	}
	return writeFileAtomic(filepath.Join(certDir, filepath.Base(path)), bundle, 0o644)
}

// writeFileAtomic leaves either the old or the new file, never a mix.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("syncing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("replacing %s: %w", path, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	return nil
}
