package hostagent

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/wirken/wirken/audit"
	"github.com/wirken/wirken/vault"
)

// OpenVault unseals the configured vault with the first configured seal that can: any one
// seal entry unwraps the root key. The seal that worked is returned open (the vault needs it
// to reload); the caller releases it with vault.FinalizeSeal after closing the vault.
func OpenVault(ctx context.Context, cfg *Config, opts ...vault.OpenOption) (*vault.Vault, vault.Seal, error) {
	var errs []error
	for i, sc := range cfg.Seals() {
		seal, err := openWithSeal(ctx, cfg, sc, opts)
		if err == nil {
			return seal.v, seal.s, nil
		}
		if !errors.Is(err, vault.ErrSeal) && !errors.Is(err, errSealBuild) {
			return nil, nil, err // the file itself is bad, or rolled back: another seal will not help
		}
		errs = append(errs, fmt.Errorf("seal %d (%s): %w", i, sc.Type, err))
	}
	return nil, nil, fmt.Errorf("unsealing %s: no configured seal could: %w", cfg.Vault.File, errors.Join(errs...))
}

// errSealBuild marks a seal that could not be built (its KMS unreachable, say).
var errSealBuild = errors.New("seal unavailable")

type openedVault struct {
	v *vault.Vault
	s vault.Seal
}

// openWithSeal builds one seal and opens the vault with it, within vault.unseal_timeout: a
// KMS that accepts but never answers fails the attempt instead of hanging it.
func openWithSeal(ctx context.Context, cfg *Config, sc vault.SealConfig, opts []vault.OpenOption) (openedVault, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.UnsealTimeout())
	defer cancel()
	seal, err := vault.NewSeal(ctx, sc)
	if err != nil {
		return openedVault{}, fmt.Errorf("%w (unseal_timeout %v): %w", errSealBuild, cfg.UnsealTimeout(), err)
	}
	v, err := vault.Open(ctx, cfg.Vault.File, seal, opts...)
	if err != nil {
		_ = vault.FinalizeSeal(context.Background(), seal)
		return openedVault{}, err
	}
	return openedVault{v, seal}, nil
}

// lastAuditedGeneration is the vault generation of the last audit record that names one (0 if
// none): a vault file older than that is a rollback. The last record, not the highest: once an
// operator accepts a rollback, the daemon's own records carry the older generation on.
func lastAuditedGeneration(cfg *Config) (uint64, error) {
	paths, err := audit.SegmentPaths(cfg.Audit.Log)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	// Newest segment first; within it, from its end back to the last record that carries a
	// generation: start-up reads only as far back as that, whatever the log's size.
	for i := len(paths) - 1; i >= 0; i-- {
		var gen uint64
		err := audit.ReadLinesBackward(paths[i], func(line []byte) (bool, error) {
			if r, err := audit.ParseRecord(line); err == nil && r.Record.Generation > 0 {
				gen = r.Record.Generation
				return false, nil
			}
			return true, nil
		})
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return 0, fmt.Errorf("reading the audit log for the last vault generation: %w", err)
		}
		if gen > 0 {
			return gen, nil
		}
	}
	return 0, nil
}
