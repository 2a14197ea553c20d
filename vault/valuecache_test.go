package vault

import (
	"sync"
	"testing"
)

// TestWarmPathAllocatesNoLockedMemory: once a value has been used, further uses (serial and
// concurrent) neither decrypt it again into new guarded buffers nor allocate on the Go heap.
func TestWarmPathAllocatesNoLockedMemory(t *testing.T) {
	v, _ := newVault(t)
	mustPut(t, v, "cred", "sk-warm-path", "api.example.com")
	use := func() {
		err := v.WithSecretVersion("cred", "api.example.com", func(s []byte, _ int) error {
			if string(s) != "sk-warm-path" {
				t.Errorf("value %q", s)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	before := valueOpens.Load()
	use() // the first use decrypts
	if got := valueOpens.Load() - before; got != 1 {
		t.Fatalf("first use opened the value %d times, want 1", got)
	}
	before = valueOpens.Load()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 200 {
				use()
			}
		})
	}
	wg.Wait()
	allocs := testing.AllocsPerRun(200, use)
	if got := valueOpens.Load() - before; got != 0 {
		t.Errorf("warm uses opened the value into new locked buffers %d times", got)
	}
	// The once-function that gives the reference back is the only heap allocation allowed.
	if allocs > 3 {
		t.Errorf("a warm use makes %.0f heap allocations", allocs)
	}
}

// TestCachedValueLifetime: a rotation stops serving the old value at once, destroys it as
// soon as no call holds it (a Secret still revealed keeps it readable until Destroy), and
// Close destroys the rest.
func TestCachedValueLifetime(t *testing.T) {
	v, _ := newVault(t)
	mustPut(t, v, "cred", "old-value", "api.example.com")
	old, err := v.Reveal("cred", "api.example.com")
	if err != nil {
		t.Fatal(err)
	}
	st := v.state.Load()
	e := st.cache.entries[st.dec.current["cred"]]
	if e == nil {
		t.Fatal("the revealed value is not cached")
	}
	mustPut(t, v, "cred", "new-value", "api.example.com")
	if got, err := get(v, "cred", "api.example.com"); err != nil || got != "new-value" {
		t.Fatalf("after rotation: %q, %v", got, err)
	}
	if string(old.Bytes()) != "old-value" || !e.buf.IsAlive() {
		t.Fatal("the value in use was destroyed under its reader")
	}
	old.Destroy()
	if e.buf.IsAlive() {
		t.Error("the rotated-out value outlived its last reader")
	}
	// The new value is cached in the new snapshot; Close destroys it.
	st = v.state.Load()
	e = st.cache.entries[st.dec.current["cred"]]
	if e == nil || !e.buf.IsAlive() {
		t.Fatal("the new value is not cached")
	}
	v.Close()
	if e.buf.IsAlive() {
		t.Error("Close left a value in memory")
	}
	if _, err := get(v, "cred", "api.example.com"); err == nil {
		t.Error("a closed vault still serves")
	}
}

// TestCachedValueIdle: a value unused for valueIdle is destroyed by the next sweep; one used
// recently stays.
func TestCachedValueIdle(t *testing.T) {
	v, _ := newVault(t)
	mustPut(t, v, "a", "alpha", "a.example")
	mustPut(t, v, "b", "beta", "b.example")
	if _, err := get(v, "a", "a.example"); err != nil {
		t.Fatal(err)
	}
	st := v.state.Load()
	e := st.cache.entries[st.dec.current["a"]]
	if e == nil {
		t.Fatal("not cached")
	}
	if _, err := get(v, "b", "b.example"); err != nil {
		t.Fatal(err)
	}
	eb := st.cache.entries[st.dec.current["b"]]
	st.cache.mu.Lock()
	e.used = e.used.Add(-valueIdle - 1)
	armed := st.cache.sweeper != nil
	st.cache.mu.Unlock()
	if !armed {
		t.Fatal("values are cached but no sweep is scheduled")
	}
	st.cache.sweep() // what the timer runs
	if e.buf.IsAlive() {
		t.Error("an idle value was kept")
	}
	if !eb.buf.IsAlive() {
		t.Error("a value in recent use was destroyed")
	}
	if got, err := get(v, "a", "a.example"); err != nil || got != "alpha" {
		t.Errorf("after the sweep: %q, %v", got, err)
	}
}

// TestCacheLeavesHalfTheBudget: the cache stops growing at half of the locked-memory budget;
// beyond it values are decrypted per use and destroyed after, and Close gives every page back.
func TestCacheLeavesHalfTheBudget(t *testing.T) {
	b := lockedPages()
	b.mu.Lock()
	startFree := b.free
	b.mu.Unlock()
	v, _ := newVault(t)
	for i := range 8 {
		mustPut(t, v, string(rune('a'+i)), "value", "h.example")
	}
	// Pretend most of the budget is taken, so only a couple of values may be kept.
	hold := startFree - (b.total/2 + 2)
	if err := b.acquire(hold); err != nil {
		t.Fatal(err)
	}
	for i := range 8 {
		if got, err := get(v, string(rune('a'+i)), "h.example"); err != nil || got != "value" {
			t.Fatalf("%d: %q, %v", i, got, err)
		}
	}
	st := v.state.Load()
	st.cache.mu.Lock()
	cached := len(st.cache.entries)
	st.cache.mu.Unlock()
	if cached == 0 || cached > 3 {
		t.Errorf("%d values cached with %d of %d pages free", cached, startFree-hold, b.total)
	}
	b.release(hold)
	v.Close()
	b.mu.Lock()
	free := b.free
	b.mu.Unlock()
	if free != startFree {
		t.Errorf("%d pages free after Close, want %d", free, startFree)
	}
}
