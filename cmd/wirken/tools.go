package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"github.com/wirken/wirken/audit"
	"github.com/wirken/wirken/hostagent"
	"github.com/wirken/wirken/mitm"
)

func cmdPolicy(args []string) error {
	if len(args) > 0 && args[0] == "explain" {
		return policyExplain(args[1:])
	}
	if len(args) == 0 || args[0] != "check" {
		return usageError("policy needs a subcommand: check FILE | explain --agent A [--method M] URL")
	}
	fs := newFlags("policy check")
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError("policy check needs exactly one FILE")
	}
	p, err := loadPolicy(fs.Arg(0))
	if err != nil {
		return err
	}
	fmt.Printf("%s: ok (%d agents)\n", fs.Arg(0), len(p.Agents()))
	return nil
}

// cmdAudit reads the audit log: verify, tail, prove.
func cmdAudit(args []string) error {
	if len(args) == 0 {
		return usageError("audit needs a subcommand: verify | tail | prove")
	}
	switch args[0] {
	case "verify":
		return auditVerify(args[1:])
	case "tail":
		return auditTail(args[1:])
	case "prove":
		return auditProve(args[1:])
	}
	return usageError("audit: unknown subcommand %q (want verify, tail, prove)", args[0])
}

// auditFiles resolves the log (and its retained segments, oldest first) and the verifier key.
type auditFiles struct {
	log, key string
}

func auditFlags(fs *flag.FlagSet) func() (auditFiles, error) {
	config := fs.String("config", defaultConfig(), "daemon configuration `file`")
	logFile := fs.String("log", "", "audit log `file` (default: the config's)")
	keyFile := fs.String("pubkey", "", "verifier key `file` (default: the config's audit.pub)")
	return func() (auditFiles, error) {
		f := auditFiles{log: *logFile, key: *keyFile}
		if f.log == "" || f.key == "" {
			cfg, err := hostagent.LoadConfig(*config)
			if err != nil {
				if f.log == "" {
					return f, err
				}
				return f, nil // a log given alone is verified without a key
			}
			if f.log == "" {
				f.log = cfg.Audit.Log
			}
			if f.key == "" {
				f.key = cfg.Audit.VerifierKey
			}
		}
		return f, nil
	}
}

// verifierKeys reads the verifier key file: every key the log has been signed with.
func (f auditFiles) verifierKeys() ([]string, error) {
	if f.key == "" {
		return nil, nil
	}
	b, err := os.ReadFile(f.key)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading verifier key: %w", err)
	}
	return hostagent.VerifierKeys(b), nil
}

// auditVerify: exit 0 valid, 1 tampered (naming the first bad record), 2 usage or I/O.
func auditVerify(args []string) error {
	fs := newFlags("audit verify")
	files := auditFlags(fs)
	trusted := fs.String("trusted-checkpoint", "", "a checkpoint `file` saved earlier elsewhere: the log must extend it")
	save := fs.String("save-checkpoint", "", "after a successful check, write the latest signed checkpoint to `file` (keep it off the host)")
	noKey := fs.Bool("no-pubkey", false, "verify without a verifier key: the chain and trees only, not who signed the checkpoints")
	if err := parse(fs, args); err != nil {
		return err
	}
	f, err := files()
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	keys, err := f.verifierKeys()
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	if len(keys) == 0 && !*noKey {
		return &exitError{code: 2, err: fmt.Errorf("no verifier key at %s: checkpoint signatures cannot be checked (pass --pubkey, or --no-pubkey to check only the chain and trees)", f.key)}
	}
	var opts []audit.VerifyOption
	for _, k := range keys {
		opts = append(opts, audit.WithVerifierKey(k))
	}
	if *trusted != "" {
		note, err := os.ReadFile(*trusted)
		if err != nil {
			return &exitError{code: 2, err: fmt.Errorf("reading trusted checkpoint: %w", err)}
		}
		opts = append(opts, audit.WithTrustedCheckpoint(note))
	}
	paths, err := audit.SegmentPaths(f.log)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	sum, err := audit.VerifyFiles(paths, opts...)
	if err != nil {
		var ve *audit.VerifyError
		if errors.As(err, &ve) || errors.Is(err, audit.ErrRolledBack) || errors.Is(err, audit.ErrRewritten) {
			return &exitError{code: 1, err: fmt.Errorf("%s: TAMPERED: %v", f.log, err)}
		}
		return &exitError{code: 2, err: fmt.Errorf("%s: %w", f.log, err)}
	}
	fmt.Printf("%s: ok: %d records in %d file(s), %d checkpoints, head %x\n", f.log, sum.Records, len(paths), sum.Checkpoints, sum.Head[:8])
	if *save != "" {
		if len(sum.LastCheckpointNote) == 0 {
			return &exitError{code: 2, err: errors.New("the log has no checkpoint to save yet")}
		}
		if err := os.WriteFile(*save, sum.LastCheckpointNote, 0o644); err != nil {
			return &exitError{code: 2, err: fmt.Errorf("saving checkpoint: %w", err)}
		}
	}
	if len(keys) == 0 {
		fmt.Fprintln(os.Stderr, "wirken: warning: --no-pubkey: checkpoint signatures were not checked")
	}
	if sum.Unsealed > 0 {
		fmt.Fprintf(os.Stderr, "wirken: warning: %d record(s) after the last checkpoint are not yet sealed by a signature\n", sum.Unsealed)
	}
	return nil
}

