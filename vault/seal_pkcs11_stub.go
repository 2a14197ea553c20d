//go:build !(pkcs11 && cgo)

package vault

import "fmt"

// planPKCS11 in a build without the pkcs11 tag (the default static build):
// PKCS#11 needs cgo to load the token's library.
func planPKCS11(*sealOptions) (*sealPlan, error) {
	return nil, fmt.Errorf("seal pkcs11: %w: built without pkcs11 support (build with cgo and -tags pkcs11)", ErrUnavailable)
}
