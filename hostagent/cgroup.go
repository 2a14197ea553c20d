package hostagent

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
)

// mount is a cgroup2 mount: where it is, and which cgroup it shows at its top.
type mount struct {
	point string
	root  string
}

// cgroup2Mount returns the first cgroup2 mount listed in a mountinfo stream. On hybrid hosts
// that is /sys/fs/cgroup/unified; on unified hosts /sys/fs/cgroup.
func cgroup2Mount(mountinfo io.Reader) (mount, error) {
	s := bufio.NewScanner(mountinfo)
	s.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for s.Scan() {
		// id parent major:minor root mountpoint options [optional...] - fstype source superopts
		left, right, ok := strings.Cut(s.Text(), " - ")
		if !ok {
			continue
		}
		f := strings.Fields(left)
		r := strings.Fields(right)
		if len(f) < 5 || len(r) < 1 || r[0] != "cgroup2" {
			continue
		}
		return mount{point: unescapeMount(f[4]), root: unescapeMount(f[3])}, nil
	}
	if err := s.Err(); err != nil {
		return mount{}, fmt.Errorf("reading mountinfo: %w", err)
	}
	return mount{}, errors.New("no cgroup2 mount found in /proc/self/mountinfo")
}

// unescapeMount undoes the octal escapes (\040 for space, ...) mountinfo uses.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			ok := true
			for _, c := range []byte(s[i+1 : i+4]) {
				if c < '0' || c > '7' {
					ok = false
					break
				}
				v = v*8 + (c - '0')
			}
			if ok {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// cgroupLevel is the cgroup depth of dir in the whole cgroup2 hierarchy (its root is 0), the
// number bpf_get_current_ancestor_cgroup_id expects. mountRoot is the cgroup the mount shows at
// its top: "/" on a host, deeper inside a cgroup namespace.
func cgroupLevel(mountPoint, mountRoot, dir string) (uint32, error) {
	rel, err := filepath.Rel(mountPoint, dir)
	if err != nil || strings.HasPrefix(rel, "..") {
		return 0, fmt.Errorf("%s is not below the cgroup2 mount %s", dir, mountPoint)
	}
	return depth(mountRoot) + depth(rel), nil
}

func depth(p string) uint32 {
	p = strings.Trim(filepath.Clean("/"+p), "/")
	if p == "" {
		return 0
	}
	return uint32(len(strings.Split(p, "/")))
}
