package vault

import (
	"context"
	"fmt"
	"strings"
	"testing"
)

// BenchmarkWithSecret is the per-request cost of opening one secret: open
// the term key Enclave, unwrap the data key, decrypt a 100-byte value into
// a LockedBuffer, call fn, destroy everything.
func BenchmarkWithSecret(b *testing.B) {
	v, _ := newVault(b)
	mustPut(b, v, "cred", strings.Repeat("k", 100), "api.example.com")
	fn := func(s []byte) error {
		if len(s) != 100 {
			return fmt.Errorf("length %d", len(s))
		}
		return nil
	}
	b.Run("serial", func(b *testing.B) {
		for b.Loop() {
			if err := v.WithSecret("cred", "api.example.com", fn); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := v.WithSecret("cred", "api.example.com", fn); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkOpen opens and fully verifies a vault of 50 secrets (aead seal).
func BenchmarkOpen(b *testing.B) {
	v, seal := newVault(b)
	for i := range 50 {
		mustPut(b, v, fmt.Sprint("cred", i), strings.Repeat("v", 100))
	}
	for b.Loop() {
		w, err := Open(context.Background(), v.Path(), seal)
		if err != nil {
			b.Fatal(err)
		}
		w.Close()
	}
}

// BenchmarkReload is a daemon picking up one rotated secret in a vault of
// 50 secrets (the rotation itself is not timed).
func BenchmarkReload(b *testing.B) {
	cli, seal := newVault(b)
	for i := range 50 {
		mustPut(b, cli, fmt.Sprint("cred", i), strings.Repeat("v", 100))
	}
	daemon, err := Open(context.Background(), cli.Path(), seal)
	if err != nil {
		b.Fatal(err)
	}
	defer daemon.Close()
	i := 0
	for b.Loop() {
		b.StopTimer()
		i++
		mustPut(b, cli, "cred0", fmt.Sprint("rotated", i))
		b.StartTimer()
		if changed, err := daemon.Reload(context.Background()); !changed || err != nil {
			b.Fatal(changed, err)
		}
	}
}
