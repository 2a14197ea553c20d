//go:build !(pkcs11 && cgo)

package vault

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestPKCS11NotBuiltIn(t *testing.T) {
	_, err := NewSeal(context.Background(), SealConfig{Type: "pkcs11", Options: map[string]string{"lib": "/l.so"}})
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "built without pkcs11 support") {
		t.Fatalf("NewSeal(pkcs11) = %v, want ErrUnavailable saying it was built without pkcs11 support", err)
	}
}
