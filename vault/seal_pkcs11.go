//go:build pkcs11 && cgo

package vault

import (
	"context"
	"crypto/cipher"
	"crypto/rand"
	"fmt"
	"strconv"

	"github.com/ThalesGroup/crypto11"
	wrapping "github.com/hashicorp/go-kms-wrapping/v2"
	"github.com/miekg/pkcs11"
)

// pkcs11AAD binds the wrapped root key to its purpose inside the token.
var pkcs11AAD = []byte("wirken/pkcs11-root")

// planPKCS11: an AES key in a PKCS#11 token (an HSM, or SoftHSM2 in the
// tests) through ThalesGroup/crypto11. The key must exist; create it with
// e.g. pkcs11-tool --module <lib> --login --keygen --key-type AES:32
// --label <key_label>. The root key is encrypted inside the token with
// AES-256-GCM under a random 12-byte nonce chosen here.
func planPKCS11(o *sealOptions) (*sealPlan, error) {
	if err := o.known("lib", "token_label", "slot", "pin", "pin_file", "key_label"); err != nil {
		return nil, err
	}
	lib, err := o.required("lib")
	if err != nil {
		return nil, err
	}
	tokenOpt, err := o.exactlyOne("token_label", "slot")
	if err != nil {
		return nil, err
	}
	var slot int
	if tokenOpt == "slot" {
		if slot, err = strconv.Atoi(o.get("slot")); err != nil || slot < 0 {
			return nil, o.errorf("slot", "want a slot number")
		}
	}
	pinOpt, err := o.exactlyOne("pin", "pin_file")
	if err != nil {
		return nil, err
	}
	label, err := o.required("key_label")
	if err != nil {
		return nil, err
	}
	hint := tokenOpt + "=" + o.get(tokenOpt) + " key_label=" + label
	return &sealPlan{build: func(ctx context.Context) (Seal, error) {
		pin := o.get("pin")
		if pinOpt == "pin_file" {
			b, err := o.readSecretFile("pin_file")
			if err != nil {
				return nil, err
			}
			pin = string(b)
			clear(b)
		}
		cfg := &crypto11.Config{Path: lib, Pin: pin, GCMIVLength: nonceLen}
		if tokenOpt == "slot" {
			cfg.SlotNumber = &slot
		} else {
			cfg.TokenLabel = o.get("token_label")
		}
		return newPKCS11Seal(cfg, label, hint)
	}}, nil
}

type pkcs11Seal struct {
	c     *crypto11.Context
	gcm   cipher.AEAD
	label string
	hint  string
}

func newPKCS11Seal(cfg *crypto11.Config, label, hint string) (*pkcs11Seal, error) {
	c, err := crypto11.Configure(cfg)
	if err != nil {
		return nil, fmt.Errorf("opening the PKCS#11 token: %w", err)
	}
	keys, err := c.FindKeys(nil, []byte(label))
	if err != nil || len(keys) != 1 {
		c.Close()
		if err == nil {
			err = fmt.Errorf("%d secret keys have label %q, want exactly 1", len(keys), label)
		}
		return nil, fmt.Errorf("finding the key: %w", err)
	}
	if keys[0].Cipher != crypto11.CipherAES {
		c.Close()
		return nil, fmt.Errorf("key %q is not an AES key", label)
	}
	gcm, err := keys[0].NewGCM()
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("key %q: %w", label, err)
	}
	return &pkcs11Seal{c: c, gcm: gcm, label: label, hint: hint}, nil
}

func (s *pkcs11Seal) Type(context.Context) (wrapping.WrapperType, error) {
	return wrapping.WrapperTypePkcs11, nil
}

func (s *pkcs11Seal) KeyId(context.Context) (string, error) { return s.label, nil }

func (s *pkcs11Seal) sealHint() string { return s.hint }

// Encrypt encrypts pt in the token; crypto11 panics when the token fails,
// which becomes an error here.
func (s *pkcs11Seal) Encrypt(_ context.Context, pt []byte, _ ...wrapping.Option) (blob *wrapping.BlobInfo, err error) {
	defer func() {
		if r := recover(); r != nil {
			blob, err = nil, fmt.Errorf("PKCS#11 encryption failed: %v", r)
		}
	}()
	nonce := make([]byte, nonceLen, nonceLen+len(pt)+tagLen)
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("reading nonce: %w", err)
	}
	ct := s.gcm.Seal(nonce, nonce, pt, pkcs11AAD)
	return &wrapping.BlobInfo{
		Ciphertext: ct,
		KeyInfo:    &wrapping.KeyInfo{KeyId: s.label, Mechanism: pkcs11.CKM_AES_GCM},
	}, nil
}

// Decrypt decrypts a blob made by Encrypt in the token.
func (s *pkcs11Seal) Decrypt(_ context.Context, in *wrapping.BlobInfo, _ ...wrapping.Option) ([]byte, error) {
	if in == nil || len(in.Ciphertext) < nonceLen+tagLen {
		return nil, fmt.Errorf("PKCS#11 ciphertext is too short")
	}
	ct := in.Ciphertext
	pt, err := s.gcm.Open(nil, ct[:nonceLen], ct[nonceLen:], pkcs11AAD)
	if err != nil {
		return nil, fmt.Errorf("PKCS#11 decryption failed: %w", err)
	}
	return pt, nil
}

// Finalize closes the token session.
func (s *pkcs11Seal) Finalize(context.Context) error { return s.c.Close() }
