package hostagent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/wirken/wirken/policy"
)

// budgetsFile is where the daemon keeps the LLM token use of the day, so a budget still holds
// after a restart.
func budgetsFile(cfg *Config) string { return filepath.Join(cfg.StateDir, "budgets.json") }

// loadMeter returns the rule-condition counters with the token use saved by the last run. A
// state file that cannot be read is an error: starting afresh would lift every spent budget.
func loadMeter(path string) (*policy.Meter, error) {
	m := policy.NewMeter(nil)
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return m, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading token budgets: %w", err)
	}
	if err := m.Restore(data); err != nil {
		return nil, fmt.Errorf("%s: %w (fix or remove the file; removing it resets today's token budgets)", path, err)
	}
	return m, nil
}

// keepMeter saves the token use (atomically) whenever it changes, until ctx is done, and once
// more then.
func keepMeter(ctx context.Context, m *policy.Meter, path string, log *slog.Logger) {
	save := func() {
		if err := writeFileAtomic(path, m.State(), 0o600); err != nil {
			log.Error("saving token budgets failed", "file", path, "err", err)
		}
	}
	for {
		select {
		case <-m.Changed():
			save()
		case <-ctx.Done():
			save()
			return
		}
	}
}
