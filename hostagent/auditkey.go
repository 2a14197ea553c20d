package hostagent

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
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

// PublishVerifierKey makes sure the audit log's verifier key file lists this signer's key. The
// file keeps every key the log has been signed with, one per line (a root key rotation makes a
// new one), so older checkpoints stay verifiable. It reports whether the key was added.
func PublishVerifierKey(cfg *Config, s *audit.Signer) (bool, error) {
	path := cfg.Audit.VerifierKey
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return false, fmt.Errorf("reading the audit verifier keys: %w", err)
	}
	keys := VerifierKeys(old)
	if slices.Contains(keys, s.VerifierKey()) {
		return false, nil
	}
	keys = append(keys, s.VerifierKey())
	if err := writeFileAtomic(path, []byte(strings.Join(keys, "\n")+"\n"), 0o644); err != nil {
		return false, fmt.Errorf("publishing the audit verifier key: %w", err)
	}
	return true, nil
}

// VerifierKeys parses a verifier key file: one key per line; blank lines and # comments are
// ignored.
func VerifierKeys(data []byte) []string {
	var keys []string
	for _, l := range strings.Split(string(data), "\n") {
		l = strings.TrimSpace(l)
		if l != "" && !strings.HasPrefix(l, "#") {
			keys = append(keys, l)
		}
	}
	return keys
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
