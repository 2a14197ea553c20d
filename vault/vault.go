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
	"maps"
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
	macPages    = 2 // root + view
)

// keepVersions is how many versions of a secret the file keeps: the current
// one and the ones before it, for the record (Show). Older ones are dropped
// by the next write of that secret.
const keepVersions = 3

// Vault is an unsealed vault file. It is safe for concurrent use: reads
// (List, Show, WithSecret, Reveal…) work on an immutable snapshot and never
// block one another; writes, Reload and Close are serialised.
type Vault struct {
	path  string
	seal  Seal       // the seal given to Open; Reload uses it after a root rotation
	mu    sync.Mutex // serialises writes, Reload and Close
	state atomic.Pointer[state]
	done  chan struct{} // closed by Close; stops Watch
}

// state is one verified version of the file (a snapshot). It is never
// modified; a change installs a new one.
type state struct {
	body fileBody
	sum  [32]byte // SHA-256 of the file bytes it came from
	dec  *decodedBody
	keys *keys
	// cache holds the values in use, decrypted (valuecache.go); retired when the snapshot is
	// replaced.
	cache valueCache
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
// checked with one Decrypt call before the file is written. More seals are
// added with Rewrap.
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
	removeStaleTemps(path)
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
	entry, err := wrapRoot(ctx, seal, root.Bytes(), "s1")
	if err != nil {
		return nil, err
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
		Seals:      []sealEntry{entry},
		Keyring:    b64.EncodeToString(krBlob),
		Secrets:    []secretEntry{},
	}
	if _, err := decodeBody(body); err != nil {
		return nil, fmt.Errorf("checking the new vault: %w", err)
	}
	return encodeFile(body, root.Bytes())
}

// wrapRoot wraps root with seal into a seal entry with the given id, and
// proves the entry works by unwrapping it again.
func wrapRoot(ctx context.Context, seal Seal, root []byte, id string) (sealEntry, error) {
	blob, err := sealEncrypt(ctx, seal, root)
	if err != nil {
		return sealEntry{}, fmt.Errorf("wrapping the root key with the seal: %w", err)
	}
	wrapped, err := proto.Marshal(blob)
	if err != nil {
		return sealEntry{}, fmt.Errorf("encoding the wrapped root key: %w", err)
	}
	check, err := unwrapRoot(ctx, seal, wrapped)
	if err != nil {
		return sealEntry{}, fmt.Errorf("checking the seal: %w", err)
	}
	same := subtle.ConstantTimeCompare(check, root) == 1
	clear(check)
	if !same {
		return sealEntry{}, fmt.Errorf("%w: the seal returned a different root key", ErrSeal)
	}
	typ, kid, err := sealIdentity(ctx, seal)
	if err != nil {
		return sealEntry{}, err
	}
	e := sealEntry{ID: id, Type: typ, KeyID: kid, Hint: sealHint(seal), Root: b64.EncodeToString(wrapped)}
	if len(e.KeyID) > maxSealFieldLn || len(e.Hint) > maxSealFieldLn || !printable(e.KeyID) || !printable(e.Hint) {
		return sealEntry{}, fmt.Errorf("%w: the seal's key id or hint is too long or not printable ASCII", ErrInvalid)
	}
	return e, nil
}

// Open reads the vault at path, unwraps its root key with seal (one KMS
// call in the usual case), and verifies the whole file: the keyring, every
// data key and value against its name, version and binding, and the file
// MAC. A file that is not exactly as this package wrote it is refused with
// an error naming the file and what failed (ErrCorrupt,
// ErrUnsupportedVersion, ErrSeal); a file older than WithMinGeneration is
// refused with ErrRollback unless WithAcceptRollback is given.
func Open(ctx context.Context, path string, seal Seal, opts ...OpenOption) (*Vault, error) {
	var o openOptions
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
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
	if gen := st.body.Generation; gen < o.minGeneration && !o.acceptRollback {
		return nil, fmt.Errorf("opening vault %s: %w: the file is generation %d, the last one recorded is %d", path, ErrRollback, gen, o.minGeneration)
	}
	v := &Vault{path: path, seal: seal, done: make(chan struct{})}
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
	root, err := unsealRoot(ctx, seal, p.body.Seals, d.seals)
	if err != nil {
		return nil, err
	}
	return verifyFile(raw, p, d, root)
}

// verifyFile checks a parsed file against a root key, most specific check
// first so the error names what failed: the keyring, then every data key and
// value (their additional data binds vault, name, version and binding), then
// the MAC over everything else (generation, seal entries, names, order).
func verifyFile(raw []byte, p *parsedFile, d *decodedBody, root *memguard.Enclave) (*state, error) {
	k, err := openKeyring(root, p.body.VaultID, d.keyring)
	if err != nil {
		return nil, err
	}
	if err := k.verifySecrets(p.body.VaultID, d.secrets); err != nil {
		return nil, err
	}
	if err := k.checkMAC(p.signed, p.mac); err != nil {
		return nil, err
	}
	return &state{body: p.body, sum: sha256.Sum256(raw), dec: d, keys: k}, nil
}

