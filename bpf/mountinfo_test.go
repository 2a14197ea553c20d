package bpf

import (
	"bufio"
	"errors"
	"io"
	"path"
	"strings"
	"testing"

	"github.com/wirken/wirken/internal/fuzzseed"
)

// cgroup2Mount is a cgroup2 mount found in /proc/self/mountinfo.
type cgroup2Mount struct {
	MountPoint string // where it is mounted
	Root       string // the cgroup path mounted there ("/" for the whole tree)
}

// parseCgroup2Mount returns the first cgroup2 mount in a mountinfo listing
// (proc(5): id parent major:minor root mountpoint options [optional...] -
// fstype source superoptions).
func parseCgroup2Mount(r io.Reader) (cgroup2Mount, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, f := range fields {
			if f == "-" {
				sep = i
				break
			}
		}
		if sep < 6 || sep+1 >= len(fields) || fields[sep+1] != "cgroup2" {
			continue
		}
		m := cgroup2Mount{Root: unescapeMountinfo(fields[3]), MountPoint: unescapeMountinfo(fields[4])}
		if !path.IsAbs(m.MountPoint) || !path.IsAbs(m.Root) {
			continue
		}
		return m, nil
	}
	if err := sc.Err(); err != nil {
		return cgroup2Mount{}, err
	}
	return cgroup2Mount{}, errors.New("no cgroup2 mount in mountinfo")
}

// unescapeMountinfo undoes the kernel's octal escapes (\040 for a space).
func unescapeMountinfo(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }

func TestParseCgroup2Mount(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    cgroup2Mount
		wantErr bool
	}{
		{
			name: "hybrid host",
			in: "30 1 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n" +
				"40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n",
			want: cgroup2Mount{MountPoint: "/sys/fs/cgroup/unified", Root: "/"},
		},
		{
			name: "optional fields and a namespaced root",
			in:   "35 24 0:30 /user.slice /sys/fs/cgroup rw shared:9 master:1 - cgroup2 cgroup2 rw,nsdelegate\n",
			want: cgroup2Mount{MountPoint: "/sys/fs/cgroup", Root: "/user.slice"},
		},
		{
			name: "escaped space",
			in:   "35 24 0:30 / /mnt/my\\040cg rw - cgroup2 none rw\n",
			want: cgroup2Mount{MountPoint: "/mnt/my cg", Root: "/"},
		},
		{name: "cgroup v1 only", in: "41 30 0:38 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n", wantErr: true},
		{name: "truncated line", in: "40 30 0:37 / - cgroup2\n", wantErr: true},
		{name: "empty", in: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseCgroup2Mount(strings.NewReader(tt.in))
			if tt.wantErr {
				if err == nil {
					t.Fatalf("parseCgroup2Mount() = %+v, want an error", got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("parseCgroup2Mount() = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func FuzzParseCgroup2Mount(f *testing.F) {
	seeds := fuzzseed.New(f)
	seeds.Add("40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n")
	seeds.Add("35 24 0:30 /a\\040b /x\\134y rw shared:9 - cgroup2 none rw\n")
	f.Fuzz(func(t *testing.T, s string) {
		m, err := parseCgroup2Mount(strings.NewReader(s))
		if err != nil {
			return
		}
		if !path.IsAbs(m.MountPoint) || !path.IsAbs(m.Root) {
			t.Fatalf("parsed a relative path: %+v", m)
		}
	})
}
