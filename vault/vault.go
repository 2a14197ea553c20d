package vault

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/awnumar/memguard"
	"google.golang.org/protobuf/proto"
)

// Locked pages each operation may hold at once (see memlock.go). An Enclave
// open holds the new buffer plus a transient view of memguard's key.
const (
	createPages = 2 // root key, keyring plaintext
	putPages    = 2 // term key + key view, then term key + data key, then root + view
	derivePages = 2 // root + view
)

// Vault is an unsealed vault file. It is safe for concurrent use: reads
// (List, WithSecret, Reveal) work on an immutable snapshot and never block
// one another; Put and Close are serialised.
type Vault struct {
	path  string
	mu    sync.Mutex // serialises Put and Close
	state atomic.Pointer[state]
}

// state is one verified version of the file. It is never modified.
type state struct {
	body fileBody
	sum  [32]byte // SHA-256 of the file bytes it came from
	dec  *decodedBody
	keys *keys
}

// keys holds the unsealed key material, encrypted in memory by memguard.
type keys struct {
	root    *memguard.Enclave
	terms   map[uint32]*memguard.Enclave
	current uint32
}

// SecretInfo describes one stored version of a secret, never its value.
type SecretInfo struct {
	Name    string
	Version int
	Hosts   []string
	Created time.Time
}

// Create writes a new, empty vault to path, sealed by seal. It refuses with
// ErrExists if path exists. The root key is wrapped with one Encrypt call and
// checked with one Decrypt call before the file is written.
func Create(ctx context.Context, path string, seal Seal) error {
	if seal == nil {
		return fmt.Errorf("creating vault %s: %w: no seal", path, ErrInvalid)
	}
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("creating vault %s: %w", path, ErrExists)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("creating vault: %w", err)
	}
	budget := lockedPages()
	if err := budget.acquire(createPages); err != nil {
		return fmt.Errorf("creating vault %s: %w", path, err)
	}
	defer budget.release(createPages)
	raw, err := newVaultFile(ctx, seal)
	if err != nil {
		return fmt.Errorf("creating vault %s: %w", path, err)
	}
	unlock, err := lockFile(path)
	if err != nil {
		return fmt.Errorf("creating vault %s: %w", path, err)
	}
	defer unlock()
	if err := writeFileAtomic(path, raw, false); err != nil {
		return fmt.Errorf("creating vault %s: %w", path, err)
	}
	return nil
}

// newVaultFile builds the bytes of an empty vault with a fresh root key and
// a keyring of one term.
func newVaultFile(ctx context.Context, seal Seal) ([]byte, error) {
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, fmt.Errorf("reading random vault id: %w", err)
	}
	vaultID := hex.EncodeToString(id[:])
	root := memguard.NewBufferRandom(keyLen)
	defer root.Destroy()
	blob, err := seal.Encrypt(ctx, root.Bytes())
	if err != nil {
		return nil, fmt.Errorf("wrapping the root key with the seal: %w", err)
	}
	wrapped, err := proto.Marshal(blob)
	if err != nil {
		return nil, fmt.Errorf("encoding the wrapped root key: %w", err)
	}
	check, err := unwrapRoot(ctx, seal, wrapped)
	if err != nil {
		return nil, fmt.Errorf("checking the seal: %w", err)
	}
	same := subtle.ConstantTimeCompare(check, root.Bytes()) == 1
	clear(check)
	if !same {
		return nil, fmt.Errorf("%w: the seal returned a different root key", ErrSeal)
	}
	typ, err := seal.Type(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading seal type: %w", err)
	}
	kid, err := seal.KeyId(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading seal key id: %w", err)
	}
	kr := memguard.NewBuffer(termRecordLen)
	defer kr.Destroy()
	binary.BigEndian.PutUint32(kr.Bytes(), 1)
	if _, err := rand.Read(kr.Bytes()[4:]); err != nil {
		return nil, fmt.Errorf("reading random term key: %w", err)
	}
	krBlob, err := sealGCM(root.Bytes(), kr.Bytes(), keyringAAD(vaultID))
	if err != nil {
		return nil, fmt.Errorf("encrypting the keyring: %w", err)
	}
	body := &fileBody{
		VaultID:    vaultID,
		Generation: 1,
		Seals:      []sealEntry{{ID: "s1", Type: typ.String(), KeyID: kid, Root: b64.EncodeToString(wrapped)}},
		Keyring:    b64.EncodeToString(krBlob),
		Secrets:    []secretEntry{},
	}
	if _, err := decodeBody(body); err != nil {
		return nil, fmt.Errorf("checking the new vault: %w", err)
	}
	return encodeFile(body, root.Bytes())
}

