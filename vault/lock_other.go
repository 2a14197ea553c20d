//go:build !unix

package vault

import "errors"

// lockFile fails closed where flock is not available: writes are refused.
func lockFile(string) (func(), error) {
	return nil, errors.New("locking the vault file is not supported on this platform")
}
