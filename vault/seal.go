package vault

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/awnumar/memguard"
	wrapping "github.com/hashicorp/go-kms-wrapping/v2"
	"github.com/hashicorp/go-kms-wrapping/v2/aead"
	"google.golang.org/protobuf/proto"
)

// Seal wraps and unwraps the vault's root key. Every go-kms-wrapping v2
// wrapper (wrapping.Wrapper) satisfies it; the vault calls Decrypt once per
// Open and Encrypt only when a vault is created. The vault binds everything
// else locally, so no additional data is passed to the seal (transit ignores
// it anyway).
type Seal interface {
	Type(context.Context) (wrapping.WrapperType, error)
	KeyId(context.Context) (string, error)
	Encrypt(ctx context.Context, plaintext []byte, opts ...wrapping.Option) (*wrapping.BlobInfo, error)
	Decrypt(ctx context.Context, in *wrapping.BlobInfo, opts ...wrapping.Option) ([]byte, error)
}

var _ Seal = wrapping.Wrapper(nil)

// minSealCiphertext guards the aead wrapper, which slices the first 12 bytes
// of the ciphertext without checking (and panics on shorter input): a GCM
// ciphertext is at least nonce plus tag.
const minSealCiphertext = nonceLen + tagLen

// CreateAEADKeyFile writes a new random 32-byte AEAD seal key, base64 on one
// line, to path with mode 0600. It fails with ErrExists if path exists.
func CreateAEADKeyFile(path string) error {
	key := make([]byte, keyLen)
	defer clear(key)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("creating key file %s: reading random bytes: %w", path, err)
	}
	line := b64.AppendEncode(nil, key)
	line = append(line, '\n')
	defer clear(line)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("creating key file %s: %w", path, ErrExists)
		}
		return fmt.Errorf("creating key file: %w", err)
	}
	_, err = f.Write(line)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = syncDir(filepath.Dir(path))
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("writing key file %s: %w", path, err)
	}
	return nil
}

