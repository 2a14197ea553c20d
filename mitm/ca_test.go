package mitm

import (
	"sync"
	"testing"
)

// TestLeafCacheIsLRU: the least recently used name is the one evicted, and a name still in the
// cache gets the same leaf back.
func TestLeafCacheIsLRU(t *testing.T) {
	ca := testCA(t, "lru test CA")
	ca.maxLeafs = 2
	leaf := func(name string) any {
		t.Helper()
		c, err := ca.Leaf(name)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	a, b := leaf("a.test"), leaf("b.test")
	if leaf("a.test") != a { // a is now the most recently used
		t.Fatal("a.test was minted again while cached")
	}
	leaf("c.test") // evicts b.test, not a.test
	if leaf("a.test") != a {
		t.Error("a.test, recently used, was evicted")
	}
	if leaf("b.test") == b {
		t.Error("b.test, least recently used, was not evicted")
	}
	if n := len(ca.leaves); n != 2 || ca.lru.Len() != 2 {
		t.Errorf("cache holds %d names (%d in the LRU), want 2", n, ca.lru.Len())
	}
}

// TestLeafMintedOnce: concurrent first connections for one name share one mint.
func TestLeafMintedOnce(t *testing.T) {
	ca := testCA(t, "single-flight test CA")
	const n = 32
	got := make([]any, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := ca.Leaf("once.test")
			if err != nil {
				t.Error(err)
			}
			got[i] = c
		}()
	}
	wg.Wait()
	for i := 1; i < n; i++ {
		if got[i] != got[0] {
			t.Fatalf("caller %d got a different leaf: minted more than once", i)
		}
	}
}
