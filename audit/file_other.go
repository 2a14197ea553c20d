//go:build !linux

package audit

import "os"

// datasync falls back to fsync where fdatasync is not available.
func datasync(f *os.File) error { return f.Sync() }

// lockFile is a no-op off Linux: wirken's daemon only runs on Linux; this
// stub keeps the package building and testable elsewhere.
func lockFile(*os.File) error { return nil }

// syncDir is a no-op off Linux (directory fsync is not portable).
func syncDir(string) error { return nil }
