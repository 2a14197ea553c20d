package vault

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// daemonAndCLI opens the same vault twice: "daemon" serves, "cli" writes,
// as the daemon and `wirken vault` processes do.
func daemonAndCLI(t *testing.T) (daemon, cli *Vault, seal Seal) {
	t.Helper()
	cli, seal = newVault(t)
	daemon, err := Open(context.Background(), cli.Path(), seal)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(daemon.Close)
	return daemon, cli, seal
}

func TestReloadPicksUpChanges(t *testing.T) {
	daemon, cli, _ := daemonAndCLI(t)
	mustPut(t, cli, "cred", "c1", "api.example.com")
	mustPut(t, cli, "other", "o1")
	steps := []struct {
		name    string
		change  func() error
		want    string
		changed []string
	}{
		{"first secrets", func() error { return nil }, "c1", []string{"cred", "other"}},
		{"rotated", func() error {
			_, err := cli.Put(context.Background(), "cred", []byte("c2"), Binding{Hosts: []string{"api.example.com"}})
			return err
		}, "c2", []string{"cred"}},
		{"keyring rotated", func() error { _, err := cli.RotateKeyring(context.Background()); return err }, "c2", nil},
		{"seal added", func() error { return cli.Rewrap(context.Background(), newSeal(t), nil) }, "c2", nil},
		{"root rotated", func() error { return cli.RotateRoot(context.Background()) }, "c2", nil}, // needs the KMS call
		{"other removed", func() error { return cli.Remove(context.Background(), "other") }, "c2", []string{"other"}},
	}
	_, prev := daemon.Versions()
	for _, s := range steps {
		if err := s.change(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		changed, err := daemon.Reload(context.Background())
		if err != nil || !changed {
			t.Fatalf("%s: Reload = %v, %v", s.name, changed, err)
		}
		if daemon.Generation() != cli.Generation() {
			t.Fatalf("%s: generation %d, writer at %d", s.name, daemon.Generation(), cli.Generation())
		}
		if got, err := get(daemon, "cred", "api.example.com"); err != nil || got != s.want {
			t.Fatalf("%s: cred = %q, %v; want %q", s.name, got, err, s.want)
		}
		_, cur := daemon.Versions()
		if got := Changed(prev, cur); !slices.Equal(got, s.changed) {
			t.Fatalf("%s: Changed = %v, want %v", s.name, got, s.changed)
		}
		prev = cur
		if changed, err := daemon.Reload(context.Background()); changed || err != nil {
			t.Fatalf("%s: second Reload = %v, %v; want no change", s.name, changed, err)
		}
	}
	daemon.Close()
	if _, err := daemon.Reload(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Reload after Close: %v", err)
	}
}

// TestReloadAfterRootRotationWithoutOurSeal: the new root is wrapped only by
// a seal the daemon does not hold, so it cannot reload, and keeps serving.
func TestReloadAfterRootRotationWithoutOurSeal(t *testing.T) {
	daemon, cli, _ := daemonAndCLI(t)
	mustPut(t, cli, "cred", "c1", "api.example.com")
	if _, err := daemon.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := cli.RotateRoot(context.Background(), newSeal(t)); err != nil {
		t.Fatal(err)
	}
	changed, err := daemon.Reload(context.Background())
	if changed || !errors.Is(err, ErrSeal) {
		t.Fatalf("Reload = %v, %v; want ErrSeal", changed, err)
	}
	if got, err := get(daemon, "cred", "api.example.com"); err != nil || got != "c1" {
		t.Fatalf("still serving: %q, %v", got, err)
	}
}

// TestInFlightReadKeepsItsVersion: a WithSecret call that started before a
// rotation and reload finishes with the bytes it began with.
func TestInFlightReadKeepsItsVersion(t *testing.T) {
	daemon, cli, _ := daemonAndCLI(t)
	mustPut(t, cli, "cred", "old-value", "api.example.com")
	daemon.Reload(context.Background())
	err := daemon.WithSecret("cred", "api.example.com", func(b []byte) error {
		mustPut(t, cli, "cred", "new-value", "api.example.com")
		if _, err := cli.RotateKeyring(context.Background()); err != nil {
			return err
		}
		if changed, err := daemon.Reload(context.Background()); !changed || err != nil {
			return fmt.Errorf("reload during the call: %v, %v", changed, err)
		}
		if string(b) != "old-value" {
			return fmt.Errorf("in-flight value changed to %q", b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := get(daemon, "cred", "api.example.com"); got != "new-value" {
		t.Fatalf("after the call: %q", got)
	}
}

// readLoop runs readers of "cred" until stop is closed. values lists every
// value stored, in the order they go live. Every read must succeed and see
// one of them; a read that starts after want is set must see want or a value
// that went live after it, never an older one. (The writer sets want only
// after the reload that installed it, so by the time a read runs the next
// value may already be live.) It returns the number of reads.
func readLoop(t *testing.T, v *Vault, readers int, values []string, want *atomic.Pointer[string], stop chan struct{}) func() int64 {
	var wg sync.WaitGroup
	var reads atomic.Int64
	errs := make(chan error, readers)
	for range readers {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				must := want.Load()
				got, err := get(v, "cred", "api.example.com")
				reads.Add(1)
				switch {
				case err != nil:
					errs <- fmt.Errorf("read failed: %w", err)
					return
				case !slices.Contains(values, got):
					errs <- fmt.Errorf("read %q, which was never stored", got)
					return
				case must != nil && slices.Index(values, got) < slices.Index(values, *must):
					errs <- fmt.Errorf("read %q after the change to %q was live", got, *must)
					return
				}
			}
		})
	}
	return func() int64 {
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		return reads.Load()
	}
}

// TestRotateWhileReading rotates the secret (and the keyring and root key)
// in another Vault while readers loop on the daemon's: every read sees the
// old or the new value, none fails, and reads after the reload see the new.
func TestRotateWhileReading(t *testing.T) {
	daemon, cli, _ := daemonAndCLI(t)
	const rounds = 6
	var values []string
	for i := range rounds + 1 {
		values = append(values, fmt.Sprint("value-", i))
	}
	mustPut(t, cli, "cred", "value-0", "api.example.com")
	daemon.Reload(context.Background())
	var want atomic.Pointer[string]
	stop := make(chan struct{})
	wait := readLoop(t, daemon, 4, values, &want, stop)
	for i := 1; i <= rounds; i++ {
		val := fmt.Sprint("value-", i)
		mustPut(t, cli, "cred", val, "api.example.com")
		switch i % 3 {
		case 1:
			if _, err := cli.RotateKeyring(context.Background()); err != nil {
				t.Fatal(err)
			}
		case 2:
			if err := cli.RotateRoot(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(5 * time.Millisecond) // let readers run against the old snapshot
		if changed, err := daemon.Reload(context.Background()); !changed || err != nil {
			t.Fatalf("round %d: Reload = %v, %v", i, changed, err)
		}
		want.Store(&val)
		time.Sleep(5 * time.Millisecond)
	}
	close(stop)
	if n := wait(); n < rounds {
		t.Fatalf("only %d reads", n)
	}
	// The live snapshot keeps the values in use (valuecache.go) until Close.
	daemon.Close()
	cli.Close()
	assertNoLockedPagesLeaked(t)
}

func assertNoLockedPagesLeaked(t *testing.T) {
	t.Helper()
	b := lockedPages()
	b.mu.Lock()
	free, total := b.free, b.total
	b.mu.Unlock()
	if free != total {
		t.Errorf("locked pages leaked: %d of %d free", free, total)
	}
}

// TestWatch: the daemon follows another process's writes through fsnotify,
// reports refused files, and stops on Close and on cancel.
func TestWatch(t *testing.T) {
	defer func(d time.Duration) { watchDebounce = d }(watchDebounce)
	watchDebounce = 20 * time.Millisecond
	daemon, cli, _ := daemonAndCLI(t)
	type report struct {
		gen uint64
		err error
	}
	reports := make(chan report, 16)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	watchDone := make(chan error, 1)
	go func() { watchDone <- daemon.Watch(ctx, func(gen uint64, err error) { reports <- report{gen, err} }) }()
	next := func() report {
		t.Helper()
		select {
		case r := <-reports:
			return r
		case <-time.After(10 * time.Second):
			t.Fatal("no report from Watch")
			return report{}
		}
	}

	// Race-free start: write until Watch has reported a change.
	mustPut(t, cli, "cred", "c1", "api.example.com")
	if r := next(); r.err != nil || r.gen != cli.Generation() {
		t.Fatalf("report %+v, want generation %d", r, cli.Generation())
	}
	var want atomic.Pointer[string]
	stop := make(chan struct{})
	wait := readLoop(t, daemon, 2, []string{"c1", "c2"}, &want, stop)
	mustPut(t, cli, "cred", "c2", "api.example.com")
	if r := next(); r.err != nil || r.gen != cli.Generation() {
		t.Fatalf("report %+v, want generation %d", r, cli.Generation())
	}
	c2 := "c2"
	want.Store(&c2)
	time.Sleep(10 * time.Millisecond)
	close(stop)
	wait()

	// A file that does not verify is reported, and the old snapshot stays.
	gen := daemon.Generation()
	writeRaw(t, cli.Path(), tamper(t, readRaw(t, cli.Path()), func(b *fileBody) { b.Generation++ }))
	if r := next(); !errors.Is(r.err, ErrCorrupt) || r.gen != gen {
		t.Fatalf("report %+v, want ErrCorrupt at generation %d", r, gen)
	}
	if got, _ := get(daemon, "cred", "api.example.com"); got != "c2" {
		t.Fatalf("serving %q after a refused file", got)
	}

	daemon.Close()
	select {
	case err := <-watchDone:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("Watch after Close returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Watch did not stop on Close")
	}

	// Cancelling the context stops it too, with nil.
	other, _ := newVault(t)
	ctx2, cancel2 := context.WithCancel(context.Background())
	done2 := make(chan error, 1)
	go func() { done2 <- other.Watch(ctx2, func(uint64, error) {}) }()
	cancel2()
	select {
	case err := <-done2:
		if err != nil {
			t.Fatalf("Watch after cancel returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Watch did not stop on cancel")
	}
	if err := other.Watch(context.Background(), nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Watch(nil) = %v", err)
	}
}
