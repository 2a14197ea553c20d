// Command wirken is the CLI and daemon of wirken: flag parsing, wiring and the OTel SDK setup.
// Everything else lives in the packages it calls.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// exitError carries an exit code other than 1 up to main.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}
func (e *exitError) Unwrap() error { return e.err }

type command struct {
	summary string
	run     func(args []string) error
}

var commands map[string]command

func init() {
	commands = map[string]command{
		"run":       {"run the daemon in the foreground", cmdRun},
		"exec":      {"run a command as an agent: exec --agent NAME [--user U] -- CMD...", cmdExec},
		"vault":     {"manage the vault: " + vaultUsage, cmdVault},
		"policy":    {"check or explain a policy: policy check FILE | explain [--policy FILE] --agent A [--method M] URL", cmdPolicy},
		"audit":     {"read the audit log: audit verify [--trusted-checkpoint F] | tail [-f] [--json] | prove --seq N", cmdAudit},
		"ca":        {"the interception CA: ca init | show | install [--root DIR]", cmdCA},
		"status":    {"the running daemon: agents, processes, connections, counters, generations [--json]", cmdStatus},
		"agents":    {"the running daemon's agents as a table [--json]", cmdAgents},
		"reload":    {"ask the running daemon to reload its policy", cmdReload},
		"version":   {"print the version", cmdVersion},
		"doctor":    {"check this host can run wirken: " + doctorUsage, cmdDoctor},
		"install":   {"install the binary, /etc/wirken, /var/lib/wirken and the systemd unit: install [--prefix P] [--root DIR]", cmdInstall},
		"uninstall": {"detach the programs, remove cgroups, unit and binary: uninstall [--force] [--purge]", cmdUninstall},
	}
}

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

func run(args []string, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "wirken: error: unknown command %q\n", args[0])
		usage(stderr)
		return 2
	}
	err := c.run(args[1:])
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintf(stderr, "wirken: error: %v\n", ee.err)
		}
		return ee.code
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	fmt.Fprintf(stderr, "wirken: error: %v\n", err)
	return 1
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: wirken COMMAND [flags]")
	fmt.Fprintln(w, "\ncommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nRun `wirken COMMAND -h` for a command's flags.")
}

// newFlags makes a flag set that reports errors instead of exiting.
func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("wirken "+name, flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	return fs
}

// usageError is a command-line mistake: exit code 2.
func usageError(format string, a ...any) error {
	return &exitError{code: 2, err: fmt.Errorf(format, a...)}
}

// parse parses flags; a parse error is a usage error (already printed by flag).
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &exitError{code: 2}
	}
	return nil
}

// defaultConfig is where the daemon's configuration lives unless --config or WIRKEN_CONFIG say.
func defaultConfig() string {
	if p := os.Getenv("WIRKEN_CONFIG"); p != "" {
		return p
	}
	return "/etc/wirken/wirken.toml"
}
