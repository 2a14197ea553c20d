package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/wirken/wirken/hostagent"
	"github.com/wirken/wirken/vault"
)

const vaultUsage = "init | put NAME | list | show NAME | rm NAME | rotate keyring|root | rewrap [--remove ID] | status"

func cmdVault(args []string) error {
	if len(args) == 0 {
		return usageError("vault needs a subcommand: %s", vaultUsage)
	}
	sub, ok := map[string]func([]string) error{
		"init": vaultInit, "put": vaultPut, "list": vaultList, "show": vaultShow, "rm": vaultRemove,
		"rotate": vaultRotate, "rewrap": vaultRewrap, "status": vaultStatus,
	}[args[0]]
	if !ok {
		return usageError("vault: unknown subcommand %q (want %s)", args[0], vaultUsage)
	}
	return sub(args[1:])
}

// vaultSession is an unsealed vault for one CLI command.
type vaultSession struct {
	cfg  *hostagent.Config
	v    *vault.Vault
	seal vault.Seal
}

func (s *vaultSession) close() {
	s.v.Close()
	_ = vault.FinalizeSeal(context.Background(), s.seal)
}

// openVault parses the flags (config plus extra ones the caller registered) and unseals.
func openVault(ctx context.Context, fs *flag.FlagSet, config *string, args []string, nargs int, usage string) (*vaultSession, error) {
	if err := parse(fs, args); err != nil {
		return nil, err
	}
	if fs.NArg() != nargs {
		return nil, usageError("%s", usage)
	}
	return unseal(ctx, *config)
}

// unseal opens the configured vault with the first configured seal that can.
func unseal(ctx context.Context, config string) (*vaultSession, error) {
	cfg, err := hostagent.LoadConfig(config)
	if err != nil {
		return nil, err
	}
	v, seal, err := hostagent.OpenVault(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return &vaultSession{cfg: cfg, v: v, seal: seal}, nil
}

// vaultInit creates an empty vault sealed by the first configured seal (creating an aead key
// file if that seal is aead and has none), and publishes the audit verifier key.
func vaultInit(args []string) error {
	fs := newFlags("vault init")
	config := fs.String("config", defaultConfig(), "daemon configuration `file`")
	ifMissing := fs.Bool("if-missing", false, "do nothing if the vault already exists")
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg, err := hostagent.LoadConfig(*config)
	if err != nil {
		return err
	}
	if exists(cfg.Vault.File) {
		if *ifMissing {
			fmt.Printf("vault %s exists; keeping it\n", cfg.Vault.File)
			return nil
		}
		return fmt.Errorf("vault %s already exists", cfg.Vault.File)
	}
	if err := os.MkdirAll(filepath.Dir(cfg.Vault.File), 0o711); err != nil {
		return fmt.Errorf("creating vault dir: %w", err)
	}
	first := cfg.Seals()[0]
	if kf := first.Options["key_file"]; first.Type == "aead" && !exists(kf) {
		if err := vault.CreateAEADKeyFile(kf); err != nil {
			return err
		}
		fmt.Printf("created seal key file %s (0600)\n", kf)
	}
	ctx := context.Background()
	seal, err := vault.NewSeal(ctx, first)
	if err != nil {
		return err
	}
	defer vault.FinalizeSeal(ctx, seal)
	if err := vault.Create(ctx, cfg.Vault.File, seal); err != nil {
		return err
	}
	fmt.Printf("created vault %s sealed by %s\n", cfg.Vault.File, first.Type)
	v, err := vault.Open(ctx, cfg.Vault.File, seal)
	if err != nil {
		return err
	}
	defer v.Close()
	return publishAuditKey(v, cfg)
}

// publishAuditKey lists the vault's audit verifier key in the public key file.
func publishAuditKey(v *vault.Vault, cfg *hostagent.Config) error {
	signer, err := hostagent.AuditSigner(v, cfg)
	if err != nil {
		return err
	}
	added, err := hostagent.PublishVerifierKey(cfg, signer)
	if err != nil {
		return err
	}
	if added {
		fmt.Printf("audit verifier key added to %s: %s (keep a copy off this host)\n", cfg.Audit.VerifierKey, signer.VerifierKey())
	}
	return nil
}

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// vaultPut stores a secret (or a new version of it) read from stdin or a file, never from the
// command line. A running daemon picks it up by itself.
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
	s, err := unseal(ctx, *config)
	if err != nil {
		return err
	}
	defer s.close()
	ver, err := s.v.Put(ctx, fs.Arg(0), value, vault.Binding{Hosts: hosts})
	if err != nil {
		return err
	}
	fmt.Printf("stored %s version %d (vault generation %d)\n", fs.Arg(0), ver, s.v.Generation())
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
	s, err := openVault(context.Background(), fs, config, args, 0, "vault list takes no arguments")
	if err != nil {
		return err
	}
	defer s.close()
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tVERSION\tHOSTS\tCREATED")
	for _, i := range s.v.List() {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", i.Name, i.Version, hostList(i.Hosts), i.Created.Format(time.RFC3339))
	}
	return tw.Flush()
}

func hostList(h []string) string {
	if len(h) == 0 {
		return "*"
	}
	return strings.Join(h, ",")
}

// vaultShow prints a secret's metadata; never its value.
func vaultShow(args []string) error {
	fs := newFlags("vault show")
	config := fs.String("config", defaultConfig(), "daemon configuration `file`")
	s, err := openVault(context.Background(), fs, config, args, 1, "vault show needs exactly one NAME")
	if err != nil {
		return err
	}
	defer s.close()
	d, err := s.v.Show(fs.Arg(0))
	if err != nil {
		return err
	}
	fmt.Printf("name:      %s\ncurrent:   version %d (keyring term %d)\nhosts:     %s\n", d.Name, d.Version, d.Term, hostList(d.Hosts))
	for _, ver := range d.Versions {
		fmt.Printf("version %d: created %s, hosts %s\n", ver.Version, ver.Created.Format(time.RFC3339), hostList(ver.Hosts))
	}
	return nil
}

