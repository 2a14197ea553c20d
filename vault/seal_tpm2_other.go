//go:build !linux

package vault

import (
	"fmt"

	"github.com/google/go-tpm/tpm2/transport"
)

// openTPM: TPM access is implemented for Linux only.
func openTPM(string) (transport.TPMCloser, error) {
	return nil, fmt.Errorf("tpm2 seal: %w on this platform", ErrUnavailable)
}