// openKeyring decrypts the keyring with the root key into term Enclaves.
func openKeyring(rootEnc *memguard.Enclave, vaultID string, blob []byte) (*keys, error) {
	pages := 2 + pagesFor(len(blob)-gcmOverhead) // root + view, keyring
	budget := lockedPages()
	if err := budget.acquire(pages); err != nil {
		return nil, err
	}
	defer budget.release(pages)
	root, err := rootEnc.Open()
	if err != nil {
		return nil, fmt.Errorf("opening the root key enclave: %w", err)
	}
	defer root.Destroy()
	kr := memguard.NewBuffer(len(blob) - gcmOverhead)
	defer kr.Destroy()
	if err := openGCMInto(root.Bytes(), blob, keyringAAD(vaultID), kr.Bytes()); err != nil {
		return nil, corrupt("keyring does not decrypt with the unsealed root key: %v", err)
	}
	terms, err := parseKeyring(kr.Bytes())
	if err != nil {
		return nil, err
	}
	k := &keys{root: rootEnc, terms: make(map[uint32]*memguard.Enclave, len(terms)), current: terms[len(terms)-1]}
	for i, t := range terms {
		off := i*termRecordLen + 4
		k.terms[t] = memguard.NewEnclave(kr.Bytes()[off : off+keyLen]) // wipes those bytes
	}
	return k, nil
}

// verifySecrets decrypts every stored data key and value into locked scratch
// memory and wipes it: a snapshot is only installed if every secret in it
// opens. Each term key is opened once.
func (k *keys) verifySecrets(vaultID string, recs []*secretRec) error {
	if len(recs) == 0 {
		return nil
	}
	pages := 3 + pagesFor(maxValueLen) // term key + view, data key, value scratch
	budget := lockedPages()
	if err := budget.acquire(pages); err != nil {
		return err
	}
	defer budget.release(pages)
	dek := memguard.NewBuffer(keyLen)
	defer dek.Destroy()
	scratch := memguard.NewBuffer(maxValueLen)
	defer scratch.Destroy()
	byTerm := make(map[uint32][]*secretRec)
	for _, r := range recs {
		if _, ok := k.terms[r.term]; !ok {
			return corrupt("secret %q version %d: term %d is not in the keyring", r.name, r.version, r.term)
		}
		byTerm[r.term] = append(byTerm[r.term], r)
	}
	for _, term := range slices.Sorted(maps.Keys(byTerm)) {
		rs := byTerm[term]
		tk, err := k.terms[term].Open()
		if err != nil {
			return fmt.Errorf("opening the term key enclave: %w", err)
		}
		for _, r := range rs {
			if err := openGCMInto(tk.Bytes(), r.dek, dekAAD(vaultID, r.name, r.version), dek.Bytes()); err != nil {
				tk.Destroy()
				return corrupt("secret %q version %d: data key does not decrypt with term %d: %v", r.name, r.version, r.term, err)
			}
			n := len(r.value) - gcmOverhead
			if err := openGCMInto(dek.Bytes(), r.value, valueAAD(vaultID, r.name, r.version, r.bindingSum), scratch.Bytes()[:n]); err != nil {
				tk.Destroy()
				return corrupt("secret %q version %d: value does not decrypt for this name, version and binding: %v", r.name, r.version, err)
			}
		}
		tk.Destroy()
	}
	return nil
}

// checkMAC verifies the file MAC, keyed from the root key.
func (k *keys) checkMAC(signed, want []byte) error {
	budget := lockedPages()
	if err := budget.acquire(macPages); err != nil {
		return err
	}
	defer budget.release(macPages)
	root, err := k.root.Open()
	if err != nil {
		return fmt.Errorf("opening the root key enclave: %w", err)
	}
	defer root.Destroy()
	mac, err := fileMAC(root.Bytes(), signed)
	if err != nil {
		return err
	}
	if !hmac.Equal(mac, want) {
		return corrupt("line 3: MAC does not verify (a field outside the encrypted data was changed: generation, seal entries, names, order)")
	}
	return nil
}

