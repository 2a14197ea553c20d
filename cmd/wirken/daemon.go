package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/wirken/wirken/hostagent"
)

func cmdRun(args []string) error {
	fs := newFlags("run")
	config := fs.String("config", defaultConfig(), "daemon configuration `file`")
	level := fs.String("log-level", "", "log level: debug, info, warn, error (default: the config's)")
	acceptRollback := fs.Bool("accept-rollback", false, "start even if the vault is older than the generation the audit log last recorded (audited)")
	detach := fs.Bool("detach", false, "on shutdown, remove the pinned programs and wirken's cgroups (refused while an agent has processes)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError("run takes no arguments")
	}
	cfg, err := hostagent.LoadConfig(*config)
	if err != nil {
		return err
	}
	if *level != "" {
		cfg.Log.Level = *level
	}
	cfg.AcceptRollback = *acceptRollback
	logger, err := newLogger(cfg.Log.Level, cfg.Log.Format)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	tel, shutdown, err := setupTelemetry(ctx, logger, cfg.Metrics.Prometheus)
	defer func() {
		if err := shutdown(context.Background()); err != nil {
			logger.Warn("flushing telemetry", "err", err)
		}
	}()
	if err != nil {
		return err
	}
	if err := hostagent.Run(ctx, cfg, tel, nil); err != nil {
		return err
	}
	if *detach {
		// Without --detach the programs stay pinned: agents keep failing closed until the
		// daemon is back.
		if err := hostagent.Detach(cfg, os.Stderr); err != nil {
			return fmt.Errorf("detaching: %w", err)
		}
	}
	return nil
}

func cmdExec(args []string) error {
	fs := newFlags("exec")
	config := fs.String("config", defaultConfig(), "daemon configuration `file` (for the control socket)")
	agent := fs.String("agent", "", "agent `name` from the policy (required)")
	user := fs.String("user", "", "run as this `user` instead of the policy's")
	allowRoot := fs.Bool("allow-root", false, "allow the agent to run as root (it could then leave its cgroup)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *agent == "" {
		return usageError("exec needs --agent NAME")
	}
	if fs.NArg() == 0 {
		return usageError("exec needs a command: wirken exec --agent NAME -- CMD [ARGS...]")
	}
	cfg, err := hostagent.LoadConfig(*config)
	if err != nil {
		return err
	}
	code, err := hostagent.Exec(context.Background(), hostagent.NewClient(cfg.ControlSocket),
		hostagent.ExecSpec{Agent: *agent, User: *user, AllowRoot: *allowRoot, Argv: fs.Args()})
	if err != nil {
		return err
	}
	if code != 0 {
		return &exitError{code: code}
	}
	return nil
}

// newLogger logs text to a terminal and JSON otherwise (journald, files), on stderr.
func newLogger(level, format string) (*slog.Logger, error) {
	return newLoggerTo(os.Stderr, level, format)
}

// newLoggerTo is newLogger on out.
func newLoggerTo(out *os.File, level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: %w", level, err)
	}
	opts := &slog.HandlerOptions{Level: l}
	if format == "json" || (format != "text" && !isTerminal(out)) {
		return slog.New(slog.NewJSONHandler(out, opts)), nil
	}
	return slog.New(slog.NewTextHandler(out, opts)), nil
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
