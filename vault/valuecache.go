package vault

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/awnumar/memguard"
)

// Decrypted values are kept, per snapshot, in long-lived locked buffers.
//
// Why: opening a secret the way verifySecrets does (open the term key Enclave, unwrap the data
// key, decrypt the value) allocates three or four memguard buffers, and each one is an mmap, an
// mlock, two mprotects for its guard pages, a wipe and an munmap. Per proxied request that was
// most of wirken's CPU (the munmaps and mprotects flush the TLB on every core the process runs
// on). A pool of reusable buffers would not remove the term key Enclave: memguard can only open
// an Enclave into a fresh buffer, so a pool would have to keep the term keys in plain locked
// memory instead, and a term key opens every secret of its term. Keeping each value that is in
// use, and only those, exposes less.
//
// What it costs in exposure: a value that has been used stays decrypted in memory until its
// snapshot is replaced (any write, Reload, rotation or removal), until it is idle for
// valueIdle, or until Close, instead of for one request. That memory is the same kind the
// per-request path used: mlocked (never swapped), between guard pages, with a canary, read-only
// (Freeze), excluded from core dumps by memguard, and wiped when destroyed. An Enclave would
// not have kept it from an attacker who can read the process's memory either: the key that
// opens every Enclave is in that memory too. And each request already puts the value into
// Go-heap memory memguard cannot reach (the injected header; see README, "Memory hygiene").
//
// The cache never holds more than half of the locked-memory budget (RLIMIT_MEMLOCK), and
// always leaves keepReserve pages for Reload and rotation (memlock.go); past
// that, a value is decrypted per request as before, into buffers destroyed after use.

// valueIdle is how long a cached value may go unused before it is destroyed.
const valueIdle = 10 * time.Minute

// valueCache holds the decrypted current values of one snapshot's secrets.
type valueCache struct {
	mu      sync.Mutex
	entries map[*secretRec]*cachedValue
	retired bool        // the snapshot was replaced: nothing is added any more
	sweeper *time.Timer // destroys idle values while any are cached
}

// cachedValue is one decrypted value. refs counts the calls using it; an entry that is
// dropped while in use is destroyed by the last release.
type cachedValue struct {
	buf     *memguard.LockedBuffer
	pages   int
	refs    int       // guarded by valueCache.mu
	dropped bool      // guarded by valueCache.mu
	used    time.Time // guarded by valueCache.mu
}

// valueOpens counts the decryptions of a value into new locked buffers (openValue); tests use
// it to check that the per-request path does not allocate guarded memory once warm.
var valueOpens atomic.Int64

// acquire returns rec's cached value with a reference taken, or nil if it is not cached.
func (c *valueCache) acquire(rec *secretRec) *cachedValue {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[rec]
	if e == nil {
		return nil
	}
	e.refs++
	e.used = now
	return e
}

// release gives back a reference taken by acquire or add.
func (c *valueCache) release(e *cachedValue) {
	c.mu.Lock()
	e.refs--
	destroy := e.dropped && e.refs == 0
	c.mu.Unlock()
	if destroy {
		e.destroy()
	}
}

// cacheRef is one reference to a cached value; release gives it back once.
type cacheRef struct {
	c    *valueCache
	e    *cachedValue
	done atomic.Bool
}

func (r *cacheRef) release() {
	if r.done.CompareAndSwap(false, true) {
		r.c.release(r.e)
	}
}

// add caches buf (frozen, holding pages of the budget) as rec's value and returns the entry
// with a reference taken. If another call cached rec first, that entry is returned and ok is
// false: the caller still owns buf. If the snapshot was retired, it returns nil, false.
func (c *valueCache) add(rec *secretRec, buf *memguard.LockedBuffer, pages int) (e *cachedValue, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.retired {
		return nil, false
	}
	if e := c.entries[rec]; e != nil {
		e.refs++
		return e, false
	}
	if c.entries == nil {
		c.entries = make(map[*secretRec]*cachedValue)
	}
	e = &cachedValue{buf: buf, pages: pages, refs: 1, used: time.Now()}
	c.entries[rec] = e
	if c.sweeper == nil {
		c.sweeper = time.AfterFunc(valueIdle/10, c.sweep)
	}
	return e, true
}

// retire destroys every value not in use and marks the rest to be destroyed by their last
// release. Nothing is cached afterwards.
func (c *valueCache) retire() {
	c.mu.Lock()
	c.retired = true
	if c.sweeper != nil {
		c.sweeper.Stop()
		c.sweeper = nil
	}
	idle := c.dropLocked(func(*cachedValue) bool { return true })
	c.mu.Unlock()
	for _, e := range idle {
		e.destroy()
	}
}

// sweep destroys the values unused for valueIdle. It runs every valueIdle/10 while values are
// cached, so a value is gone at most 1.1 x valueIdle after its last use even if no request
// comes.
func (c *valueCache) sweep() {
	now := time.Now()
	c.mu.Lock()
	if c.retired {
		c.mu.Unlock()
		return
	}
	idle := c.dropLocked(func(e *cachedValue) bool { return now.Sub(e.used) > valueIdle })
	if len(c.entries) > 0 {
		c.sweeper.Reset(valueIdle / 10)
	} else {
		c.sweeper = nil
	}
	c.mu.Unlock()
	for _, e := range idle {
		e.destroy()
	}
}

// dropLocked removes the entries drop selects and returns those no call is using.
func (c *valueCache) dropLocked(drop func(*cachedValue) bool) []*cachedValue {
	var idle []*cachedValue
	for rec, e := range c.entries {
		if !drop(e) {
			continue
		}
		delete(c.entries, rec)
		e.dropped = true
		if e.refs == 0 {
			idle = append(idle, e)
		}
	}
	return idle
}

// destroy wipes the value and gives its pages back to the budget.
func (e *cachedValue) destroy() {
	e.buf.Destroy()
	lockedPages().release(e.pages)
}