func vaultRemove(args []string) error {
	fs := newFlags("vault rm")
	config := fs.String("config", defaultConfig(), "daemon configuration `file`")
	ctx := context.Background()
	s, err := openVault(ctx, fs, config, args, 1, "vault rm needs exactly one NAME")
	if err != nil {
		return err
	}
	defer s.close()
	if err := s.v.Remove(ctx, fs.Arg(0)); err != nil {
		return err
	}
	fmt.Printf("removed %s (vault generation %d)\n", fs.Arg(0), s.v.Generation())
	return nil
}

// vaultRotate rotates the keyring (a new term for new data keys; existing data keys are
// rewrapped) or the root key (re-wrapped under every configured seal). A new secret value is
// rotated with `vault put`.
func vaultRotate(args []string) error {
	fs := newFlags("vault rotate")
	config := fs.String("config", defaultConfig(), "daemon configuration `file`")
	ctx := context.Background()
	s, err := openVault(ctx, fs, config, args, 1, "vault rotate needs keyring or root (a secret's value is rotated with vault put)")
	if err != nil {
		return err
	}
	defer s.close()
	switch fs.Arg(0) {
	case "keyring":
		term, err := s.v.RotateKeyring(ctx)
		if err != nil {
			return err
		}
		fmt.Printf("keyring rotated to term %d (vault generation %d)\n", term, s.v.Generation())
		return nil
	case "root":
		seals, done, err := configuredSeals(ctx, s.cfg)
		if err != nil {
			return err
		}
		defer done()
		if err := s.v.RotateRoot(ctx, seals...); err != nil {
			return err
		}
		fmt.Printf("root key rotated and wrapped by %d seal(s) (vault generation %d)\n", len(seals), s.v.Generation())
		// The audit signing key derives from the root: publish the new verifier key too.
		return publishAuditKey(s.v, s.cfg)
	}
	return usageError("vault rotate: %q is not keyring or root", fs.Arg(0))
}

// configuredSeals builds every configured seal; done releases them.
func configuredSeals(ctx context.Context, cfg *hostagent.Config) ([]vault.Seal, func(), error) {
	var seals []vault.Seal
	done := func() {
		for _, s := range seals {
			_ = vault.FinalizeSeal(ctx, s)
		}
	}
	for i, sc := range cfg.Seals() {
		s, err := vault.NewSeal(ctx, sc)
		if err != nil {
			done()
			return nil, nil, fmt.Errorf("seal %d (%s): %w", i, sc.Type, err)
		}
		seals = append(seals, s)
	}
	return seals, done, nil
}

// vaultRewrap wraps the root key with every configured seal the file has no entry for, and
// drops the entries named by --remove, without re-encrypting any secret: add the new seal to
// the configuration, rewrap with --remove of the old entry, then drop it from the configuration.
func vaultRewrap(args []string) error {
	fs := newFlags("vault rewrap")
	config := fs.String("config", defaultConfig(), "daemon configuration `file`")
	var remove stringList
	fs.Var(&remove, "remove", "drop the seal entry with this `ID` (see vault status; repeatable)")
	ctx := context.Background()
	s, err := openVault(ctx, fs, config, args, 0, "vault rewrap takes no arguments")
	if err != nil {
		return err
	}
	defer s.close()
	seals, done, err := configuredSeals(ctx, s.cfg)
	if err != nil {
		return err
	}
	defer done()
	added := 0
	for i, seal := range seals {
		typ, _ := seal.Type(ctx)
		kid, err := seal.KeyId(ctx)
		if err != nil {
			return fmt.Errorf("seal %d: %w", i, err)
		}
		known := false
		for _, e := range s.v.SealEntries() {
			known = known || (e.Type == string(typ) && e.KeyID == kid)
		}
		if known {
			continue
		}
		if err := s.v.Rewrap(ctx, seal, nil); err != nil {
			return fmt.Errorf("adding seal %d (%s): %w", i, typ, err)
		}
		added++
	}
	if len(remove) > 0 {
		if err := s.v.Rewrap(ctx, nil, remove); err != nil {
			return err
		}
	}
	if added == 0 && len(remove) == 0 {
		return errors.New("nothing to do: every configured seal already has an entry and no --remove was given")
	}
	fmt.Printf("added %d seal entr(ies), removed %d (vault generation %d)\n", added, len(remove), s.v.Generation())
	return printSeals(s.v)
}

func vaultStatus(args []string) error {
	fs := newFlags("vault status")
	config := fs.String("config", defaultConfig(), "daemon configuration `file`")
	s, err := openVault(context.Background(), fs, config, args, 0, "vault status takes no arguments")
	if err != nil {
		return err
	}
	defer s.close()
	st, err := s.v.Status()
	if err != nil {
		return err
	}
	fmt.Printf("vault:      %s (id %s)\ngeneration: %d\nkeyring:    %d term(s), current %d\nsecrets:    %d (%d versions)\n",
		st.Path, st.VaultID, st.Generation, st.Terms, st.Term, st.Secrets, st.Versions)
	return printSeals(s.v)
}

func printSeals(v *vault.Vault) error {
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEAL\tTYPE\tKEY\tHINT")
	for _, e := range v.SealEntries() {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", e.ID, e.Type, e.KeyID, e.Hint)
	}
	return tw.Flush()
}
