//go:build !linux

package vault

// memlockLimit assumes a conservative 64 KiB where RLIMIT_MEMLOCK is not read.
func memlockLimit() uint64 { return 64 << 10 }
