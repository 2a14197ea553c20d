package audit

import (
	"fmt"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/tlog"
)

// memHashes is a plain in-memory tlog.HashReader over all stored hashes.
type memHashes []tlog.Hash

func (m memHashes) ReadHashes(idx []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(idx))
	for i, x := range idx {
		if x < 0 || x >= int64(len(m)) {
			return nil, fmt.Errorf("index %d out of range", x)
		}
		out[i] = m[x]
	}
	return out, nil
}

func leafHash(i int) tlog.Hash { return tlog.RecordHash([]byte(fmt.Sprintf("leaf %d", i))) }

// TestFrontierMatchesTreeHash: the compact range's root is tlog.TreeHash at
// every size, and it holds one node per set bit.
func TestFrontierMatchesTreeHash(t *testing.T) {
	var (
		f      frontier
		stored memHashes
	)
	for n := 1; n <= 1100; n++ {
		h := leafHash(n - 1)
		hs, err := tlog.StoredHashesForRecordHash(int64(n-1), h, stored)
		if err != nil {
			t.Fatal(err)
		}
		stored = append(stored, hs...)
		f.add(h)
		want, err := tlog.TreeHash(int64(n), stored)
		if err != nil {
			t.Fatal(err)
		}
		if f.root() != want {
			t.Fatalf("size %d: frontier root differs from tlog.TreeHash", n)
		}
		if f.size != uint64(n) || len(f.nodes) != popcount(uint64(n)) {
			t.Fatalf("size %d: frontier has size %d and %d nodes", n, f.size, len(f.nodes))
		}
		// Each node sits at its stored index.
		got, err := stored.ReadHashes(f.storedIndexes())
		if err != nil {
			t.Fatal(err)
		}
		for i := range got {
			if got[i] != f.nodes[i] {
				t.Fatalf("size %d: node %d is not the stored hash at its index", n, i)
			}
		}
	}
}

func popcount(n uint64) int {
	c := 0
	for ; n > 0; n &= n - 1 {
		c++
	}
	return c
}

// TestHashStoreProvesFromAFrontier: with only the frontier at k and the
// leaves from k on, every leaf >= k can be proved in every larger tree.
func TestHashStoreProvesFromAFrontier(t *testing.T) {
	const total = 70
	var all memHashes
	for i := range total {
		hs, err := tlog.StoredHashesForRecordHash(int64(i), leafHash(i), all)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, hs...)
	}
	for _, k := range []int{0, 1, 5, 8, 13, 32, 63} {
		var f frontier
		for i := range k {
			f.add(leafHash(i))
		}
		s := newHashStore(&f)
		for i := k; i < total; i++ {
			if err := s.add(int64(i), leafHash(i)); err != nil {
				t.Fatalf("k=%d: add %d: %v", k, i, err)
			}
		}
		for size := k + 1; size <= total; size++ {
			root, err := tlog.TreeHash(int64(size), all)
			if err != nil {
				t.Fatal(err)
			}
			for n := k; n < size; n++ {
				p, err := tlog.ProveRecord(int64(size), int64(n), s)
				if err != nil {
					t.Fatalf("k=%d size=%d n=%d: %v", k, size, n, err)
				}
				if err := tlog.CheckRecord(p, int64(size), root, int64(n), leafHash(n)); err != nil {
					t.Fatalf("k=%d size=%d n=%d: proof does not check: %v", k, size, n, err)
				}
			}
		}
		if k >= 2 {
			// Leaf 0 is inside a frontier node: its sibling is not kept.
			if _, err := tlog.ProveRecord(int64(total), 0, s); err == nil {
				t.Fatalf("k=%d: proved a leaf inside the frontier", k)
			}
		}
	}
}

func TestFrontierEncoding(t *testing.T) {
	var f frontier
	for i := range 11 { // 1011: three nodes
		f.add(leafHash(i))
	}
	enc := f.String()
	got, err := parseFrontier(enc)
	if err != nil {
		t.Fatal(err)
	}
	if !got.equal(&f) {
		t.Fatal("round trip changed the frontier")
	}
	fields := strings.Split(enc, " ")
	bad := map[string]string{
		"empty":              "",
		"size zero":          "0",
		"leading zero":       "0" + enc,
		"plus sign":          "+" + enc,
		"too few hashes":     strings.Join(fields[:3], " "),
		"too many hashes":    enc + " " + fields[1],
		"double space":       strings.Replace(enc, " ", "  ", 1),
		"trailing space":     enc + " ",
		"short hash":         fields[0] + " " + fields[1] + " " + fields[2] + " AAAA",
		"unpadded hash":      fields[0] + " " + fields[1] + " " + fields[2] + " " + strings.TrimRight(fields[3], "="),
		"non-canonical bits": fields[0] + " " + fields[1] + " " + fields[2] + " " + fields[3][:42] + "B=",
	}
	for name, s := range bad {
		t.Run(name, func(t *testing.T) {
			if _, err := parseFrontier(s); err == nil {
				t.Fatalf("parseFrontier(%q) accepted", s)
			}
		})
	}
}
