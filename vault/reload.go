package vault

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Reload re-reads the file and, if it changed, verifies all of it exactly
// as Open does before installing it as the live snapshot; readers never
// block and calls already running finish with the snapshot they started
// with. A file that does not verify, belongs to another vault, or is not
// newer than the live snapshot (ErrRollback) is refused with an error
// naming the file and what failed, and the live snapshot keeps serving.
//
// The root key in memory is reused when the file still holds one of the
// live snapshot's wrapped root keys (after Put, Remove, RotateKeyring or
// Rewrap); after RotateRoot the seal given to Open unwraps the new one, one
// KMS call, and must therefore still have an entry in the file.
func (v *Vault) Reload(ctx context.Context) (changed bool, err error) {
	_, changed, err = v.reload(ctx)
	return changed, err
}

func (v *Vault) reload(ctx context.Context) (gen uint64, changed bool, err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	st := v.state.Load()
	if st == nil {
		return 0, false, fmt.Errorf("reloading vault %s: %w", v.path, ErrClosed)
	}
	raw, err := readFile(v.path)
	if err != nil {
		return st.body.Generation, false, fmt.Errorf("reloading vault: %w", err)
	}
	if sha256.Sum256(raw) == st.sum {
		return st.body.Generation, false, nil
	}
	next, err := v.verifyNext(ctx, st, raw)
	if err != nil {
		return st.body.Generation, false, fmt.Errorf("reloading vault %s: %w (still serving generation %d)", v.path, err, st.body.Generation)
	}
	v.state.Store(next)
	st.cache.retire()
	return next.body.Generation, true, nil
}

// verifyNext checks that raw is a valid successor of st.
func (v *Vault) verifyNext(ctx context.Context, st *state, raw []byte) (*state, error) {
	p, err := parseFile(raw)
	if err != nil {
		return nil, err
	}
	d, err := decodeBody(&p.body)
	if err != nil {
		return nil, err
	}
	if p.body.VaultID != st.body.VaultID {
		return nil, corrupt("vault_id is %s, the open vault is %s: another vault was put in its place", p.body.VaultID, st.body.VaultID)
	}
	root := st.keys.root
	if !sharesWrappedRoot(d.seals, st.dec.seals) {
		if root, err = unsealRoot(ctx, v.seal, p.body.Seals, d.seals); err != nil {
			return nil, err
		}
	}
	// Verify first, so a tampered file is named as such; a genuine but older
	// file then fails the generation check.
	next, err := verifyFile(raw, p, d, root)
	if err != nil {
		return nil, err
	}
	switch gen := p.body.Generation; {
	case gen < st.body.Generation:
		return nil, fmt.Errorf("%w: the file is generation %d, older than the live %d", ErrRollback, gen, st.body.Generation)
	case gen == st.body.Generation:
		return nil, fmt.Errorf("%w: the file claims generation %d, which is live with different contents", ErrRollback, gen)
	}
	return next, nil
}

// sharesWrappedRoot reports whether a wrapped root key of the new file is
// byte for byte one of the live snapshot's, which all wrap the live root key.
func sharesWrappedRoot(next, live [][]byte) bool {
	for _, n := range next {
		if slices.ContainsFunc(live, func(l []byte) bool { return string(l) == string(n) }) {
			return true
		}
	}
	return false
}

// watchDebounce is how long Watch waits after the last event on the vault
// file before reloading: a writer's rename arrives as a short burst.
var watchDebounce = 100 * time.Millisecond

// Watch follows changes to the vault file with fsnotify on its directory
// (a writer replaces the file by rename) and calls Reload after each burst
// of events. After every attempt that installed a new snapshot it calls fn
// with the new generation and a nil error; after every refused file it
// calls fn with the generation still serving and the error. Unchanged
// files (this Vault's own writes) are not reported. fn runs on Watch's
// goroutine; a slow fn delays the next reload.
//
// Watch reloads once when it starts, so a change made between Open and
// Watch is not missed. It blocks until ctx is done (and then returns nil)
// or the Vault is closed (ErrClosed), or fails if the directory cannot be
// watched. SIGHUP and control-socket triggers should call Reload directly.
func (v *Vault) Watch(ctx context.Context, fn func(gen uint64, err error)) error {
	if fn == nil {
		return fmt.Errorf("watching vault: %w: nil function", ErrInvalid)
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watching vault %s: %w", v.path, err)
	}
	defer w.Close()
	dir, base := filepath.Dir(v.path), filepath.Base(v.path)
	if err := w.Add(dir); err != nil {
		return fmt.Errorf("watching directory %s: %w", dir, err)
	}
	report := func() error {
		gen, changed, err := v.reload(ctx)
		if errors.Is(err, ErrClosed) {
			return err
		}
		if err != nil || changed {
			fn(gen, err)
		}
		return nil
	}
	if err := report(); err != nil {
		return err
	}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-v.done:
			return fmt.Errorf("watching vault %s: %w", v.path, ErrClosed)
		case ev, ok := <-w.Events:
			if !ok {
				return fmt.Errorf("watching directory %s: event channel closed", dir)
			}
			if filepath.Base(ev.Name) == base {
				timer.Reset(watchDebounce)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return fmt.Errorf("watching directory %s: error channel closed", dir)
			}
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				timer.Reset(watchDebounce) // events were lost: look at the file anyway
				continue
			}
			fn(v.Generation(), fmt.Errorf("watching directory %s: %w", dir, err))
		case <-timer.C:
			if err := report(); err != nil {
				return err
			}
		}
	}
}
