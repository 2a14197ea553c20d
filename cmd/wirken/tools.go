package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/wirken/wirken/audit"
	"github.com/wirken/wirken/hostagent"
	"github.com/wirken/wirken/mitm"
	"github.com/wirken/wirken/policy"
	"github.com/wirken/wirken/vault"
)

func cmdVault(args []string) error {
	if len(args) == 0 {
		return usageError("vault needs a subcommand: init, put NAME, list")
	}
	switch args[0] {
	case "init":
		return vaultInit(args[1:])
	case "put":
		return vaultPut(args[1:])
	case "list":
		return vaultList(args[1:])
	}
	return usageError("vault: unknown subcommand %q (want init, put, list)", args[0])
}

// vaultInit creates the aead seal key file and an empty vault.
func vaultInit(args []string) error {
	fs := newFlags("vault init")
	config := fs.String("config", defaultConfig(), "daemon configuration `file`")
	ifMissing := fs.Bool("if-missing", false, "do nothing if the vault and its key file already exist")
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg, err := hostagent.LoadConfig(*config)
	if err != nil {
		return err
	}
	if *ifMissing && exists(cfg.Vault.File) && exists(cfg.Vault.KeyFile) {
		fmt.Printf("vault %s exists; keeping it\n", cfg.Vault.File)
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(cfg.Vault.File), 0o711); err != nil {
		return fmt.Errorf("creating vault dir: %w", err)
	}
	if err := vault.CreateAEADKeyFile(cfg.Vault.KeyFile); err != nil {
		return err
	}
	ctx := context.Background()
	seal, err := vault.AEADSeal(ctx, cfg.Vault.KeyFile)
	if err != nil {
		return err
	}
	if err := vault.Create(ctx, cfg.Vault.File, seal); err != nil {
		return err
	}
	fmt.Printf("created vault %s sealed by key file %s\n", cfg.Vault.File, cfg.Vault.KeyFile)
	return nil
}

// openVault unseals the configured vault for a CLI command.
func openVault(ctx context.Context, config string) (*vault.Vault, error) {
	cfg, err := hostagent.LoadConfig(config)
	if err != nil {
		return nil, err
	}
	seal, err := vault.AEADSeal(ctx, cfg.Vault.KeyFile)
	if err != nil {
		return nil, err
	}
	return vault.Open(ctx, cfg.Vault.File, seal)
}

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// vaultPut stores a secret read from stdin or a file, never from the command line.
func vaultPut(args []string) error {
	fs := newFlags("vault put")
	config := fs.String("config", defaultConfig(), "daemon configuration `file`")
	from := fs.String("file", "", "read the value from this `file` instead of stdin")
	var hosts stringList
	fs.Var(&hosts, "host", "bind the secret to this `host` (repeatable; exact or *.suffix); none = any host the policy names")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError("vault put needs exactly one NAME; the value is read from stdin (or --file), never from the command line")
	}
	value, err := readValue(*from)
	if err != nil {
		return err
	}
	defer clear(value)
	ctx := context.Background()
	v, err := openVault(ctx, *config)
	if err != nil {
		return err
	}
	defer v.Close()
	ver, err := v.Put(ctx, fs.Arg(0), value, vault.Binding{Hosts: hosts})
	if err != nil {
		return err
	}
	fmt.Printf("stored %s version %d (vault generation %d)\n", fs.Arg(0), ver, v.Generation())
	return nil
}

// readValue reads a secret value; one trailing newline (from echo or a here-doc) is dropped.
func readValue(file string) ([]byte, error) {
	var r io.Reader = os.Stdin
	name := "stdin"
	if file != "" {
		f, err := os.Open(file)
		if err != nil {
			return nil, fmt.Errorf("reading secret value: %w", err)
		}
		defer f.Close()
		r, name = f, file
	} else if isTerminal(os.Stdin) {
		fmt.Fprintln(os.Stderr, "reading the secret value from stdin (end with Ctrl-D)")
	}
	b, err := io.ReadAll(io.LimitReader(r, 1<<20+1))
	if err != nil {
		return nil, fmt.Errorf("reading secret value from %s: %w", name, err)
	}
	if len(b) > 1<<20 {
		clear(b)
		return nil, fmt.Errorf("secret value from %s is larger than 1 MiB", name)
	}
	b = bytes.TrimSuffix(b, []byte("\n"))
	b = bytes.TrimSuffix(b, []byte("\r"))
	if len(b) == 0 {
		return nil, fmt.Errorf("secret value from %s is empty", name)
	}
	return b, nil
}