// AEADSeal loads a key file written by CreateAEADKeyFile and returns a local
// AES-256-GCM seal (go-kms-wrapping's aead wrapper) over it. It refuses a key
// file that is not a regular file or that group or other may access. The key
// ID is a fingerprint of the key, so different key files never share one.
func AEADSeal(ctx context.Context, keyFile string) (Seal, error) {
	f, err := os.Open(keyFile)
	if err != nil {
		return nil, fmt.Errorf("opening seal key file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("checking seal key file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("seal key file %s: %w: not a regular file", keyFile, ErrInvalid)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("seal key file %s: %w: mode %04o lets group or other access it (chmod 600)", keyFile, ErrInvalid, perm)
	}
	data, err := io.ReadAll(io.LimitReader(f, 1024))
	defer clear(data)
	if err != nil {
		return nil, fmt.Errorf("reading seal key file: %w", err)
	}
	key, err := parseKeyFile(data)
	if err != nil {
		return nil, fmt.Errorf("seal key file %s: %w", keyFile, err)
	}
	w := aead.NewWrapper()
	if _, err := w.SetConfig(ctx, wrapping.WithKeyId(aeadKeyID(key))); err != nil {
		clear(key)
		return nil, fmt.Errorf("configuring aead seal: %w", err)
	}
	// The wrapper keeps key (it has no way to take locked memory).
	if err := w.SetAesGcmKeyBytes(key); err != nil {
		clear(key)
		return nil, fmt.Errorf("configuring aead seal: %w", err)
	}
	return w, nil
}

// parseKeyFile decodes a key file: base64 of 32 bytes on one line, surrounding
// white space allowed. Go's decoder skips line breaks inside the text, so they
// are refused first: a key file has exactly one spelling. The error never
// repeats the content.
func parseKeyFile(data []byte) ([]byte, error) {
	s := bytes.TrimSpace(data)
	if bytes.ContainsAny(s, "\r\n") {
		return nil, fmt.Errorf("%w: want base64 of %d bytes on one line", ErrInvalid, keyLen)
	}
	key := make([]byte, b64.DecodedLen(len(s)))
	n, err := b64.Decode(key, s)
	if err != nil || n != keyLen {
		clear(key)
		return nil, fmt.Errorf("%w: want base64 of %d bytes", ErrInvalid, keyLen)
	}
	return key[:n], nil
}

// aeadKeyID names an AEAD key by a domain-separated hash of it.
func aeadKeyID(key []byte) string {
	h := sha256.New()
	h.Write([]byte("wirken/aead-key-id\x00"))
	h.Write(key)
	return "aead-" + hex.EncodeToString(h.Sum(nil)[:8])
}

// sealIdentity reads the seal's type and current key ID.
func sealIdentity(ctx context.Context, seal Seal) (typ, kid string, err error) {
	t, err := seal.Type(ctx)
	if err != nil {
		return "", "", fmt.Errorf("reading seal type: %w", err)
	}
	kid, err = seal.KeyId(ctx)
	if err != nil {
		return "", "", fmt.Errorf("reading seal key id: %w", err)
	}
	return t.String(), kid, nil
}

// hinter is implemented by the seals NewSeal returns: a description of the
// KMS key in words (never a credential), kept in the seal entry.
type hinter interface{ sealHint() string }

func sealHint(seal Seal) string {
	if h, ok := seal.(hinter); ok {
		return h.sealHint()
	}
	return ""
}

// matches reports whether entry e was written by this seal: same type and,
// when the seal has a hint, the same hint (a transit key ID names a key
// version and changes when the key rotates); otherwise the same key ID.
func (e *sealEntry) matches(typ, kid, hint string) bool {
	if e.Type != typ {
		return false
	}
	if hint != "" || e.Hint != "" {
		return e.Hint == hint
	}
	return e.KeyID == kid
}

// sealCandidates lists the entries seal may open, best first: the entries
// it wrote (see matches), then any other entry of the same type (a key
// whose ID changed, or a seal configured differently).
func sealCandidates(ctx context.Context, seal Seal, entries []sealEntry) ([]int, error) {
	typ, kid, err := sealIdentity(ctx, seal)
	if err != nil {
		return nil, err
	}
	hint := sealHint(seal)
	var best, rest []int
	for i := range entries {
		switch {
		case entries[i].matches(typ, kid, hint):
			best = append(best, i)
		case entries[i].Type == typ:
			rest = append(rest, i)
		}
	}
	if len(best)+len(rest) == 0 {
		var have []string
		for _, e := range entries {
			have = append(have, e.ID+"="+e.Type+"/"+e.KeyID)
		}
		return nil, fmt.Errorf("%w: no seal entry for type %q key id %q (file has %q)", ErrSeal, typ, kid, have)
	}
	return append(best, rest...), nil
}

// unsealRoot unwraps the root key with seal from the first candidate entry
// that opens, into an Enclave. Usually that is one KMS call.
func unsealRoot(ctx context.Context, seal Seal, entries []sealEntry, blobs [][]byte) (*memguard.Enclave, error) {
	order, err := sealCandidates(ctx, seal, entries)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, i := range order {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("unsealing: %w", err)
		}
		root, err := unwrapRoot(ctx, seal, blobs[i])
		if err != nil {
			errs = append(errs, fmt.Errorf("seal entry %q: %w", entries[i].ID, err))
			continue
		}
		budget := lockedPages() // NewEnclave briefly holds a view of memguard's key
		if err := budget.acquire(1); err != nil {
			clear(root)
			return nil, err
		}
		enc := memguard.NewEnclave(root) // wipes root
		budget.release(1)
		return enc, nil
	}
	return nil, errors.Join(errs...)
}

// sealEncrypt calls seal.Encrypt, turning a panic into an error (crypto11's
// GCM panics when the token fails).
func sealEncrypt(ctx context.Context, seal Seal, pt []byte) (blob *wrapping.BlobInfo, err error) {
	defer func() {
		if r := recover(); r != nil {
			blob, err = nil, fmt.Errorf("%w: the seal failed while encrypting", ErrSeal)
		}
	}()
	blob, err = seal.Encrypt(ctx, pt)
	if err != nil {
		return nil, err
	}
	if blob == nil {
		return nil, fmt.Errorf("%w: the seal returned no ciphertext", ErrSeal)
	}
	return blob, nil
}

// unwrapRoot unwraps a root key blob with seal (a KMS call).
// A panic inside the wrapper is turned into an error: the blob comes from a
// file that may be corrupt.
func unwrapRoot(ctx context.Context, seal Seal, raw []byte) (root []byte, err error) {
	blob := new(wrapping.BlobInfo)
	if err := proto.Unmarshal(raw, blob); err != nil {
		return nil, fmt.Errorf("%w: wrapped root key does not decode", ErrCorrupt)
	}
	if len(blob.Ciphertext) < minSealCiphertext {
		return nil, fmt.Errorf("%w: wrapped root key is too short", ErrCorrupt)
	}
	defer func() {
		if r := recover(); r != nil {
			root, err = nil, fmt.Errorf("%w: seal failed on the wrapped root key", ErrSeal)
		}
	}()
	pt, err := seal.Decrypt(ctx, blob)
	if err != nil {
		return nil, fmt.Errorf("%w: unwrapping the root key: %w", ErrSeal, err)
	}
	if len(pt) != keyLen {
		clear(pt)
		return nil, fmt.Errorf("%w: unwrapped root key is %d bytes, want %d", ErrSeal, len(pt), keyLen)
	}
	return pt, nil
}
