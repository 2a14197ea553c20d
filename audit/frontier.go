package audit

import (
	"encoding/base64"
	"errors"
	"fmt"
	"math/bits"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/tlog"
)

// frontier is a compact range over leaves [0, size): the roots of the
// perfect subtrees that make up the RFC 6962 tree of size leaves, largest
// (leftmost) first. There is one node per set bit of size, so it holds at
// most 64 hashes, and adding a leaf costs one SHA-256 on average. Its root
// equals tlog.TreeHash(size).
type frontier struct {
	size  uint64
	nodes []tlog.Hash
}

// add appends one leaf hash.
func (f *frontier) add(h tlog.Hash) {
	// Each trailing 1 bit of size is a subtree of the same height as the
	// new one: merge them right to left.
	for n := f.size; n&1 == 1; n >>= 1 {
		last := len(f.nodes) - 1
		h = tlog.NodeHash(f.nodes[last], h)
		f.nodes = f.nodes[:last]
	}
	f.nodes = append(f.nodes, h)
	f.size++
}

// root returns the tree hash of leaves [0, size). size must be > 0.
func (f *frontier) root() tlog.Hash {
	if len(f.nodes) == 0 {
		return tlog.Hash{}
	}
	h := f.nodes[len(f.nodes)-1]
	for i := len(f.nodes) - 2; i >= 0; i-- {
		h = tlog.NodeHash(f.nodes[i], h)
	}
	return h
}

// copyFrom makes f a copy of o, reusing f's storage.
func (f *frontier) copyFrom(o *frontier) {
	f.size = o.size
	f.nodes = append(f.nodes[:0], o.nodes...)
}

func (f *frontier) equal(o *frontier) bool {
	if f.size != o.size || len(f.nodes) != len(o.nodes) {
		return false
	}
	for i := range f.nodes {
		if f.nodes[i] != o.nodes[i] {
			return false
		}
	}
	return true
}

// storedIndexes returns, for each node, its index in tlog's stored-hash
// numbering (tlog.StoredHashIndex), so the nodes can seed a tlog.HashReader.
func (f *frontier) storedIndexes() []int64 {
	idx := make([]int64, 0, len(f.nodes))
	var start uint64
	for level := 63; level >= 0; level-- {
		if f.size&(1<<level) == 0 {
			continue
		}
		idx = append(idx, tlog.StoredHashIndex(level, int64(start>>level)))
		start += 1 << level
	}
	return idx
}

// String encodes the frontier as the detail of a segment record: the size
// in decimal, then each node in base64 (standard encoding), separated by
// single spaces.
func (f *frontier) String() string {
	var b strings.Builder
	b.WriteString(strconv.FormatUint(f.size, 10))
	for _, h := range f.nodes {
		b.WriteByte(' ')
		b.WriteString(base64.StdEncoding.EncodeToString(h[:]))
	}
	return b.String()
}

var errBadFrontier = errors.New("segment detail is not a tree size and its frontier hashes")

// parseFrontier is the inverse of frontier.String. It accepts only the
// canonical encoding.
func parseFrontier(s string) (frontier, error) {
	fields := strings.Split(s, " ")
	size, err := strconv.ParseUint(fields[0], 10, 64)
	if err != nil || strconv.FormatUint(size, 10) != fields[0] || size == 0 {
		return frontier{}, errBadFrontier
	}
	if want := bits.OnesCount64(size); len(fields)-1 != want {
		return frontier{}, fmt.Errorf("segment frontier has %d hashes, want %d for size %d", len(fields)-1, want, size)
	}
	f := frontier{size: size, nodes: make([]tlog.Hash, 0, len(fields)-1)}
	for _, field := range fields[1:] {
		h, err := decodeHash(field)
		if err != nil {
			return frontier{}, errBadFrontier
		}
		f.nodes = append(f.nodes, h)
	}
	return f, nil
}

// decodeHash decodes a base64 (standard, padded) hash, accepting only the
// canonical encoding: Go's decoder skips line breaks even in strict mode,
// so the hash must encode back to s.
func decodeHash(s string) (tlog.Hash, error) {
	var h tlog.Hash
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil || len(b) != tlog.HashSize {
		return h, errors.New("not a base64 SHA-256 hash")
	}
	copy(h[:], b)
	if encodeHash(h) != s {
		return tlog.Hash{}, errors.New("not a base64 SHA-256 hash")
	}
	return h, nil
}

func encodeHash(h tlog.Hash) string {
	return base64.StdEncoding.EncodeToString(h[:])
}

// hashStore is a tlog.HashReader over the stored hashes of leaves from some
// index k on, seeded with the frontier at size k. That is enough to prove
// the inclusion of any leaf >= k: every node left of k on its path is one
// frontier node.
type hashStore struct {
	first  int64               // first leaf whose hashes are stored
	base   int64               // tlog.StoredHashIndex(0, first)
	hashes []tlog.Hash         // stored hashes from base on, contiguous
	front  map[int64]tlog.Hash // frontier nodes by stored index
}

func newHashStore(f *frontier) *hashStore {
	s := &hashStore{
		first: int64(f.size),
		base:  tlog.StoredHashIndex(0, int64(f.size)),
		front: make(map[int64]tlog.Hash, len(f.nodes)),
	}
	for i, idx := range f.storedIndexes() {
		s.front[idx] = f.nodes[i]
	}
	return s
}

// ReadHashes implements tlog.HashReader.
func (s *hashStore) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		if x >= s.base && x-s.base < int64(len(s.hashes)) {
			out[i] = s.hashes[x-s.base]
			continue
		}
		h, ok := s.front[x]
		if !ok {
			return nil, fmt.Errorf("stored hash %d is not available", x)
		}
		out[i] = h
	}
	return out, nil
}

// add stores the hashes for leaf n (the next one) with leaf hash h.
func (s *hashStore) add(n int64, h tlog.Hash) error {
	hs, err := tlog.StoredHashesForRecordHash(n, h, s)
	if err != nil {
		return fmt.Errorf("storing hashes for leaf %d: %w", n, err)
	}
	s.hashes = append(s.hashes, hs...)
	return nil
}
