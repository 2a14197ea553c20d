package vault

import (
	"fmt"
	"os"

	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"
	"github.com/google/go-tpm/tpm2/transport/linuxudstpm"
)

// openTPM opens a TPM character device (/dev/tpmrm0), or the Unix socket
// of a TPM emulator such as swtpm ("swtpm socket --server type=unixio,…").
func openTPM(device string) (transport.TPMCloser, error) {
	fi, err := os.Stat(device)
	if err != nil {
		return nil, fmt.Errorf("checking TPM device: %w", err)
	}
	if fi.Mode()&os.ModeSocket != 0 {
		return linuxudstpm.Open(device)
	}
	if fi.Mode()&os.ModeCharDevice == 0 {
		return nil, fmt.Errorf("%s is neither a character device nor a socket", device)
	}
	return linuxtpm.Open(device)
}