func vaultList(args []string) error {
	fs := newFlags("vault list")
	config := fs.String("config", defaultConfig(), "daemon configuration `file`")
	if err := parse(fs, args); err != nil {
		return err
	}
	v, err := openVault(context.Background(), *config)
	if err != nil {
		return err
	}
	defer v.Close()
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tVERSION\tHOSTS\tCREATED")
	for _, s := range v.List() {
		hosts := strings.Join(s.Hosts, ",")
		if hosts == "" {
			hosts = "*"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", s.Name, s.Version, hosts, s.Created.Format(time.RFC3339))
	}
	return tw.Flush()
}

func cmdPolicy(args []string) error {
	if len(args) == 0 || args[0] != "check" {
		return usageError("policy needs a subcommand: check FILE")
	}
	fs := newFlags("policy check")
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError("policy check needs exactly one FILE")
	}
	p, err := policy.Load(fs.Arg(0))
	if err != nil {
		var errs policy.Errors
		if errors.As(err, &errs) {
			for _, e := range errs {
				fmt.Fprintln(os.Stderr, e)
			}
			return &exitError{code: 1, err: fmt.Errorf("%s: %d error(s)", fs.Arg(0), len(errs))}
		}
		return err
	}
	fmt.Printf("%s: ok (%d agents)\n", fs.Arg(0), len(p.Agents()))
	return nil
}

// cmdAudit verifies the log: exit 0 valid, 1 tampered (naming the first bad record), 2 usage or I/O.
func cmdAudit(args []string) error {
	if len(args) == 0 || args[0] != "verify" {
		return usageError("audit needs a subcommand: verify [--log FILE]")
	}
	fs := newFlags("audit verify")
	config := fs.String("config", defaultConfig(), "daemon configuration `file`")
	logFile := fs.String("log", "", "audit log `file` (default: the config's)")
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	path := *logFile
	if path == "" {
		cfg, err := hostagent.LoadConfig(*config)
		if err != nil {
			return &exitError{code: 2, err: err}
		}
		path = cfg.Audit.Log
	}
	f, err := os.Open(path)
	if err != nil {
		return &exitError{code: 2, err: fmt.Errorf("opening audit log: %w", err)}
	}
	defer f.Close()
	sum, err := audit.Verify(bufio.NewReaderSize(f, 1<<20))
	if err != nil {
		var ve *audit.VerifyError
		if errors.As(err, &ve) {
			return &exitError{code: 1, err: fmt.Errorf("%s: TAMPERED: %v", path, ve)}
		}
		return &exitError{code: 2, err: fmt.Errorf("%s: %w", path, err)}
	}
	fmt.Printf("%s: ok: %d records, head %x\n", path, sum.Records, sum.Head[:8])
	return nil
}

func cmdCA(args []string) error {
	if len(args) == 0 || args[0] != "init" {
		return usageError("ca needs a subcommand: init")
	}
	fs := newFlags("ca init")
	config := fs.String("config", defaultConfig(), "daemon configuration `file`")
	ifMissing := fs.Bool("if-missing", false, "do nothing if the CA certificate and key already exist")
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	cfg, err := hostagent.LoadConfig(*config)
	if err != nil {
		return err
	}
	if *ifMissing && exists(cfg.CA.Cert) && exists(cfg.CA.Key) {
		fmt.Printf("CA %s exists; keeping it\n", cfg.CA.Cert)
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(cfg.CA.Key), 0o711); err != nil {
		return fmt.Errorf("creating CA dir: %w", err)
	}
	host, _ := os.Hostname()
	if err := mitm.GenerateCA(cfg.CA.Cert, cfg.CA.Key, "wirken CA "+host); err != nil {
		return err
	}
	fmt.Printf("created CA %s (key %s, mode 0600)\n", cfg.CA.Cert, cfg.CA.Key)
	return nil
}

func cmdVersion(args []string) error {
	fmt.Printf("wirken %s %s %s/%s\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