// Open reads the vault at path, unwraps its root key with seal (the one KMS
// call), verifies the file MAC and decrypts the keyring. A file that is not
// exactly as this package wrote it is refused with an error naming the file
// and the problem (ErrCorrupt, ErrUnsupportedVersion, ErrSeal).
func Open(ctx context.Context, path string, seal Seal) (*Vault, error) {
	if seal == nil {
		return nil, fmt.Errorf("opening vault %s: %w: no seal", path, ErrInvalid)
	}
	raw, err := readFile(path)
	if err != nil {
		return nil, fmt.Errorf("opening vault: %w", err)
	}
	st, err := unseal(ctx, raw, seal)
	if err != nil {
		return nil, fmt.Errorf("opening vault %s: %w", path, err)
	}
	v := &Vault{path: path}
	v.state.Store(st)
	return v, nil
}

// unseal turns file bytes into a verified state. Everything that can be
// checked without keys is checked before the seal is called.
func unseal(ctx context.Context, raw []byte, seal Seal) (*state, error) {
	p, err := parseFile(raw)
	if err != nil {
		return nil, err
	}
	d, err := decodeBody(&p.body)
	if err != nil {
		return nil, err
	}
	i, err := pickSeal(ctx, seal, p.body.Seals)
	if err != nil {
		return nil, err
	}
	rootPlain, err := unwrapRoot(ctx, seal, d.seals[i])
	if err != nil {
		return nil, err
	}
	pages := 2 + pagesFor(len(d.keyring)-gcmOverhead) // root + keyring + key view
	budget := lockedPages()
	if err := budget.acquire(pages); err != nil {
		clear(rootPlain)
		return nil, err
	}
	defer budget.release(pages)
	rootEnc := memguard.NewEnclave(rootPlain) // wipes rootPlain
	k, err := unlockKeys(rootEnc, p, d)
	if err != nil {
		return nil, err
	}
	return &state{body: p.body, sum: sha256.Sum256(raw), dec: d, keys: k}, nil
}

// unlockKeys checks the file MAC and decrypts the keyring into Enclaves.
func unlockKeys(rootEnc *memguard.Enclave, p *parsedFile, d *decodedBody) (*keys, error) {
	root, err := rootEnc.Open()
	if err != nil {
		return nil, fmt.Errorf("opening the root key enclave: %w", err)
	}
	defer root.Destroy()
	mac, err := fileMAC(root.Bytes(), p.signed)
	if err != nil {
		return nil, err
	}
	if !hmac.Equal(mac, p.mac) {
		return nil, corrupt("line 3: MAC does not verify (the file was modified)")
	}
	kr := memguard.NewBuffer(len(d.keyring) - gcmOverhead)
	defer kr.Destroy()
	if err := openGCMInto(root.Bytes(), d.keyring, keyringAAD(p.body.VaultID), kr.Bytes()); err != nil {
		return nil, corrupt("keyring does not decrypt: %v", err)
	}
	terms, err := parseKeyring(kr.Bytes())
	if err != nil {
		return nil, err
	}
	for _, s := range d.secrets {
		if !slices.Contains(terms, s.term) {
			return nil, corrupt("secret %q version %d: term %d is not in the keyring", s.name, s.version, s.term)
		}
	}
	k := &keys{root: rootEnc, terms: make(map[uint32]*memguard.Enclave, len(terms)), current: terms[len(terms)-1]}
	for i, t := range terms {
		off := i*termRecordLen + 4
		k.terms[t] = memguard.NewEnclave(kr.Bytes()[off : off+keyLen]) // wipes those bytes
	}
	return k, nil
}