// mutate is every write: under v.mu and the file lock it checks that the
// file is still the snapshot v serves, lets change build the next body
// (keyed by the returned root key), bumps the generation, verifies the
// result exactly as Open would, writes it atomically and installs it.
func (v *Vault) mutate(ctx context.Context, change func(st *state) (*fileBody, *memguard.Enclave, error)) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	st := v.state.Load()
	if st == nil {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	unlock, err := lockFile(v.path)
	if err != nil {
		return err
	}
	defer unlock()
	raw, err := readFile(v.path)
	if err != nil {
		return err
	}
	if sha256.Sum256(raw) != st.sum {
		return fmt.Errorf("%s: %w; reload or reopen it", v.path, ErrConflict)
	}
	removeStaleTemps(v.path)
	body, root, err := change(st)
	if err != nil {
		return err
	}
	body.Generation = st.body.Generation + 1
	sortSecrets(body.Secrets)
	out, err := encodeWithEnclave(body, root)
	if err != nil {
		return err
	}
	p, err := parseFile(out)
	if err != nil {
		return fmt.Errorf("checking the new file: %w", err)
	}
	d, err := decodeBody(&p.body)
	if err != nil {
		return fmt.Errorf("checking the new file: %w", err)
	}
	next, err := verifyFile(out, p, d, root)
	if err != nil {
		return fmt.Errorf("checking the new file: %w", err)
	}
	if err := writeFileAtomic(v.path, out, true); err != nil {
		return err
	}
	v.state.Store(next)
	st.cache.retire()
	return nil
}

func sortSecrets(s []secretEntry) {
	slices.SortFunc(s, func(a, b secretEntry) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return a.Version - b.Version
	})
}

// encodeWithEnclave renders body with a MAC keyed from the root in rootEnc.
func encodeWithEnclave(body *fileBody, rootEnc *memguard.Enclave) ([]byte, error) {
	budget := lockedPages()
	if err := budget.acquire(macPages); err != nil {
		return nil, err
	}
	defer budget.release(macPages)
	root, err := rootEnc.Open()
	if err != nil {
		return nil, fmt.Errorf("opening the root key enclave: %w", err)
	}
	defer root.Destroy()
	return encodeFile(body, root.Bytes())
}

// Put stores value as a new version of name (version 1 if name is new),
// bound to b, and returns the version. The file keeps the last few versions
// (keepVersions); WithSecret always serves the newest. It writes the file
// (generation + 1) under the file lock and fails with ErrConflict if the
// file changed since this Vault last read it. The caller owns value and may
// wipe it afterwards.
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
	err = v.mutate(ctx, func(st *state) (*fileBody, *memguard.Enclave, error) {
		version = 1
		if cur := st.dec.current[name]; cur != nil {
			version = cur.version + 1
		}
		budget := lockedPages()
		if err := budget.acquire(putPages); err != nil {
			return nil, nil, err
		}
		defer budget.release(putPages)
		entry, err := st.keys.newSecret(st.body.VaultID, name, version, hosts, value)
		if err != nil {
			return nil, nil, err
		}
		body := st.body
		body.Secrets = slices.DeleteFunc(slices.Clone(st.body.Secrets), func(s secretEntry) bool {
			return s.Name == name && s.Version <= version-keepVersions
		})
		body.Secrets = append(body.Secrets, entry)
		return &body, st.keys.root, nil
	})
	if err != nil {
		return 0, fmt.Errorf("put %q: %w", name, err)
	}
	return version, nil
}

