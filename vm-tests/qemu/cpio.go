//go:build linux

package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
)

// An initramfs is written as a cpio archive in the "newc" format, the one the
// kernel unpacks (Documentation/driver-api/early-userspace/buffer-format.rst):
// each entry is a 110-byte ASCII header, the NUL-terminated name padded to
// 4 bytes, then the data padded to 4 bytes; a "TRAILER!!!" entry ends it.

// entry is one file, directory or device node in the archive.
type entry struct {
	name   string // without a leading slash
	mode   uint32 // file type and permission bits, as in stat(2)
	source string // a regular file's contents come from this host file...
	data   []byte // ...or from here
	major  uint32 // a device node's numbers
	minor  uint32
}

const (
	sIFDIR = 0o040000
	sIFREG = 0o100000
	sIFCHR = 0o020000
	sIFLNK = 0o120000
)

// archive collects entries; Write emits every parent directory before its
// children, as the kernel's unpacker needs.
type archive struct {
	entries map[string]entry
}

func newArchive() *archive { return &archive{entries: map[string]entry{}} }

func (a *archive) dir(name string) {
	name = strings.Trim(name, "/")
	for p := name; p != "." && p != "" && p != "/"; p = path.Dir(p) {
		if _, ok := a.entries[p]; !ok {
			a.entries[p] = entry{name: p, mode: sIFDIR | 0o755}
		}
	}
}

func (a *archive) file(name, source string, perm uint32) {
	name = strings.Trim(name, "/")
	a.dir(path.Dir(name))
	a.entries[name] = entry{name: name, mode: sIFREG | perm, source: source}
}

func (a *archive) bytes(name string, data []byte, perm uint32) {
	name = strings.Trim(name, "/")
	a.dir(path.Dir(name))
	a.entries[name] = entry{name: name, mode: sIFREG | perm, data: data}
}

// symlink adds name pointing at target; newc keeps the target as the data.
func (a *archive) symlink(name, target string) {
	name = strings.Trim(name, "/")
	a.dir(path.Dir(name))
	a.entries[name] = entry{name: name, mode: sIFLNK | 0o777, data: []byte(target)}
}

func (a *archive) chardev(name string, perm, major, minor uint32) {
	name = strings.Trim(name, "/")
	a.dir(path.Dir(name))
	a.entries[name] = entry{name: name, mode: sIFCHR | perm, major: major, minor: minor}
}

// Write writes the archive to w. Entries are sorted by name, so a directory
// always comes before what it holds.
func (a *archive) Write(w io.Writer) error {
	bw := bufio.NewWriterSize(w, 1<<20)
	names := make([]string, 0, len(a.entries))
	for n := range a.entries {
		names = append(names, n)
	}
	sort.Strings(names)
	ino := uint32(1)
	for _, n := range names {
		if err := writeEntry(bw, a.entries[n], ino); err != nil {
			return fmt.Errorf("writing %s to the initramfs: %w", n, err)
		}
		ino++
	}
	if err := writeHeader(bw, "TRAILER!!!", 0, 0, 0, 0, 0); err != nil {
		return err
	}
	return bw.Flush()
}

func writeEntry(w *bufio.Writer, e entry, ino uint32) error {
	if e.mode&sIFREG == 0 || e.source == "" {
		if err := writeHeader(w, e.name, ino, e.mode, uint32(len(e.data)), e.major, e.minor); err != nil {
			return err
		}
		if _, err := w.Write(e.data); err != nil {
			return err
		}
		return pad(w, len(e.data))
	}
	f, err := os.Open(e.source)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if st.Size() >= 1<<32 {
		return fmt.Errorf("%s: too large for newc", e.source)
	}
	if err := writeHeader(w, e.name, ino, e.mode, uint32(st.Size()), 0, 0); err != nil {
		return err
	}
	n, err := io.Copy(w, f)
	if err != nil {
		return err
	}
	if n != st.Size() {
		return fmt.Errorf("%s changed while it was read", e.source)
	}
	return pad(w, int(n))
}

// writeHeader writes a newc header and the padded name.
func writeHeader(w *bufio.Writer, name string, ino, mode, size, rmajor, rminor uint32) error {
	nlink := uint32(1)
	if mode&sIFDIR != 0 {
		nlink = 2
	}
	// magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor,
	// devminor, rdevmajor, rdevminor, namesize (with the NUL), check
	_, err := fmt.Fprintf(w, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		ino, mode, 0, 0, nlink, 0, size, 0, 0, rmajor, rminor, len(name)+1, 0)
	if err != nil {
		return err
	}
	if _, err := w.WriteString(name + "\x00"); err != nil {
		return err
	}
	return pad(w, 110+len(name)+1)
}

func pad(w *bufio.Writer, n int) error {
	if r := n % 4; r != 0 {
		_, err := w.Write(make([]byte, 4-r))
		return err
	}
	return nil
}
