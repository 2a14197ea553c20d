package main

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/wirken/wirken/configs"
	"github.com/wirken/wirken/hostagent"
)

func cmdInstall(args []string) error {
	fs := newFlags("install")
	root := fs.String("root", "/", "install below this `dir` (DESTDIR), for packaging and tests")
	prefix := fs.String("prefix", hostagent.DefaultPrefix, "the binary goes to `prefix`/bin/wirken")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError("install takes no arguments")
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding the running binary: %w", err)
	}
	spec := hostagent.InstallSpec{Root: *root, Prefix: *prefix, Binary: self, Files: configs.Files, Out: os.Stdout}
	if err := hostagent.Install(spec); err != nil {
		return err
	}
	fmt.Printf(`
next steps:
  edit %s (agents, credentials, rules); check it with: wirken policy check %s
  systemctl enable --now wirken   # the first start creates the vault and the CA
  %s vault put --host api.example.com NAME < secret-file
  %s exec --agent NAME -- CMD...
`, filepath.Join(hostagent.ConfigDir, "policy.toml"), filepath.Join(hostagent.ConfigDir, "policy.toml"), spec.BinaryPath(), spec.BinaryPath())
	return nil
}

func cmdUninstall(args []string) error {
	fs := newFlags("uninstall")
	root := fs.String("root", "/", "the `dir` install was given (DESTDIR)")
	prefix := fs.String("prefix", hostagent.DefaultPrefix, "the prefix install was given")
	config := fs.String("config", "", "daemon configuration `file` (default: <root>/etc/wirken/wirken.toml)")
	force := fs.Bool("force", false, "kill agents' processes instead of refusing (without the programs they would be unsteered)")
	purge := fs.Bool("purge", false, "also remove /etc/wirken, the vault, its key, the CA and the audit log")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError("uninstall takes no arguments")
	}
	path := *config
	if path == "" {
		path = filepath.Join(*root, hostagent.ConfigDir, "wirken.toml")
	}
	cfg, err := hostagent.LoadConfig(path)
	if errors.Is(err, os.ErrNotExist) && *config == "" {
		// No configuration left: the defaults say where everything is.
		cfg, err = hostagent.ParseConfig(path, nil)
	}
	if err != nil {
		return err
	}
	return hostagent.Uninstall(hostagent.UninstallSpec{Root: *root, Prefix: *prefix, Config: cfg, Force: *force, Purge: *purge, Out: os.Stdout})
}

// readCA reads and parses the configured CA certificate.
func readCA(config string) ([]byte, *x509.Certificate, error) {
	cfg, err := hostagent.LoadConfig(config)
	if err != nil {
		return nil, nil, err
	}
	b, err := os.ReadFile(cfg.CA.Cert)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the CA certificate (run `wirken ca init`): %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, nil, fmt.Errorf("%s: no PEM certificate", cfg.CA.Cert)
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", cfg.CA.Cert, err)
	}
	return pem.EncodeToMemory(blk), cert, nil
}

// caShow prints the CA certificate (never its key) with its fingerprint and validity.
func caShow(args []string) error {
	fs := newFlags("ca show")
	config := fs.String("config", defaultConfig(), "daemon configuration `file`")
	if err := parse(fs, args); err != nil {
		return err
	}
	p, cert, err := readCA(*config)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(cert.Raw)
	hexs := make([]string, len(sum))
	for i, b := range sum {
		hexs[i] = fmt.Sprintf("%02X", b)
	}
	fmt.Printf("subject:     %s\n", cert.Subject)
	fmt.Printf("sha256:      %s\n", strings.Join(hexs, ":"))
	fmt.Printf("not before:  %s\n", cert.NotBefore.UTC().Format("2006-01-02 15:04:05 MST"))
	fmt.Printf("not after:   %s\n", cert.NotAfter.UTC().Format("2006-01-02 15:04:05 MST"))
	os.Stdout.Write(p)
	return nil
}

// caInstall adds the CA to the system trust store.
func caInstall(args []string) error {
	fs := newFlags("ca install")
	config := fs.String("config", defaultConfig(), "daemon configuration `file`")
	root := fs.String("root", "/", "install below this `dir` (tests, images)")
	if err := parse(fs, args); err != nil {
		return err
	}
	p, _, err := readCA(*config)
	if err != nil {
		return err
	}
	return hostagent.InstallCATrust(*root, p, os.Stdout)
}
