package vault

import (
	"math"

	"golang.org/x/sys/unix"
)

// memlockLimit returns the RLIMIT_MEMLOCK soft limit in bytes. When it cannot
// be read it assumes the historical default of 64 KiB.
func memlockLimit() uint64 {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &rl); err != nil {
		return 64 << 10
	}
	if rl.Cur == unix.RLIM_INFINITY {
		return math.MaxUint64
	}
	return rl.Cur
}
