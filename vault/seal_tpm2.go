package vault

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	wrapping "github.com/hashicorp/go-kms-wrapping/v2"
)

// wrapperTypeTPM2 is the seal type recorded for TPM seal entries;
// go-kms-wrapping has no TPM wrapper and so no constant for it.
const wrapperTypeTPM2 wrapping.WrapperType = "tpm2"

// planTPM2: a TPM 2.0 through google/go-tpm (pure Go, so it stays in the
// static binary). The root key is sealed as a keyed-hash data object under
// the owner hierarchy's ECC P-256 storage root key (the TCG reference SRK
// template, re-derived on every use, never persisted), so only this TPM can
// unseal it; the root key crosses the bus encrypted by a session salted to
// the SRK. The owner hierarchy must have an empty authorization value (the
// default). Not bound to PCRs: a TPM clear (which changes the owner seed)
// makes the entry useless, so keep a second seal entry. device is the TPM
// character device, or a Unix socket where swtpm listens (the tests).
func planTPM2(o *sealOptions) (*sealPlan, error) {
	if err := o.known("device"); err != nil {
		return nil, err
	}
	device := o.get("device")
	if device == "" {
		device = "/dev/tpmrm0"
	}
	return &sealPlan{build: func(context.Context) (Seal, error) {
		t, err := openTPM(device)
		if err != nil {
			return nil, fmt.Errorf("opening TPM %s: %w", device, err)
		}
		s, err := newTPMSeal(t)
		if err != nil {
			t.Close()
			return nil, fmt.Errorf("TPM %s: %w", device, err)
		}
		return s, nil
	}}, nil
}

type tpmSeal struct {
	mu  sync.Mutex // one command sequence at a time
	tpm transport.TPMCloser
	kid string
}

// srk is a storage root key loaded for one operation.
type srk struct {
	handle tpm2.TPMHandle
	name   tpm2.TPM2BName
	pub    tpm2.TPMTPublic
}

func newTPMSeal(t transport.TPMCloser) (*tpmSeal, error) {
	s := &tpmSeal{tpm: t}
	k, err := s.loadSRK()
	if err != nil {
		return nil, err
	}
	defer s.flush(k.handle)
	sum := sha256.Sum256(k.name.Buffer)
	s.kid = "tpm2-srk-" + hex.EncodeToString(sum[:8])
	return s, nil
}

// loadSRK creates the SRK from the owner seed; the same TPM always yields
// the same key, so its name identifies the TPM.
func (s *tpmSeal) loadSRK() (*srk, error) {
	rsp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.TPMRHOwner,
		InPublic:      tpm2.New2B(tpm2.ECCSRKTemplate),
	}.Execute(s.tpm)
	if err != nil {
		return nil, fmt.Errorf("creating the storage root key: %w", err)
	}
	pub, err := rsp.OutPublic.Contents()
	if err != nil {
		s.flush(rsp.ObjectHandle)
		return nil, fmt.Errorf("reading the storage root key: %w", err)
	}
	return &srk{handle: rsp.ObjectHandle, name: rsp.Name, pub: *pub}, nil
}

func (s *tpmSeal) flush(h tpm2.TPMHandle) {
	_, _ = tpm2.FlushContext{FlushHandle: h}.Execute(s.tpm)
}

func (s *tpmSeal) Type(context.Context) (wrapping.WrapperType, error) { return wrapperTypeTPM2, nil }

func (s *tpmSeal) KeyId(context.Context) (string, error) { return s.kid, nil }