// Remove deletes every stored version of name. Calls already inside
// WithSecret finish with the value they have.
func (v *Vault) Remove(ctx context.Context, name string) error {
	if !validName(name) {
		return fmt.Errorf("remove: %w: invalid secret name", ErrInvalid)
	}
	err := v.mutate(ctx, func(st *state) (*fileBody, *memguard.Enclave, error) {
		if st.dec.current[name] == nil {
			return nil, nil, ErrNotFound
		}
		body := st.body
		body.Secrets = slices.DeleteFunc(slices.Clone(st.body.Secrets), func(s secretEntry) bool { return s.Name == name })
		return &body, st.keys.root, nil
	})
	if err != nil {
		return fmt.Errorf("remove %q: %w", name, err)
	}
	return nil
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

// List describes every stored version of every secret, sorted by name and
// then version. It never includes values. It returns nil after Close.
func (v *Vault) List() []SecretInfo {
	st := v.state.Load()
	if st == nil {
		return nil
	}
	out := make([]SecretInfo, 0, len(st.dec.secrets))
	for _, r := range st.dec.secrets {
		out = append(out, r.info())
	}
	return out
}

func (r *secretRec) info() SecretInfo {
	return SecretInfo{Name: r.name, Version: r.version, Hosts: slices.Clone(r.hosts), Created: r.created}
}

// WithSecret decrypts the current version of name into locked memory,
// refusing with ErrHostNotAllowed if host (a host name or IP address, no
// port) is not within its binding, calls fn with the bytes and then destroys
// them. fn must neither retain nor modify the slice. It returns fn's error
// unchanged; errors of its own never contain the value. Concurrent calls may
// wait for locked memory (RLIMIT_MEMLOCK), never fail for lack of it. A call
// works on the snapshot that is live when it starts, so a concurrent
// rotation or Reload never mixes versions within one call.
func (v *Vault) WithSecret(name, host string, fn func(secret []byte) error) error {
	if fn == nil {
		return fmt.Errorf("%w: nil function", ErrInvalid)
	}
	buf, _, release, err := v.decrypt(name, host)
	if err != nil {
		return err
	}
	defer release()
	return fn(buf.Bytes())
}

// WithSecretVersion is WithSecret that also tells fn which version of the secret it was given
// (the one current in the snapshot the value came from).
func (v *Vault) WithSecretVersion(name, host string, fn func(secret []byte, version int) error) error {
	if fn == nil {
		return fmt.Errorf("%w: nil function", ErrInvalid)
	}
	buf, version, release, err := v.decrypt(name, host)
	if err != nil {
		return err
	}
	defer release()
	return fn(buf.Bytes(), version)
}

// decrypt returns the current value of name in a LockedBuffer, its version, and
// the function that destroys it and gives back its locked pages.
func (v *Vault) decrypt(name, host string) (*memguard.LockedBuffer, int, func(), error) {
	if !validName(name) {
		return nil, 0, nil, fmt.Errorf("%w: invalid secret name", ErrInvalid)
	}
	st := v.state.Load()
	if st == nil {
		return nil, 0, nil, fmt.Errorf("secret %q: %w", name, ErrClosed)
	}
	rec := st.dec.current[name]
	if rec == nil {
		return nil, 0, nil, fmt.Errorf("secret %q: %w", name, ErrNotFound)
	}
	h, err := normalizeHost(host)
	if err != nil {
		return nil, 0, nil, fmt.Errorf("secret %q toward host %q: %w", name, truncate(host, 80), err)
	}
	if !bindingAllows(rec.hosts, h) {
		return nil, 0, nil, fmt.Errorf("secret %q toward host %q: %w", name, h, ErrHostNotAllowed)
	}
	if e := st.cache.acquire(rec); e != nil {
		return e.buf, rec.version, (&cacheRef{c: &st.cache, e: e}).release, nil
	}
	valPages := pagesFor(len(rec.value) - gcmOverhead)
	pages := 1 + valPages // term key + key view, term key + data key, data key + value
	budget := lockedPages()
	if err := budget.acquire(pages); err != nil {
		return nil, 0, nil, fmt.Errorf("secret %q: %w", name, err)
	}
	buf, err := st.keys.openValue(st.body.VaultID, rec)
	if err != nil {
		budget.release(pages)
		return nil, 0, nil, fmt.Errorf("secret %q version %d: %w", name, rec.version, err)
	}
	budget.release(pages - valPages)
	if budget.mayKeep() {
		buf.Freeze() // fn must not modify it; a write faults instead of corrupting the value
		e, added := st.cache.add(rec, buf, valPages)
		if !added && e != nil { // another call cached it first
			buf.Destroy()
			budget.release(valPages)
		}
		if e != nil {
			return e.buf, rec.version, (&cacheRef{c: &st.cache, e: e}).release, nil
		}
	}
	return buf, rec.version, sync.OnceFunc(func() {
		buf.Destroy()
		budget.release(valPages)
	}), nil
}

// openValue unwraps rec's data key with its term key and decrypts the value.
// Every plaintext is in locked memory; the term key and data key are
// destroyed before it returns.
func (k *keys) openValue(vaultID string, rec *secretRec) (*memguard.LockedBuffer, error) {
	valueOpens.Add(1)
	tk := k.terms[rec.term]
	if tk == nil { // verifySecrets rules this out; stay safe regardless
		return nil, fmt.Errorf("%w: term %d is not in the keyring", ErrCorrupt, rec.term)
	}
	termKey, err := tk.Open()
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

// Generation is the write counter of the live snapshot (0 after Close). It
// tells callers which snapshot serves: it changes with every write and with
// every Reload that installs a new file.
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
// other components (the audit signer). It changes when the root key does
// (RotateRoot). It returns nil after Close, for an empty label, for labels
// the vault uses itself ("file-mac"), or if locked memory is unavailable.
// The caller owns the result and should wipe it.
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
// that encrypts them. Close does not finalize the seal: the caller owns it
// (see FinalizeSeal).
func (v *Vault) Close() {
	v.mu.Lock()
	defer v.mu.Unlock()
	if st := v.state.Swap(nil); st != nil {
		st.cache.retire()
		if v.done != nil {
			close(v.done)
		}
	}
}
