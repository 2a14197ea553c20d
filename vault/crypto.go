package vault

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"strconv"
)

const (
	keyLen      = 32 // AES-256 keys: root, term, data keys
	nonceLen    = 12
	tagLen      = 16
	gcmOverhead = nonceLen + tagLen
	// dekBlobLen is the size of a wrapped data key: nonce || ciphertext || tag.
	dekBlobLen = gcmOverhead + keyLen
)

// errDecrypt is returned when authenticated decryption fails.
var errDecrypt = errors.New("message authentication failed")

func newGCM(key []byte) (cipher.AEAD, error) {
	if len(key) != keyLen {
		return nil, fmt.Errorf("key is %d bytes, want %d", len(key), keyLen)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("creating AES cipher: %w", err)
	}
	g, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("creating GCM: %w", err)
	}
	return g, nil
}

// sealGCM encrypts plaintext with AES-256-GCM under a random nonce and
// returns nonce || ciphertext || tag.
func sealGCM(key, plaintext, aad []byte) ([]byte, error) {
	g, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	out := make([]byte, nonceLen, nonceLen+len(plaintext)+tagLen)
	if _, err := rand.Read(out); err != nil {
		return nil, fmt.Errorf("reading nonce: %w", err)
	}
	return g.Seal(out, out[:nonceLen], plaintext, aad), nil
}

// openGCMInto decrypts blob (nonce || ciphertext || tag) into dst, which must
// be exactly as long as the plaintext; dst is normally a LockedBuffer, so the
// plaintext never lands on the Go heap. Lengths are checked first.
func openGCMInto(key, blob, aad, dst []byte) error {
	if len(blob) < gcmOverhead || len(dst) != len(blob)-gcmOverhead {
		return fmt.Errorf("ciphertext of %d bytes does not fit a %d-byte plaintext", len(blob), len(dst))
	}
	g, err := newGCM(key)
	if err != nil {
		return err
	}
	out, err := g.Open(dst[:0], blob[:nonceLen], blob[nonceLen:], aad)
	if err != nil {
		return errDecrypt
	}
	if len(out) != len(dst) || (len(out) > 0 && &out[0] != &dst[0]) {
		clear(out)
		return errors.New("decryption did not write into the locked buffer")
	}
	return nil
}

// deriveKey is HKDF-SHA256(root, info) with an empty salt, 32 bytes.
func deriveKey(root []byte, info string) ([]byte, error) {
	k, err := hkdf.Key(sha256.New, root, nil, info, keyLen)
	if err != nil {
		return nil, fmt.Errorf("deriving key: %w", err)
	}
	return k, nil
}

const fileMACInfo = "wirken/file-mac"

// fileMAC is HMAC-SHA256 over signed, keyed by HKDF(root, "wirken/file-mac").
func fileMAC(root, signed []byte) ([]byte, error) {
	k, err := deriveKey(root, fileMACInfo)
	if err != nil {
		return nil, err
	}
	defer clear(k)
	m := hmac.New(sha256.New, k)
	m.Write(signed)
	return m.Sum(nil), nil
}

// Additional data. Names cannot contain '|' and vault IDs are hex, so the
// fields cannot run into each other.

func keyringAAD(vaultID string) []byte {
	return []byte("wirken/keyring|" + vaultID)
}

func dekAAD(vaultID, name string, version int) []byte {
	return []byte("wirken/dek|" + vaultID + "|" + name + "|" + strconv.Itoa(version))
}

func valueAAD(vaultID, name string, version int, bindingSum string) []byte {
	return []byte("wirken/value|" + vaultID + "|" + name + "|" + strconv.Itoa(version) + "|" + bindingSum)
}
