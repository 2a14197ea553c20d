package vault

import (
	"context"
	"encoding/binary"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/awnumar/memguard"
)

// Key rotation. Each operation is one atomic write (generation + 1) that
// Reload in other processes picks up like any other change. None of them
// re-encrypts a secret value.

// RotateKeyring adds a new keyring term, rewraps every data key under it
// and drops the old terms, all in one write; values are not touched. It
// returns the new term. Readers still on the previous snapshot keep its
// term keys until they finish.
func (v *Vault) RotateKeyring(ctx context.Context) (term uint32, err error) {
	err = v.mutate(ctx, func(st *state) (*fileBody, *memguard.Enclave, error) {
		term = st.keys.current + 1
		if term == 0 {
			return nil, nil, fmt.Errorf("%w: keyring term counter is exhausted", ErrInvalid)
		}
		body := st.body
		body.Secrets = slices.Clone(st.body.Secrets)
		pages := 4 + createPages // new term key, old term key + view, data key; root + keyring
		budget := lockedPages()
		if err := budget.acquire(pages); err != nil {
			return nil, nil, err
		}
		defer budget.release(pages)
		newKey := memguard.NewBufferRandom(keyLen)
		defer newKey.Destroy()
		if err := st.keys.rewrapDEKs(st.body.VaultID, st.dec.secrets, body.Secrets, newKey.Bytes(), term); err != nil {
			return nil, nil, err
		}
		kr := memguard.NewBuffer(termRecordLen)
		defer kr.Destroy()
		binary.BigEndian.PutUint32(kr.Bytes(), term)
		copy(kr.Bytes()[4:], newKey.Bytes())
		blob, err := sealWithEnclave(st.keys.root, kr.Bytes(), keyringAAD(st.body.VaultID))
		if err != nil {
			return nil, nil, fmt.Errorf("encrypting the keyring: %w", err)
		}
		body.Keyring = b64.EncodeToString(blob)
		return &body, st.keys.root, nil
	})
	if err != nil {
		return 0, fmt.Errorf("rotating the keyring: %w", err)
	}
	return term, nil
}

// rewrapDEKs unwraps each data key with its term key and wraps it again
// under newKey as term newTerm, writing the results into out (the same
// secrets, in the same order as recs).
func (k *keys) rewrapDEKs(vaultID string, recs []*secretRec, out []secretEntry, newKey []byte, newTerm uint32) error {
	dek := memguard.NewBuffer(keyLen)
	defer dek.Destroy()
	for i, r := range recs {
		if out[i].Name != r.name || out[i].Version != r.version {
			return fmt.Errorf("rewrapping data keys: entry %d does not match its record", i)
		}
		tk, err := k.terms[r.term].Open()
		if err != nil {
			return fmt.Errorf("opening the term key enclave: %w", err)
		}
		aad := dekAAD(vaultID, r.name, r.version)
		err = openGCMInto(tk.Bytes(), r.dek, aad, dek.Bytes())
		tk.Destroy()
		if err != nil {
			return corrupt("secret %q version %d: data key does not decrypt: %v", r.name, r.version, err)
		}
		blob, err := sealGCM(newKey, dek.Bytes(), aad)
		if err != nil {
			return fmt.Errorf("rewrapping the data key of %q: %w", r.name, err)
		}
		out[i].DEK = b64.EncodeToString(blob)
		out[i].Term = newTerm
	}
	return nil
}

// sealWithEnclave is sealGCM under the key held in e.
func sealWithEnclave(e *memguard.Enclave, plaintext, aad []byte) ([]byte, error) {
	key, err := e.Open()
	if err != nil {
		return nil, fmt.Errorf("opening the key enclave: %w", err)
	}
	defer key.Destroy()
	return sealGCM(key.Bytes(), plaintext, aad)
}

