package bpf

import (
	"errors"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// TestTakeRecord: on a hash map the record is read and gone in one call; on a map the kernel
// cannot lookup-and-delete (as hash maps before 5.14, and array maps on every kernel), takeRecord
// falls back to a lookup and a delete, so the value is still read and the delete's own answer is
// what is returned.
func TestTakeRecord(t *testing.T) {
	requirePrivileged(t)
	hash, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.LRUHash, KeySize: 4, ValueSize: 8, MaxEntries: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer hash.Close()
	if err := hash.Put(uint32(1), uint64(42)); err != nil {
		t.Fatal(err)
	}
	var v uint64
	if err := takeRecord(hash, uint32(1), &v); err != nil || v != 42 {
		t.Fatalf("takeRecord on a hash map = %d, %v; want 42, nil", v, err)
	}
	if err := takeRecord(hash, uint32(1), &v); !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Fatalf("second take = %v, want ErrKeyNotExist", err)
	}

	array, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer array.Close()
	if err := array.Put(uint32(2), uint64(7)); err != nil {
		t.Fatal(err)
	}
	v = 0
	err = takeRecord(array, uint32(2), &v)
	if v != 7 {
		t.Fatalf("fallback did not read the value: got %d (err %v)", v, err)
	}
	if !errors.Is(err, unix.EINVAL) { // array elements cannot be deleted: the delete's answer
		t.Fatalf("fallback returned %v, want the delete's EINVAL", err)
	}
}