// Encrypt seals pt into a data object under the SRK.
func (s *tpmSeal) Encrypt(_ context.Context, pt []byte, _ ...wrapping.Option) (*wrapping.BlobInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, err := s.loadSRK()
	if err != nil {
		return nil, err
	}
	defer s.flush(k.handle)
	rsp, err := tpm2.Create{
		ParentHandle: tpm2.AuthHandle{
			Handle: k.handle,
			Name:   k.name,
			Auth:   tpm2.HMAC(tpm2.TPMAlgSHA256, 16, tpm2.AESEncryption(128, tpm2.EncryptIn), tpm2.Salted(k.handle, k.pub)),
		},
		InSensitive: tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{
			Data: tpm2.NewTPMUSensitiveCreate(&tpm2.TPM2BSensitiveData{Buffer: pt}),
		}},
		InPublic: tpm2.New2B(tpm2.TPMTPublic{
			Type:    tpm2.TPMAlgKeyedHash,
			NameAlg: tpm2.TPMAlgSHA256,
			ObjectAttributes: tpm2.TPMAObject{
				FixedTPM:     true,
				FixedParent:  true,
				UserWithAuth: true,
				NoDA:         true,
			},
		}),
	}.Execute(s.tpm)
	if err != nil {
		return nil, fmt.Errorf("sealing to the TPM: %w", err)
	}
	blob := appendTPMBlob(nil, tpm2.Marshal(rsp.OutPublic), tpm2.Marshal(rsp.OutPrivate))
	return &wrapping.BlobInfo{Ciphertext: blob, KeyInfo: &wrapping.KeyInfo{KeyId: s.kid}}, nil
}

// Decrypt loads a sealed object under the SRK and unseals it.
func (s *tpmSeal) Decrypt(_ context.Context, in *wrapping.BlobInfo, _ ...wrapping.Option) (pt []byte, err error) {
	if in == nil {
		return nil, errors.New("no TPM blob")
	}
	pub, priv, err := parseTPMBlob(in.Ciphertext)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k, err := s.loadSRK()
	if err != nil {
		return nil, err
	}
	defer s.flush(k.handle)
	obj, err := tpm2.Load{
		ParentHandle: tpm2.AuthHandle{Handle: k.handle, Name: k.name, Auth: tpm2.PasswordAuth(nil)},
		InPrivate:    *priv,
		InPublic:     *pub,
	}.Execute(s.tpm)
	if err != nil {
		return nil, fmt.Errorf("loading the sealed object into the TPM: %w", err)
	}
	defer s.flush(obj.ObjectHandle)
	rsp, err := tpm2.Unseal{ItemHandle: tpm2.AuthHandle{
		Handle: obj.ObjectHandle,
		Name:   obj.Name,
		Auth:   tpm2.HMAC(tpm2.TPMAlgSHA256, 16, tpm2.AESEncryption(128, tpm2.EncryptOut), tpm2.Salted(k.handle, k.pub)),
	}}.Execute(s.tpm)
	if err != nil {
		return nil, fmt.Errorf("unsealing in the TPM: %w", err)
	}
	pt = bytes.Clone(rsp.OutData.Buffer)
	clear(rsp.OutData.Buffer)
	return pt, nil
}

// Finalize closes the connection to the TPM.
func (s *tpmSeal) Finalize(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tpm.Close()
}

// A TPM blob is the marshalled TPM2B_PUBLIC followed by the marshalled
// TPM2B_PRIVATE; each starts with its own 16-bit big-endian size.

func appendTPMBlob(dst, pub, priv []byte) []byte {
	dst = append(dst, pub...)
	return append(dst, priv...)
}

// parseTPMBlob splits and decodes a TPM blob, refusing any length mismatch
// or trailing byte.
func parseTPMBlob(b []byte) (pub *tpm2.TPM2BPublic, priv *tpm2.TPM2BPrivate, err error) {
	defer func() {
		if r := recover(); r != nil {
			pub, priv, err = nil, nil, errors.New("TPM blob does not decode")
		}
	}()
	if len(b) < 2 {
		return nil, nil, errors.New("TPM blob is too short")
	}
	n := 2 + int(binary.BigEndian.Uint16(b))
	if len(b) < n+2 {
		return nil, nil, errors.New("TPM blob is too short for its public part")
	}
	m := 2 + int(binary.BigEndian.Uint16(b[n:]))
	if len(b) != n+m {
		return nil, nil, errors.New("TPM blob length does not match its parts")
	}
	pub, err = tpm2.Unmarshal[tpm2.TPM2BPublic](b[:n])
	if err != nil {
		return nil, nil, fmt.Errorf("TPM blob public part: %w", err)
	}
	if _, err := pub.Contents(); err != nil {
		return nil, nil, fmt.Errorf("TPM blob public part: %w", err)
	}
	priv, err = tpm2.Unmarshal[tpm2.TPM2BPrivate](b[n:])
	if err != nil {
		return nil, nil, fmt.Errorf("TPM blob private part: %w", err)
	}
	return pub, priv, nil
}
