package vault

import (
	"errors"
	"math"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestBudgetPages(t *testing.T) {
	tests := []struct {
		limit uint64
		want  int
	}{
		{0, 0},
		{16 << 10, 0},
		{64 << 10, 12},
		{8 << 20, 2044},
		{math.MaxUint64, maxBudgetPages},
	}
	for _, tc := range tests {
		if got := budgetPages(tc.limit, 4096); got != tc.want {
			t.Errorf("budgetPages(%d) = %d, want %d", tc.limit, got, tc.want)
		}
	}
}

func TestPageBudget(t *testing.T) {
	b := newPageBudget(3)
	if err := b.acquire(4); !errors.Is(err, ErrMemlock) {
		t.Fatalf("acquire over the total: %v, want ErrMemlock", err)
	}
	if err := b.acquire(2); err != nil {
		t.Fatal(err)
	}
	var got atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := b.acquire(2); err == nil {
			got.Store(true)
		}
	}()
	time.Sleep(20 * time.Millisecond)
	if got.Load() {
		t.Fatal("acquire did not wait for pages")
	}
	b.release(2)
	<-done
	if !got.Load() || b.free != 1 {
		t.Fatalf("after release: acquired %v, free %d", got.Load(), b.free)
	}
}

func TestPagesFor(t *testing.T) {
	tests := map[int]int{0: 1, 1: 1, os.Getpagesize(): 1, os.Getpagesize() + 1: 2}
	for n, want := range tests {
		if got := pagesFor(n); got != want {
			t.Errorf("pagesFor(%d) = %d, want %d", n, got, want)
		}
	}
}

// TestPageBudgetIsFair: a large request waiting for pages is not overtaken
// by small ones arriving after it, which would starve it.
func TestPageBudgetIsFair(t *testing.T) {
	b := newPageBudget(4)
	if err := b.acquire(2); err != nil { // held by an earlier reader
		t.Fatal(err)
	}
	order := make(chan string, 2)
	bigDone := make(chan struct{})
	go func() {
		b.acquire(4)
		order <- "big"
		b.release(4)
		close(bigDone)
	}()
	waitQueued := func(n uint64) {
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
			b.mu.Lock()
			q := b.tail
			b.mu.Unlock()
			if q >= n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatal("waiter never queued")
			}
		}
	}
	waitQueued(2)
	// A small request that would fit now (2 of 4 free) must queue behind.
	smallDone := make(chan struct{})
	go func() {
		b.acquire(1)
		order <- "small"
		b.release(1)
		close(smallDone)
	}()
	waitQueued(3)
	time.Sleep(20 * time.Millisecond)
	if len(order) != 0 {
		t.Fatalf("%q got pages while a larger, earlier request waited", <-order)
	}
	b.release(2)
	if first, second := <-order, <-order; first != "big" || second != "small" {
		t.Fatalf("served %s then %s, want big then small", first, second)
	}
	<-bigDone
	<-smallDone
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.free != 4 {
		t.Fatalf("free %d after all releases", b.free)
	}
}

// TestPageBudgetWakesOnlyTheHead: with many requests queued for pages, each
// release wakes the one at the head of the queue, not all of them. Waking all
// (a condition variable's Broadcast) made every request pay for the whole
// queue: under issue 10's 10,000 concurrent requests, injection slowed to a
// crawl with some 1,500 goroutines woken for each page released.
func TestPageBudgetWakesOnlyTheHead(t *testing.T) {
	const waiters = 300
	b := newPageBudget(1)
	if err := b.acquire(1); err != nil {
		t.Fatal(err)
	}
	var done sync.WaitGroup
	for range waiters {
		done.Add(1)
		go func() {
			defer done.Done()
			b.acquire(1)
			b.release(1)
		}()
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		b.mu.Lock()
		queued := b.tail - b.head
		b.mu.Unlock()
		if queued == waiters {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d waiters queued", queued, waiters)
		}
	}
	b.release(1)
	done.Wait()
	// Each waiter is woken once it is the head (and perhaps once more, when the
	// pages it waits for come back): linear in the queue, not quadratic.
	if b.wakeups > 2*waiters {
		t.Fatalf("%d wakeups for %d waiters; want at most %d", b.wakeups, waiters, 2*waiters)
	}
	if b.free != 1 || len(b.waiting) != 0 {
		t.Fatalf("after all: free %d, %d still waiting", b.free, len(b.waiting))
	}
}

// TestMayKeepLeavesReloadRoom: the value cache keeps pages only while half the budget and
// what a Reload needs stay free; under a small budget (64 KiB RLIMIT_MEMLOCK gives 12 pages)
// it keeps nothing, so a Reload never waits on values that only it would release.
func TestMayKeepLeavesReloadRoom(t *testing.T) {
	small := newPageBudget(budgetPages(64<<10, 4096))
	if err := small.acquire(1); err != nil { // a value's page, as WithSecret takes it first
		t.Fatal(err)
	}
	if small.mayKeep() {
		t.Errorf("a %d-page budget lets the cache keep a page; a Reload needs %d", small.total, keepReserve)
	}
	big := newPageBudget(1000)
	if !big.mayKeep() {
		t.Fatal("a free 1000-page budget keeps nothing")
	}
	if err := big.acquire(1000 - keepReserve + 1); err != nil {
		t.Fatal(err)
	}
	if big.mayKeep() {
		t.Errorf("the cache may keep with %d pages free; want at least %d (and half)", keepReserve-1, keepReserve)
	}
	mid := newPageBudget(2 * keepReserve)
	if err := mid.acquire(keepReserve - 1); err != nil {
		t.Fatal(err)
	}
	if !mid.mayKeep() {
		t.Errorf("%d of %d pages free (half and the reserve): keeping refused", mid.free, mid.total)
	}
	if err := mid.acquire(2); err != nil {
		t.Fatal(err)
	}
	if mid.mayKeep() {
		t.Errorf("%d of %d pages free (under half): keeping allowed", mid.free, mid.total)
	}
}
