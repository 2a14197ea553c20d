package hostagent

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/wirken/wirken/audit"
	"github.com/wirken/wirken/vault"
)

// auditKeyLabel names the vault-derived seed of the audit checkpoint key.
const auditKeyLabel = "audit-ed25519"

// AuditSigner derives the audit log's checkpoint signer from the vault's root key.
func AuditSigner(v *vault.Vault, cfg *Config) (*audit.Signer, error) {
	seed := v.DeriveKey(auditKeyLabel)
	if len(seed) == 0 {
		return nil, errors.New("deriving the audit signing key from the vault")
	}
	defer clear(seed)
	s, err := audit.NewSigner(cfg.Audit.Origin, seed)
	if err != nil {
		return nil, fmt.Errorf("creating the audit signer: %w", err)
	}
	return s, nil
}

// PublishVerifierKey writes the public verifier key of the audit log, or checks that the one
// already published is this vault's: a different key means the vault was replaced, and
// verifiers holding the old key would reject every new checkpoint.
func PublishVerifierKey(cfg *Config, s *audit.Signer) error {
	path := cfg.Audit.VerifierKey
	old, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := audit.WriteVerifierKey(path, s); err != nil {
			return fmt.Errorf("publishing the audit verifier key: %w", err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("reading the audit verifier key: %w", err)
	}
	if !bytes.Equal(bytes.TrimSpace(old), []byte(s.VerifierKey())) {
		return fmt.Errorf("audit verifier key %s is not this vault's (was the vault replaced?): verify the old log with that key, then move the file away to publish the new one", path)
	}
	return nil
}

// auditOptions are the audit log's options from the configuration.
func (c *Config) auditOptions(s *audit.Signer) []audit.Option {
	opts := []audit.Option{audit.WithSigner(s)}
	if c.Audit.CheckpointEvery > 0 || c.Audit.CheckpointInterval > 0 {
		opts = append(opts, audit.WithCheckpointEvery(c.Audit.CheckpointEvery, time.Duration(c.Audit.CheckpointInterval*float64(time.Second))))
	}
	if c.Audit.SegmentMB > 0 {
		opts = append(opts, audit.WithSegmentSize(int64(c.Audit.SegmentMB)<<20))
	}
	if c.Audit.KeepSegments > 0 {
		opts = append(opts, audit.WithRetention(c.Audit.KeepSegments))
	}
	return opts
}
