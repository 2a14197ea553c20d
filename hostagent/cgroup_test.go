package hostagent

import (
	"strings"
	"testing"
)

func TestCgroup2Mount(t *testing.T) {
	tests := []struct {
		name, info, want, root string
		wantErr                bool
	}{
		{
			name: "hybrid",
			info: `24 30 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
25 24 0:23 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
26 24 0:24 / /sys/fs/cgroup/cpu rw shared:11 - cgroup cgroup rw,cpu`,
			want: "/sys/fs/cgroup/unified", root: "/",
		},
		{
			name: "unified with optional fields",
			info: `30 1 0:26 / /sys/fs/cgroup rw,nosuid shared:4 master:1 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot`,
			want: "/sys/fs/cgroup", root: "/",
		},
		{
			name: "escaped space",
			info: `30 1 0:26 / /mnt/my\040cg rw - cgroup2 none rw`,
			want: "/mnt/my cg", root: "/",
		},
		{
			name: "cgroup namespace",
			info: `30 1 0:26 /system.slice/c.scope /sys/fs/cgroup rw - cgroup2 cgroup2 rw`,
			want: "/sys/fs/cgroup", root: "/system.slice/c.scope",
		},
		{name: "none", info: `22 1 0:5 / /proc rw - proc proc rw`, wantErr: true},
		{name: "cgroup1 only", info: `26 24 0:24 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := cgroup2Mount(strings.NewReader(tt.info))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if got.point != tt.want || got.root != tt.root {
				t.Fatalf("got %+v, want point %q root %q", got, tt.want, tt.root)
			}
		})
	}
}

func TestCgroupLevel(t *testing.T) {
	tests := []struct {
		mount, root, dir string
		want             uint32
		wantErr          bool
	}{
		{"/sys/fs/cgroup/unified", "/", "/sys/fs/cgroup/unified", 0, false},
		{"/sys/fs/cgroup/unified", "/", "/sys/fs/cgroup/unified/wirken/agents/demo", 3, false},
		{"/sys/fs/cgroup", "/", "/sys/fs/cgroup/system.slice/wirken.service/agents/a", 4, false},
		{"/sys/fs/cgroup", "/system.slice/c.scope", "/sys/fs/cgroup/wirken/agents/a", 5, false},
		{"/sys/fs/cgroup/unified", "/", "/sys/fs/cgroup/cpu/x", 0, true},
	}
	for _, tt := range tests {
		got, err := cgroupLevel(tt.mount, tt.root, tt.dir)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("cgroupLevel(%q, %q, %q) = %d, %v; want %d, err %v", tt.mount, tt.root, tt.dir, got, err, tt.want, tt.wantErr)
		}
	}
}
