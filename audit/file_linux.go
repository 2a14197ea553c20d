//go:build linux

package audit

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// datasync flushes f's data (and the metadata needed to read it back, such
// as its size) with fdatasync(2).
func datasync(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("fdatasync: %w", err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for {
			serr = syscall.Fdatasync(int(fd))
			if !errors.Is(serr, syscall.EINTR) {
				return
			}
		}
	}); err != nil {
		return fmt.Errorf("fdatasync: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("fdatasync: %w", serr)
	}
	return nil
}

// lockFile takes an exclusive, non-blocking flock(2) on f so two writers
// can never interleave chains. It is released when f is closed.
func lockFile(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("flock: %w", err)
	}
	var lerr error
	if err := rc.Control(func(fd uintptr) {
		for {
			lerr = syscall.Flock(int(fd), syscall.LOCK_EX|syscall.LOCK_NB)
			if !errors.Is(lerr, syscall.EINTR) {
				return
			}
		}
	}); err != nil {
		return fmt.Errorf("flock: %w", err)
	}
	if errors.Is(lerr, syscall.EWOULDBLOCK) {
		return errors.New("the log is already open in another writer")
	}
	if lerr != nil {
		return fmt.Errorf("flock: %w", lerr)
	}
	return nil
}

// syncDir fsyncs a directory so a newly created entry in it is durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	serr := d.Sync()
	cerr := d.Close()
	if serr != nil {
		return serr
	}
	return cerr
}