// auditTail prints records as they are, or follows the log as it grows.
func auditTail(args []string) error {
	fs := newFlags("audit tail")
	files := auditFlags(fs)
	asJSON := fs.Bool("json", false, "print the records as they are stored (JSON lines)")
	follow := fs.Bool("f", false, "keep printing records as they are appended")
	n := fs.Int("n", 20, "start with the last `N` records")
	if err := parse(fs, args); err != nil {
		return err
	}
	f, err := files()
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	from, err := audit.TailOffset(f.log, *n)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	w := bufio.NewWriter(os.Stdout)
	print := func(line []byte) error {
		if *asJSON {
			w.Write(line)
			w.WriteByte('\n')
		} else if rec, err := audit.ParseRecord(line); err == nil {
			fmt.Fprintln(w, formatRecord(rec))
		} else {
			fmt.Fprintf(w, "unreadable record: %v\n", err)
		}
		if *follow {
			return w.Flush()
		}
		return nil
	}
	if *follow {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		err = audit.Follow(ctx, f.log, from, print)
		if errors.Is(err, context.Canceled) {
			err = nil
		}
	} else {
		_, err = audit.ReadLines(f.log, from, print)
	}
	if ferr := w.Flush(); err == nil {
		err = ferr
	}
	return err
}

// formatRecord is one line a person reads: seq, time, type, then what is set.
func formatRecord(r audit.LogRecord) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%6d %s %-18s", r.Seq, r.Time.Local().Format("2006-01-02 15:04:05.000"), r.Record.Type)
	for _, kv := range []struct{ k, v string }{
		{"agent", r.Record.Agent}, {"decision", r.Record.Decision}, {"rule", r.Record.Rule},
		{"credential", r.Record.Credential}, {"method", r.Record.Method}, {"host", r.Record.Host},
		{"path", r.Record.Path}, {"dst", r.Record.Dst}, {"reason", r.Record.Reason},
	} {
		if kv.v != "" {
			fmt.Fprintf(&b, " %s=%s", kv.k, strconv.Quote(kv.v))
		}
	}
	if r.Record.Status != 0 {
		fmt.Fprintf(&b, " status=%d", r.Record.Status)
	}
	return b.String()
}

// auditProve prints an inclusion proof of one record in a signed checkpoint, or checks one.
func auditProve(args []string) error {
	fs := newFlags("audit prove")
	files := auditFlags(fs)
	seq := fs.Int64("seq", -1, "the record's `seq`")
	checkFile := fs.String("check", "", "check a proof `file` printed earlier instead of making one")
	if err := parse(fs, args); err != nil {
		return err
	}
	f, err := files()
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	keys, err := f.verifierKeys()
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	if len(keys) == 0 {
		return &exitError{code: 2, err: fmt.Errorf("no verifier key at %s: proofs are checked against it", f.key)}
	}
	check := func(p audit.Proof) error {
		var errs []error
		for _, k := range keys {
			err := audit.CheckProof(p, k)
			if err == nil {
				return nil
			}
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	}
	if *checkFile != "" {
		text, err := os.ReadFile(*checkFile)
		if err != nil {
			return &exitError{code: 2, err: err}
		}
		var p audit.Proof
		if err := p.UnmarshalText(text); err != nil {
			return &exitError{code: 1, err: fmt.Errorf("%s: %w", *checkFile, err)}
		}
		if err := check(p); err != nil {
			return &exitError{code: 1, err: fmt.Errorf("%s: proof does not hold: %w", *checkFile, err)}
		}
		fmt.Printf("%s: ok: record %d is in the signed log\n", *checkFile, p.Seq)
		return nil
	}
	if *seq < 0 {
		return usageError("audit prove needs --seq N (or --check FILE)")
	}
	paths, err := audit.SegmentPaths(f.log)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	p, err := audit.ProveFiles(paths, uint64(*seq))
	if err != nil {
		return &exitError{code: 1, err: err}
	}
	if err := check(p); err != nil {
		return &exitError{code: 1, err: fmt.Errorf("the log's own proof does not hold: %w", err)}
	}
	text, err := p.MarshalText()
	if err != nil {
		return err
	}
	_, err = os.Stdout.Write(text)
	return err
}

func cmdCA(args []string) error {
	if len(args) > 0 && args[0] == "show" {
		return caShow(args[1:])
	}
	if len(args) > 0 && args[0] == "install" {
		return caInstall(args[1:])
	}
	if len(args) == 0 || args[0] != "init" {
		return usageError("ca needs a subcommand: init | show | install")
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