// Put stores value as a new version of name (version 1 if name is new),
// bound to b, and returns the version. It writes the file (generation + 1)
// under the file lock and fails with ErrConflict if the file changed since
// this Vault read it. The caller owns value and may wipe it afterwards.
func (v *Vault) Put(ctx context.Context, name string, value []byte, b Binding) (version int, err error) {
	if !validName(name) {
		return 0, fmt.Errorf("put: %w: secret name must match ^[a-z][a-z0-9_.-]{0,62}$", ErrInvalid)
	}
	if len(value) == 0 || len(value) > maxValueLen {
		return 0, fmt.Errorf("put %q: %w: value must be 1 to %d bytes, is %d", name, ErrInvalid, maxValueLen, len(value))
	}
	hosts, err := normalizeBinding(b.Hosts)
	if err != nil {
		return 0, fmt.Errorf("put %q: %w", name, err)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	st := v.state.Load()
	if st == nil {
		return 0, fmt.Errorf("put %q: %w", name, ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("put %q: %w", name, err)
	}
	unlock, err := lockFile(v.path)
	if err != nil {
		return 0, fmt.Errorf("put %q: %w", name, err)
	}
	defer unlock()
	raw, err := readFile(v.path)
	if err != nil {
		return 0, fmt.Errorf("put %q: %w", name, err)
	}
	if sha256.Sum256(raw) != st.sum {
		return 0, fmt.Errorf("put %q: %s: %w; reopen it", name, v.path, ErrConflict)
	}
	version = 1
	if cur := st.dec.current[name]; cur != nil {
		version = cur.version + 1
	}
	budget := lockedPages()
	if err := budget.acquire(putPages); err != nil {
		return 0, fmt.Errorf("put %q: %w", name, err)
	}
	defer budget.release(putPages)
	entry, err := st.keys.newSecret(st.body.VaultID, name, version, hosts, value)
	if err != nil {
		return 0, fmt.Errorf("put %q: %w", name, err)
	}
	body := st.body
	body.Generation++
	body.Secrets = append(slices.Clone(st.body.Secrets), entry)
	slices.SortFunc(body.Secrets, func(a, b secretEntry) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return a.Version - b.Version
	})
	d, err := decodeBody(&body)
	if err != nil {
		return 0, fmt.Errorf("put %q: checking the new body: %w", name, err)
	}
	out, err := st.keys.encode(&body)
	if err != nil {
		return 0, fmt.Errorf("put %q: %w", name, err)
	}
	if err := writeFileAtomic(v.path, out, true); err != nil {
		return 0, fmt.Errorf("put %q: %w", name, err)
	}
	v.state.Store(&state{body: body, sum: sha256.Sum256(out), dec: d, keys: st.keys})
	return version, nil
}

// newSecret encrypts value under a fresh data key wrapped by the current term.
func (k *keys) newSecret(vaultID, name string, version int, hosts []string, value []byte) (secretEntry, error) {
	sum, err := bindingDigest(hosts)
	if err != nil {
		return secretEntry{}, err
	}
	termKey, err := k.terms[k.current].Open()
	if err != nil {
		return secretEntry{}, fmt.Errorf("opening the term key enclave: %w", err)
	}
	dek := memguard.NewBufferRandom(keyLen)
	defer dek.Destroy()
	dekBlob, err := sealGCM(termKey.Bytes(), dek.Bytes(), dekAAD(vaultID, name, version))
	termKey.Destroy()
	if err != nil {
		return secretEntry{}, fmt.Errorf("wrapping the data key: %w", err)
	}
	valBlob, err := sealGCM(dek.Bytes(), value, valueAAD(vaultID, name, version, sum))
	if err != nil {
		return secretEntry{}, fmt.Errorf("encrypting the value: %w", err)
	}
	return secretEntry{
		Name:    name,
		Version: version,
		Created: time.Now().UTC().Truncate(time.Second),
		Hosts:   hosts,
		Term:    k.current,
		DEK:     b64.EncodeToString(dekBlob),
		Value:   b64.EncodeToString(valBlob),
	}, nil
}

// encode renders body with a MAC keyed from the root key.
func (k *keys) encode(body *fileBody) ([]byte, error) {
	root, err := k.root.Open()
	if err != nil {
		return nil, fmt.Errorf("opening the root key enclave: %w", err)
	}
	defer root.Destroy()
	return encodeFile(body, root.Bytes())
}

// List describes every stored version of every secret, sorted by name and
// then version. It never includes values. It returns nil after Close.
func (v *Vault) List() []SecretInfo {
	st := v.state.Load()
	if st == nil {
		return nil
	}
	out := make([]SecretInfo, 0, len(st.dec.secrets))
	for _, r := range st.dec.secrets {
		out = append(out, SecretInfo{Name: r.name, Version: r.version, Hosts: slices.Clone(r.hosts), Created: r.created})
	}
	return out
}

// WithSecret decrypts the current version of name into locked memory,
// refusing with ErrHostNotAllowed if host (a host name or IP address, no
// port) is not within its binding, calls fn with the bytes and then destroys
// them. fn must neither retain nor modify the slice. It returns fn's error
// unchanged; errors of its own never contain the value. Concurrent calls may
// wait for locked memory (RLIMIT_MEMLOCK), never fail for lack of it.
func (v *Vault) WithSecret(name, host string, fn func(secret []byte) error) error {
	if fn == nil {
		return fmt.Errorf("%w: nil function", ErrInvalid)
	}
	buf, release, err := v.decrypt(name, host)
	if err != nil {
		return err
	}
	defer release()
	return fn(buf.Bytes())
}

// decrypt returns the current value of name in a LockedBuffer, and the
// function that destroys it and gives back its locked pages.
func (v *Vault) decrypt(name, host string) (*memguard.LockedBuffer, func(), error) {
	if !validName(name) {
		return nil, nil, fmt.Errorf("%w: invalid secret name", ErrInvalid)
	}
	st := v.state.Load()
	if st == nil {
		return nil, nil, fmt.Errorf("secret %q: %w", name, ErrClosed)
	}
	rec := st.dec.current[name]
	if rec == nil {
		return nil, nil, fmt.Errorf("secret %q: %w", name, ErrNotFound)
	}
	h, err := normalizeHost(host)
	if err != nil {
		return nil, nil, fmt.Errorf("secret %q toward host %q: %w", name, truncate(host, 80), err)
	}
	if !bindingAllows(rec.hosts, h) {
		return nil, nil, fmt.Errorf("secret %q toward host %q: %w", name, h, ErrHostNotAllowed)
	}
	valPages := pagesFor(len(rec.value) - gcmOverhead)
	pages := 1 + valPages // term key + key view, term key + data key, data key + value
	budget := lockedPages()
	if err := budget.acquire(pages); err != nil {
		return nil, nil, fmt.Errorf("secret %q: %w", name, err)
	}
	buf, err := st.keys.openValue(st.body.VaultID, rec)
	if err != nil {
		budget.release(pages)
		return nil, nil, fmt.Errorf("secret %q version %d: %w", name, rec.version, err)
	}
	budget.release(pages - valPages)
	var once sync.Once
	return buf, func() {
		once.Do(func() {
			buf.Destroy()
			budget.release(valPages)
		})
	}, nil
}

// openValue unwraps rec's data key with its term key and decrypts the value.
// Every plaintext is in locked memory; the term key and data key are
// destroyed before it returns.
func (k *keys) openValue(vaultID string, rec *secretRec) (*memguard.LockedBuffer, error) {
	termKey, err := k.terms[rec.term].Open()
	if err != nil {
		return nil, fmt.Errorf("opening the term key enclave: %w", err)
	}
	dek := memguard.NewBuffer(keyLen)
	defer dek.Destroy()
	err = openGCMInto(termKey.Bytes(), rec.dek, dekAAD(vaultID, rec.name, rec.version), dek.Bytes())
	termKey.Destroy()
	if err != nil {
		return nil, fmt.Errorf("%w: data key does not decrypt: %v", ErrCorrupt, err)
	}
	val := memguard.NewBuffer(len(rec.value) - gcmOverhead)
	if err := openGCMInto(dek.Bytes(), rec.value, valueAAD(vaultID, rec.name, rec.version, rec.bindingSum), val.Bytes()); err != nil {
		val.Destroy()
		return nil, fmt.Errorf("%w: value does not decrypt for this name, version and binding: %v", ErrCorrupt, err)
	}
	return val, nil
}

// Generation is the file's write counter as of the last Open or Put (0 after Close).
func (v *Vault) Generation() uint64 {
	st := v.state.Load()
	if st == nil {
		return 0
	}
	return st.body.Generation
}

// Path is the vault file's path as given to Open.
func (v *Vault) Path() string { return v.path }

// DeriveKey returns HKDF-SHA256(root key, "wirken/"+label), 32 bytes, for
// other components (the audit signer). It returns nil after Close, for an
// empty label, for labels the vault uses itself ("file-mac"), or if locked
// memory is unavailable. The caller owns the result and should wipe it.
func (v *Vault) DeriveKey(label string) []byte {
	if label == "" || "wirken/"+label == fileMACInfo {
		return nil
	}
	st := v.state.Load()
	if st == nil {
		return nil
	}
	budget := lockedPages()
	if err := budget.acquire(derivePages); err != nil {
		return nil
	}
	defer budget.release(derivePages)
	root, err := st.keys.root.Open()
	if err != nil {
		return nil
	}
	defer root.Destroy()
	k, err := deriveKey(root.Bytes(), "wirken/"+label)
	if err != nil {
		return nil
	}
	return k
}

// Close makes the Vault unusable and drops its key material. Calls already
// running finish first with the keys they hold. memguard cannot wipe an
// Enclave, so the encrypted key copies stay in memory until the garbage
// collector reclaims them; memguard.Purge (at process exit) destroys the key
// that encrypts them.
func (v *Vault) Close() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.state.Store(nil)
}
