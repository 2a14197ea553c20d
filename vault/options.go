package vault

// OpenOption changes how Open treats the file it reads.
type OpenOption func(*openOptions)

type openOptions struct {
	minGeneration  uint64
	acceptRollback bool
}

// WithMinGeneration makes Open refuse, with ErrRollback, a file whose
// generation is below g. Pass the generation the audit log last recorded for
// a vault write, so that an attacker who puts an older copy of the file back
// (with a revoked credential in it) is noticed.
func WithMinGeneration(g uint64) OpenOption {
	return func(o *openOptions) { o.minGeneration = g }
}

// WithAcceptRollback makes Open accept a file older than WithMinGeneration
// asks for. It is the operator's explicit decision after restoring a backup;
// the caller should audit it. It has no effect on Reload, which never goes
// back to an older generation.
func WithAcceptRollback() OpenOption {
	return func(o *openOptions) { o.acceptRollback = true }
}
