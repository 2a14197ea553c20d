package audit

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"unicode"
	"unicode/utf8"

	"golang.org/x/mod/sumdb/note"
)

// SeedSize is the length of the seed NewSigner takes.
const SeedSize = ed25519.SeedSize

const maxOriginBytes = 256

// Signer signs the log's checkpoints with an Ed25519 key. Its origin is both
// the first line of every checkpoint and the name of the note key. A Signer
// never prints its key: String and GoString show only the origin and the
// public verifier key.
type Signer struct {
	origin string
	vkey   string
	hash   uint32
	priv   ed25519.PrivateKey
}

// NewSigner returns a Signer for origin (for example "wirken/<host-id>/audit":
// non-empty, at most 256 bytes of UTF-8 with no spaces, control characters
// or '+') whose Ed25519 key is derived from seed, which must be SeedSize
// bytes and not all zero. The daemon derives the seed from the vault's root
// key, so the same host always signs with the same key. NewSigner copies
// seed; the caller may wipe it afterwards.
func NewSigner(origin string, seed []byte) (*Signer, error) {
	if err := validOrigin(origin); err != nil {
		return nil, fmt.Errorf("creating audit signer: %w", err)
	}
	if len(seed) != SeedSize {
		return nil, fmt.Errorf("creating audit signer: seed is %d bytes, want %d", len(seed), SeedSize)
	}
	var zero [SeedSize]byte
	if bytes.Equal(seed, zero[:]) {
		return nil, errors.New("creating audit signer: seed is all zeros")
	}
	priv := ed25519.NewKeyFromSeed(seed)
	vkey, err := note.NewEd25519VerifierKey(origin, priv.Public().(ed25519.PublicKey))
	if err != nil {
		return nil, fmt.Errorf("creating audit signer: %w", err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return nil, fmt.Errorf("creating audit signer: %w", err)
	}
	return &Signer{origin: origin, vkey: vkey, hash: v.KeyHash(), priv: priv}, nil
}

// Origin returns the checkpoint origin (and note key name).
func (s *Signer) Origin() string { return s.origin }

// VerifierKey returns the public note verifier key, "<origin>+<hash>+<base64
// key>", which Verify (WithVerifierKey) and CheckProof take. It is public:
// store it out of band (WriteVerifierKey).
func (s *Signer) VerifierKey() string { return s.vkey }

// String shows the origin and verifier key, never the private key. It has
// a value receiver so that a Signer value prints safely too.
func (s Signer) String() string { return "audit.Signer(" + s.vkey + ")" }

// GoString is String, so %#v cannot print the private key either.
func (s Signer) GoString() string { return s.String() }

// signCheckpoint returns the signed checkpoint note for a tree.
func (s *Signer) signCheckpoint(cp checkpoint) ([]byte, error) {
	msg, err := note.Sign(&note.Note{Text: cp.text()}, noteSigner{s})
	if err != nil {
		return nil, fmt.Errorf("signing checkpoint: %w", err)
	}
	return msg, nil
}

// noteSigner adapts a Signer to note.Signer without exporting Sign.
type noteSigner struct{ s *Signer }

func (n noteSigner) Name() string                    { return n.s.origin }
func (n noteSigner) KeyHash() uint32                 { return n.s.hash }
func (n noteSigner) Sign(msg []byte) ([]byte, error) { return ed25519.Sign(n.s.priv, msg), nil }

// WriteVerifierKey writes s's verifier key and a newline to path, mode
// 0644, atomically (a temporary file in the same directory, fsync'd, then
// renamed over path, and the directory fsync'd). The file is public.
func WriteVerifierKey(path string, s *Signer) error {
	if s == nil {
		return errors.New("writing audit verifier key: signer is nil")
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("writing audit verifier key: %w", err)
	}
	name := tmp.Name()
	ok := false
	defer func() {
		if !ok {
			_ = tmp.Close()
			_ = os.Remove(name)
		}
	}()
	if _, err := tmp.WriteString(s.vkey + "\n"); err != nil {
		return fmt.Errorf("writing audit verifier key: %w", err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		return fmt.Errorf("writing audit verifier key: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("writing audit verifier key: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing audit verifier key: %w", err)
	}
	if err := os.Rename(name, path); err != nil {
		return fmt.Errorf("writing audit verifier key: %w", err)
	}
	ok = true
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("writing audit verifier key: syncing directory: %w", err)
	}
	return nil
}

// validOrigin checks that origin can be a note key name and a single
// checkpoint line.
func validOrigin(origin string) error {
	if origin == "" {
		return errors.New("origin is empty")
	}
	if len(origin) > maxOriginBytes {
		return fmt.Errorf("origin is longer than %d bytes", maxOriginBytes)
	}
	for _, r := range origin {
		if r == utf8.RuneError || r == '+' || unicode.IsSpace(r) || unicode.IsControl(r) {
			return errors.New("origin must be UTF-8 without spaces, control characters or '+'")
		}
	}
	return nil
}
