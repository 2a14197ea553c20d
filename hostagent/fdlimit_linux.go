package hostagent

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// raiseFileLimit sets the soft limit on open files to the hard limit and returns it. Each agent
// connection holds a descriptor (and each upstream connection one more), so the daemon takes
// all it may have: the Go runtime does this too when the os package starts, but an
// operator-set soft limit must not depend on that. The hard limit is the operator's (systemd's
// LimitNOFILE=, 524288 by default) and is left as it is.
func raiseFileLimit() (uint64, error) {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return 0, fmt.Errorf("reading the open files limit: %w", err)
	}
	if rl.Cur < rl.Max {
		rl.Cur = rl.Max
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
			return 0, fmt.Errorf("raising the open files limit to %d: %w", rl.Max, err)
		}
	}
	return rl.Cur, nil
}

// fileLimit is the current soft limit on open files (0 if it cannot be read).
func fileLimit() uint64 {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return 0
	}
	return rl.Cur
}

// openFiles counts the daemon's open file descriptors (-1 if /proc cannot say).
func openFiles() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(ents) - 1 // the directory read itself held one
}
