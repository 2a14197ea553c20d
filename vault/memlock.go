package vault

import (
	"fmt"
	"os"
	"sync"
)

// memguard panics (it does not return an error) when mlock fails, which
// happens as soon as RLIMIT_MEMLOCK is reached. Every use of locked memory in
// this package therefore first takes pages from a process-wide budget sized
// from that limit, and waits while the budget is spent.

const (
	// reservedPages are left to memguard's key coffer (3 pages) and one spare.
	reservedPages = 4
	// maxBudgetPages caps the budget when the limit is very high or infinite.
	maxBudgetPages = 1 << 16
)

// pageBudget is a weighted semaphore counted in pages of locked memory. It
// serves waiters first come, first served, so a large request (a Reload
// verifying every secret) is not starved by a stream of small ones (one
// secret per proxied request). Only the waiter at the head of the queue is
// woken, when it becomes the head or pages are released: waking every waiter
// on each change (a condition variable's Broadcast) costs each request time in
// proportion to the requests queued behind it, which under thousands of
// concurrent requests (issue 10's load test) made injection crawl.
type pageBudget struct {
	mu      sync.Mutex
	free    int
	total   int
	head    uint64                   // ticket being served
	tail    uint64                   // next ticket to hand out
	waiting map[uint64]chan struct{} // tickets asleep, each woken alone
	wakeups int                      // times a waiter was woken, for tests
}

func newPageBudget(total int) *pageBudget {
	return &pageBudget{free: total, total: total, waiting: map[uint64]chan struct{}{}}
}

// acquire takes n pages, waiting for its turn and until they are free. It
// fails at once if n exceeds the whole budget, which no amount of waiting
// would fix.
func (b *pageBudget) acquire(n int) error {
	if n > b.total {
		return fmt.Errorf("%w: need %d locked pages, the budget is %d", ErrMemlock, n, b.total)
	}
	b.mu.Lock()
	ticket := b.tail
	b.tail++
	for ticket != b.head || b.free < n {
		wake := make(chan struct{})
		b.waiting[ticket] = wake
		b.mu.Unlock()
		<-wake
		b.mu.Lock()
		b.wakeups++
	}
	b.free -= n
	b.head++
	b.wakeHead() // the next ticket may fit too
	b.mu.Unlock()
	return nil
}

// release returns n pages taken by acquire.
func (b *pageBudget) release(n int) {
	if n <= 0 {
		return
	}
	b.mu.Lock()
	b.free += n
	b.wakeHead()
	b.mu.Unlock()
}

// wakeHead wakes the waiter at the head of the queue, if it is asleep. b.mu is
// held.
func (b *pageBudget) wakeHead() {
	if wake, ok := b.waiting[b.head]; ok {
		delete(b.waiting, b.head)
		close(wake)
	}
}

// keepReserve is what the value cache always leaves free, however small the budget: Reload
// holds the keyring (2 pages and more) while it verifies a secret (3 + pagesFor(maxValueLen)),
// and rotation about as much. Cached values are released only after a Reload's new snapshot is
// in place, so without this reserve a Reload could wait for them forever.
var keepReserve = 8 + pagesFor(maxValueLen)

// mayKeep says whether pages already taken may be kept by a long-lived holder (the value
// cache): only while at least half of the budget, and at least keepReserve pages, are still
// free, so that per-request use, Reload and rotation always have room. With a budget under
// twice the reserve (a 64 KiB RLIMIT_MEMLOCK) nothing is kept.
func (b *pageBudget) mayKeep() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.free >= b.total/2 && b.free >= keepReserve
}

// budgetPages turns an RLIMIT_MEMLOCK soft limit in bytes into a budget.
func budgetPages(limit uint64, pageSize int) int {
	pages := limit / uint64(pageSize)
	switch {
	case pages <= reservedPages:
		return 0
	case pages-reservedPages > maxBudgetPages:
		return maxBudgetPages
	default:
		return int(pages - reservedPages)
	}
}

// pagesFor is the number of locked pages memguard uses for n bytes of data.
func pagesFor(n int) int {
	ps := os.Getpagesize()
	if n < 1 {
		return 1
	}
	return (n + ps - 1) / ps
}

// lockedPages is shared by every Vault in the process because the limit is
// per process.
var lockedPages = sync.OnceValue(func() *pageBudget {
	return newPageBudget(budgetPages(memlockLimit(), os.Getpagesize()))
})
