package vault

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// readFile reads the whole vault file, refusing one over maxFileSize.
func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening vault file: %w", err)
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading vault file %s: %w", path, err)
	}
	if len(raw) > maxFileSize {
		return nil, fmt.Errorf("vault file %s: %w: larger than %d bytes", path, ErrCorrupt, maxFileSize)
	}
	return raw, nil
}

// writeFileAtomic puts data at path so that a crash leaves either the old
// or the new file: a temporary file in the same directory (O_EXCL, 0600) is
// written and fsynced, then renamed over path (or, when replace is false,
// hard-linked to path, which fails if path exists), then the directory is
// fsynced.
func writeFileAtomic(path string, data []byte, replace bool) error {
	dir := filepath.Dir(path)
	var suffix [8]byte
	if _, err := rand.Read(suffix[:]); err != nil {
		return fmt.Errorf("naming temporary file: %w", err)
	}
	tmp := tempPrefix(path) + hex.EncodeToString(suffix[:])
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("creating temporary file: %w", err)
	}
	defer os.Remove(tmp) // after a rename there is nothing left to remove
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("writing temporary file %s: %w", tmp, err)
	}
	if writeHook != nil {
		writeHook("synced")
	}
	if replace {
		err = os.Rename(tmp, path)
	} else {
		err = os.Link(tmp, path)
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("creating %s: %w", path, ErrExists)
		}
	}
	if err != nil {
		return fmt.Errorf("installing vault file: %w", err)
	}
	if writeHook != nil {
		writeHook("renamed")
	}
	return syncDir(dir)
}

// writeHook, when a test sets it, runs inside writeFileAtomic at "synced"
// (the temporary file is complete and fsynced, not yet renamed) and at
// "renamed" (renamed over the old file, directory not yet fsynced). The
// crash test blocks there and kills the process. It is nil in production.
var writeHook func(stage string)

// tempPrefix is how writeFileAtomic names temporary files for path.
func tempPrefix(path string) string {
	return filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp-")
}

// removeStaleTemps deletes temporary files that a writer killed mid-write
// left next to path. Call it only while holding the file lock: every live
// writer holds it while its temporary file exists.
func removeStaleTemps(path string) {
	dir := filepath.Dir(path)
	prefix := filepath.Base(tempPrefix(path))
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) && e.Type().IsRegular() {
			_ = os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// syncDir fsyncs a directory so that a rename or link in it is durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("opening directory to sync: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing directory %s: %w", dir, err)
	}
	return nil
}
