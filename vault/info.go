package vault

import (
	"fmt"
	"slices"
)

// Read-only views of the live snapshot. None of them includes a secret value
// or anything derived from one.

// SealEntry describes one seal entry of the file: one wrapping of the root
// key; any one entry unseals.
type SealEntry struct {
	ID    string // "s1", "s2"…: what Rewrap's remove takes
	Type  string // the go-kms-wrapping type: "aead", "transit", "pkcs11"…
	KeyID string // the key ID the seal reported when it wrapped the root
	Hint  string // which KMS key, in words (seals from NewSeal); never a credential
}

// SealEntries lists the file's seal entries in file order (nil after Close).
func (v *Vault) SealEntries() []SealEntry {
	st := v.state.Load()
	if st == nil {
		return nil
	}
	return sealEntries(st)
}

func sealEntries(st *state) []SealEntry {
	out := make([]SealEntry, 0, len(st.body.Seals))
	for _, e := range st.body.Seals {
		out = append(out, SealEntry{ID: e.ID, Type: e.Type, KeyID: e.KeyID, Hint: e.Hint})
	}
	return out
}

// SecretDetails is what Show tells about one secret: metadata only.
type SecretDetails struct {
	SecretInfo              // the current version, the one WithSecret serves
	Term       uint32       // the keyring term whose key wraps its data key
	Versions   []SecretInfo // every stored version, oldest first; the last is the current one
}

// Show describes the secret name without decrypting anything.
func (v *Vault) Show(name string) (SecretDetails, error) {
	if !validName(name) {
		return SecretDetails{}, fmt.Errorf("show: %w: invalid secret name", ErrInvalid)
	}
	st := v.state.Load()
	if st == nil {
		return SecretDetails{}, fmt.Errorf("show %q: %w", name, ErrClosed)
	}
	cur := st.dec.current[name]
	if cur == nil {
		return SecretDetails{}, fmt.Errorf("show %q: %w", name, ErrNotFound)
	}
	d := SecretDetails{SecretInfo: cur.info(), Term: cur.term}
	for _, r := range st.dec.secrets {
		if r.name == name {
			d.Versions = append(d.Versions, r.info())
		}
	}
	return d, nil
}

// Status summarises the live snapshot.
type Status struct {
	Path       string
	VaultID    string
	Generation uint64
	Seals      []SealEntry
	Terms      int    // keyring terms held
	Term       uint32 // the term new data keys are wrapped with
	Secrets    int    // secret names
	Versions   int    // stored versions, all secrets together
}

// Status describes the live snapshot; it fails only after Close.
func (v *Vault) Status() (Status, error) {
	st := v.state.Load()
	if st == nil {
		return Status{}, fmt.Errorf("status: %w", ErrClosed)
	}
	return Status{
		Path:       v.path,
		VaultID:    st.body.VaultID,
		Generation: st.body.Generation,
		Seals:      sealEntries(st),
		Terms:      len(st.keys.terms),
		Term:       st.keys.current,
		Secrets:    len(st.dec.current),
		Versions:   len(st.dec.secrets),
	}, nil
}

// Versions returns the live snapshot's generation and the current version of
// each secret, read from one snapshot. Keep the map from one call and pass
// it with the next one's to Changed to learn which credentials rotated.
func (v *Vault) Versions() (generation uint64, current map[string]int) {
	st := v.state.Load()
	if st == nil {
		return 0, nil
	}
	current = make(map[string]int, len(st.dec.current))
	for name, r := range st.dec.current {
		current[name] = r.version
	}
	return st.body.Generation, current
}

// Changed lists, sorted, the names whose current version differs between
// two Versions maps: rotated, added or removed. A daemon closes the idle
// upstream connections of each (their HPACK tables hold the old value).
func Changed(before, after map[string]int) []string {
	var out []string
	for name, ver := range before {
		if after[name] != ver {
			out = append(out, name)
		}
	}
	for name := range after {
		if _, ok := before[name]; !ok {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}
