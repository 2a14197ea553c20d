package vault

import "errors"

// Sentinel errors. Returned errors wrap one of these where it applies, so
// callers can test with errors.Is. No error ever carries a secret value.
var (
	// ErrExists is returned by Create and CreateAEADKeyFile when the file is already there.
	ErrExists = errors.New("file already exists")
	// ErrCorrupt means the vault file is malformed or was modified.
	ErrCorrupt = errors.New("vault file is corrupt or was modified")
	// ErrUnsupportedVersion means the file is a wirken vault of a format this build does not read.
	ErrUnsupportedVersion = errors.New("unsupported vault format version")
	// ErrSeal means the seal given to Open cannot unwrap the root key in the file.
	ErrSeal = errors.New("seal cannot unseal this vault")
	// ErrNotFound means no secret has that name.
	ErrNotFound = errors.New("secret not found")
	// ErrHostNotAllowed means the secret's binding does not include the host.
	ErrHostNotAllowed = errors.New("host not allowed by the secret's binding")
	// ErrInvalid means an argument (name, value, host, binding, label) was rejected.
	ErrInvalid = errors.New("invalid argument")
	// ErrClosed means the Vault was closed.
	ErrClosed = errors.New("vault is closed")
	// ErrConflict means the file changed on disk after this Vault read it.
	ErrConflict = errors.New("vault file changed on disk since it was opened")
	// ErrMemlock means the process may not lock enough memory (RLIMIT_MEMLOCK).
	ErrMemlock = errors.New("not enough lockable memory (raise RLIMIT_MEMLOCK)")
	// ErrRollback means the file is older than a generation already seen: the
	// one given to WithMinGeneration, or the snapshot a Vault already serves.
	ErrRollback = errors.New("vault file is older than a generation already seen (rollback)")
	// ErrUnavailable means a seal type is not available in this build or on
	// this platform.
	ErrUnavailable = errors.New("not available in this build")
)