// RotateRoot makes a new root key, encrypts the keyring under it and wraps
// it with every seal given (each proven to unwrap it), which replace all
// seal entries of the file: entries of other seals would still unwrap the
// old root, so they go. With no seals it uses the seal given to Open. An
// entry keeps its ID when the same seal had one before. Keys derived with
// DeriveKey change with the root.
func (v *Vault) RotateRoot(ctx context.Context, seals ...Seal) error {
	if len(seals) == 0 {
		seals = []Seal{v.seal}
	}
	if len(seals) > maxSeals {
		return fmt.Errorf("rotating the root key: %w: at most %d seals", ErrInvalid, maxSeals)
	}
	for i, s := range seals {
		if s == nil {
			return fmt.Errorf("rotating the root key: %w: seal %d is nil", ErrInvalid, i)
		}
	}
	err := v.mutate(ctx, func(st *state) (*fileBody, *memguard.Enclave, error) {
		terms := slices.Sorted(maps.Keys(st.keys.terms))
		pages := 2 + 1 + pagesFor(len(terms)*termRecordLen) // new root, term + view, keyring
		budget := lockedPages()
		if err := budget.acquire(pages); err != nil {
			return nil, nil, err
		}
		defer budget.release(pages)
		root := memguard.NewBufferRandom(keyLen)
		defer root.Destroy()
		body := st.body
		body.Seals = nil
		next := nextSealID(st.body.Seals)
		for _, s := range seals {
			id, err := reuseSealID(ctx, s, st.body.Seals, body.Seals)
			if err != nil {
				return nil, nil, err
			}
			if id == "" {
				id, next = next, bumpSealID(next)
			}
			e, err := wrapRoot(ctx, s, root.Bytes(), id)
			if err != nil {
				return nil, nil, err
			}
			for _, have := range body.Seals {
				if have.matches(e.Type, e.KeyID, e.Hint) {
					return nil, nil, fmt.Errorf("%w: the same seal (%s %s) is given twice", ErrInvalid, e.Type, e.KeyID)
				}
			}
			body.Seals = append(body.Seals, e)
		}
		kr := memguard.NewBuffer(len(terms) * termRecordLen)
		defer kr.Destroy()
		for i, t := range terms {
			rec := kr.Bytes()[i*termRecordLen : (i+1)*termRecordLen]
			binary.BigEndian.PutUint32(rec, t)
			tk, err := st.keys.terms[t].Open()
			if err != nil {
				return nil, nil, fmt.Errorf("opening the term key enclave: %w", err)
			}
			copy(rec[4:], tk.Bytes())
			tk.Destroy()
		}
		blob, err := sealGCM(root.Bytes(), kr.Bytes(), keyringAAD(st.body.VaultID))
		if err != nil {
			return nil, nil, fmt.Errorf("encrypting the keyring: %w", err)
		}
		body.Keyring = b64.EncodeToString(blob)
		return &body, root.Seal(), nil // Seal destroys root
	})
	if err != nil {
		return fmt.Errorf("rotating the root key: %w", err)
	}
	return nil
}

// reuseSealID returns the ID of the old entry written by seal s, unless an
// entry already taken for the new file has it; "" if there is none.
func reuseSealID(ctx context.Context, s Seal, old, taken []sealEntry) (string, error) {
	typ, kid, err := sealIdentity(ctx, s)
	if err != nil {
		return "", err
	}
	hint := sealHint(s)
	for _, e := range old {
		if e.matches(typ, kid, hint) && !slices.ContainsFunc(taken, func(t sealEntry) bool { return t.ID == e.ID }) {
			return e.ID, nil
		}
	}
	return "", nil
}

// nextSealID is "s<n+1>" for the highest "s<n>" among entries.
func nextSealID(entries []sealEntry) string {
	n := 0
	for _, e := range entries {
		if rest, ok := strings.CutPrefix(e.ID, "s"); ok {
			if i, err := strconv.Atoi(rest); err == nil && i > n && i < 1<<30 {
				n = i
			}
		}
	}
	return "s" + strconv.Itoa(n+1)
}

func bumpSealID(id string) string {
	i, _ := strconv.Atoi(strings.TrimPrefix(id, "s"))
	return "s" + strconv.Itoa(i+1)
}

// Rewrap changes which seals can unseal the vault without touching any
// secret, the keyring or the root key: it wraps the root key with add (if
// not nil) as a new seal entry, after proving the entry unwraps, and drops
// the entries whose IDs are in remove. At least one entry must remain. It
// refuses to add a second entry for a seal that already has one (remove the
// old one in the same call to replace it) and to remove an unknown ID.
func (v *Vault) Rewrap(ctx context.Context, add Seal, remove []string) error {
	if add == nil && len(remove) == 0 {
		return fmt.Errorf("rewrap: %w: nothing to add or remove", ErrInvalid)
	}
	err := v.mutate(ctx, func(st *state) (*fileBody, *memguard.Enclave, error) {
		body := st.body
		body.Seals = slices.Clone(st.body.Seals)
		for _, id := range remove {
			i := slices.IndexFunc(body.Seals, func(e sealEntry) bool { return e.ID == id })
			if i < 0 {
				return nil, nil, fmt.Errorf("%w: no seal entry %q", ErrInvalid, truncate(id, 64))
			}
			body.Seals = slices.Delete(body.Seals, i, i+1)
		}
		if add != nil {
			typ, kid, err := sealIdentity(ctx, add)
			if err != nil {
				return nil, nil, err
			}
			hint := sealHint(add)
			for _, e := range body.Seals {
				if e.matches(typ, kid, hint) {
					return nil, nil, fmt.Errorf("%w: seal entry %q is already this seal (%s %s)", ErrExists, e.ID, typ, kid)
				}
			}
			if len(body.Seals) >= maxSeals {
				return nil, nil, fmt.Errorf("%w: at most %d seal entries", ErrInvalid, maxSeals)
			}
			pages := macPages
			budget := lockedPages()
			if err := budget.acquire(pages); err != nil {
				return nil, nil, err
			}
			defer budget.release(pages)
			root, err := st.keys.root.Open()
			if err != nil {
				return nil, nil, fmt.Errorf("opening the root key enclave: %w", err)
			}
			defer root.Destroy()
			e, err := wrapRoot(ctx, add, root.Bytes(), nextSealID(st.body.Seals))
			if err != nil {
				return nil, nil, err
			}
			body.Seals = append(body.Seals, e)
		}
		if len(body.Seals) == 0 {
			return nil, nil, fmt.Errorf("%w: that would leave no seal entry", ErrInvalid)
		}
		return &body, st.keys.root, nil
	})
	if err != nil {
		return fmt.Errorf("rewrap: %w", err)
	}
	return nil
}
