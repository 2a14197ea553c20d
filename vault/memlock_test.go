package vault

import (
	"errors"
	"math"
	"os"
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
