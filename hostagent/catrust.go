package hostagent

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// InstallCATrust puts the wirken CA into the system trust store (Debian's
// update-ca-certificates): the certificate goes to TrustAnchor under root, then the store is
// rebuilt. Processes outside `wirken exec` then trust the interception too.
func InstallCATrust(root string, caPEM []byte, out io.Writer) error {
	anchor := under(root, TrustAnchor)
	if err := os.MkdirAll(filepath.Dir(anchor), 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", filepath.Dir(anchor), err)
	}
	if err := writeFileAtomic(anchor, caPEM, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(out, "installed %s\n", anchor)
	return UpdateCATrust(root, out)
}

// UpdateCATrust runs update-ca-certificates; below an install root other than "/" it is
// pointed at the root's directories.
func UpdateCATrust(root string, out io.Writer) error {
	var args []string
	if root != "" && root != "/" {
		conf := filepath.Join(root, "etc/ca-certificates.conf")
		dirs := map[string]string{
			"--certsdir":      filepath.Join(root, "usr/share/ca-certificates"),
			"--localcertsdir": filepath.Join(root, "usr/local/share/ca-certificates"),
			"--etccertsdir":   filepath.Join(root, "etc/ssl/certs"),
			"--hooksdir":      filepath.Join(root, "etc/ca-certificates/update.d"),
		}
		for flag, d := range dirs {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return fmt.Errorf("creating %s: %w", d, err)
			}
			args = append(args, flag, d)
		}
		if _, err := createExclusive(conf, nil, 0o644); err != nil {
			return err
		}
		args = append(args, "--certsconf", conf)
	}
	cmd := exec.Command("update-ca-certificates", args...)
	b, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("running update-ca-certificates (Debian's ca-certificates package): %w: %s", err, strings.TrimSpace(string(b)))
	}
	fmt.Fprintf(out, "update-ca-certificates: %s\n", strings.Join(strings.Fields(string(b)), " "))
	return nil
}
