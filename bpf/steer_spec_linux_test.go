//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64 || wasm)

package bpf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/wirken/wirken/internal/fuzzseed"
)

// These tests need no privileges: they read the embedded object and exercise
// the Go side of the map encodings.

func TestSpecPrograms(t *testing.T) {
	spec, err := loadSteer()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		typ    ebpf.ProgramType
		attach ebpf.AttachType
	}{
		{steerProgSteerConnect4, ebpf.CGroupSockAddr, ebpf.AttachCGroupInet4Connect},
		{steerProgSteerConnect6, ebpf.CGroupSockAddr, ebpf.AttachCGroupInet6Connect},
		{steerProgSteerSockops, ebpf.SockOps, ebpf.AttachCGroupSockOps},
		{steerProgSteerSendmsg4, ebpf.CGroupSockAddr, ebpf.AttachCGroupUDP4Sendmsg},
		{steerProgSteerSendmsg6, ebpf.CGroupSockAddr, ebpf.AttachCGroupUDP6Sendmsg},
		{steerProgSteerRecvmsg4, ebpf.CGroupSockAddr, ebpf.AttachCGroupUDP4Recvmsg},
		{steerProgSteerRecvmsg6, ebpf.CGroupSockAddr, ebpf.AttachCGroupUDP6Recvmsg},
		{steerProgSteerGetpeername4, ebpf.CGroupSockAddr, ebpf.AttachCgroupInet4GetPeername},
		{steerProgSteerGetpeername6, ebpf.CGroupSockAddr, ebpf.AttachCgroupInet6GetPeername},
		{steerProgSteerBind4, ebpf.CGroupSockAddr, ebpf.AttachCGroupInet4Bind},
		{steerProgSteerBind6, ebpf.CGroupSockAddr, ebpf.AttachCGroupInet6Bind},
		{steerProgSteerSockCreate, ebpf.CGroupSock, ebpf.AttachCGroupInetSockCreate},
		{steerProgSteerEgress, ebpf.CGroupSKB, ebpf.AttachCGroupInetEgress},
	}
	if len(hookNames) != len(tests) {
		t.Errorf("%d hooks attached, want %d", len(hookNames), len(tests))
	}
	if len(spec.Programs) != len(tests) {
		t.Errorf("object has %d programs, want %d", len(spec.Programs), len(tests))
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, ok := spec.Programs[tt.name]
			if !ok {
				t.Fatalf("program %s missing", tt.name)
			}
			if p.Type != tt.typ || p.AttachType != tt.attach {
				t.Fatalf("program %s: type %s attach %s, want %s %s", tt.name, p.Type, p.AttachType, tt.typ, tt.attach)
			}
			if p.License != "Dual BSD/GPL" {
				t.Fatalf("program %s: license %q", tt.name, p.License)
			}
		})
	}
}

func TestSpecMaps(t *testing.T) {
	spec, err := loadSteer()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		typ        ebpf.MapType
		keySize    int
		valueSize  int
		maxEntries uint32
		flags      uint32
	}{
		{steerMapAgents, ebpf.Hash, 8, binary.Size(steerAgentInfo{}), 4096, 0},
		{steerMapSkMetaStore, ebpf.SkStorage, 4, binary.Size(steerSkMeta{}), 0, unix.BPF_F_NO_PREALLOC},
		{steerMapOrigByTuple, ebpf.LRUHash, binary.Size(steerTupleKey{}), binary.Size(steerSkMeta{}), 65536, 0},
		{steerMapUdpByTuple, ebpf.LRUHash, binary.Size(steerTupleKey{}), binary.Size(steerSkMeta{}), 16384, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, ok := spec.Maps[tt.name]
			if !ok {
				t.Fatalf("map %s missing", tt.name)
			}
			if m.Type != tt.typ || int(m.KeySize) != tt.keySize || int(m.ValueSize) != tt.valueSize ||
				m.MaxEntries != tt.maxEntries || m.Flags != tt.flags {
				t.Fatalf("map %s: %s key %d value %d max %d flags %#x; want %s key %d value %d max %d flags %#x",
					tt.name, m.Type, m.KeySize, m.ValueSize, m.MaxEntries, m.Flags,
					tt.typ, tt.keySize, tt.valueSize, tt.maxEntries, tt.flags)
			}
			if m.Pinning != ebpf.PinByName {
				t.Fatalf("map %s: pinning %d, want PinByName", tt.name, m.Pinning)
			}
		})
	}
	// Layouts the kernel side relies on: no padding in the hash key.
	if got := binary.Size(steerTupleKey{}); got != 36 {
		t.Errorf("tuple_key is %d bytes, want 36 (16+16+2+2, no padding)", got)
	}
	if got := binary.Size(steerSkMeta{}); got != 64 {
		t.Errorf("sk_meta is %d bytes, want 64", got)
	}
}

func TestSpecConstants(t *testing.T) {
	spec, err := loadSteer()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		size  uint32
		value any
	}{
		{steerVarProxyPort, 2, uint16(15001)},
		{steerVarAgentLevel, 4, uint32(3)},
		{steerVarDnsPort, 2, uint16(15053)},
		{steerVarRefuseIpv6, 4, uint32(1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, ok := spec.Variables[tt.name]
			if !ok {
				t.Fatalf("variable %s missing", tt.name)
			}
			if !v.Constant() || v.Size() != tt.size {
				t.Fatalf("variable %s: constant %v size %d, want a %d-byte constant", tt.name, v.Constant(), v.Size(), tt.size)
			}
			if err := setVariable(spec, tt.name, tt.value); err != nil {
				t.Fatal(err)
			}
		})
	}
	if err := setVariable(spec, "no_such_constant", uint32(1)); err == nil {
		t.Fatal("setVariable accepted an unknown name")
	}
}

func TestTupleKeyEncoding(t *testing.T) {
	tests := []struct {
		name          string
		client, local string
		same          string // another spelling that must give the same key
	}{
		{"v4", "127.0.0.1:40000", "127.0.0.1:15001", "[::ffff:127.0.0.1]:40000"},
		{"v4-mapped", "[::ffff:127.0.0.1]:51234", "[::ffff:127.0.0.1]:15001", "127.0.0.1:51234"},
		{"v6", "[::1]:33333", "[::1]:15001", "[::1%lo]:33333"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client := netip.MustParseAddrPort(tt.client)
			local := netip.MustParseAddrPort(tt.local)
			k := tupleKey(client, local)

			var buf bytes.Buffer
			if err := binary.Write(&buf, binary.NativeEndian, &k); err != nil {
				t.Fatal(err)
			}
			b := buf.Bytes()
			if len(b) != 36 {
				t.Fatalf("encoded key is %d bytes, want 36", len(b))
			}
			if c := client.Addr().As16(); !bytes.Equal(b[0:16], c[:]) {
				t.Errorf("client_addr = %x, want %x", b[0:16], c)
			}
			if l := local.Addr().As16(); !bytes.Equal(b[16:32], l[:]) {
				t.Errorf("proxy_addr = %x, want %x", b[16:32], l)
			}
			if got := binary.NativeEndian.Uint16(b[32:34]); got != client.Port() {
				t.Errorf("client_port = %d, want %d (host order)", got, client.Port())
			}
			if got := binary.NativeEndian.Uint16(b[34:36]); got != local.Port() {
				t.Errorf("proxy_port = %d, want %d (host order)", got, local.Port())
			}

			var back steerTupleKey
			if err := binary.Read(bytes.NewReader(b), binary.NativeEndian, &back); err != nil {
				t.Fatal(err)
			}
			if back != k {
				t.Errorf("round trip: %+v, want %+v", back, k)
			}
			if alt := tupleKey(netip.MustParseAddrPort(tt.same), local); alt != k {
				t.Errorf("%s and %s give different keys", tt.client, tt.same)
			}
		})
	}
}

func TestOriginFromMeta(t *testing.T) {
	tests := []struct {
		name string
		meta steerSkMeta
		want Origin
	}{
		{
			name: "v4 unmapped",
			meta: steerSkMeta{OrigAddr: netip.MustParseAddr("::ffff:127.0.0.2").As16(), OrigPort: 8080,
				Family: unix.AF_INET, Pid: 42, CgroupId: 9001, Uid: 65534, Gid: 65533, Comm: comm("curl")},
			want: Origin{Dst: netip.MustParseAddrPort("127.0.0.2:8080"), CgroupID: 9001, PID: 42,
				UID: 65534, GID: 65533, Comm: "curl"},
		},
		{
			name: "v6 kept",
			meta: steerSkMeta{OrigAddr: netip.MustParseAddr("2001:db8::7").As16(), OrigPort: 443,
				Family: unix.AF_INET6, Pid: 1, CgroupId: 2, Comm: comm("python3")},
			want: Origin{Dst: netip.MustParseAddrPort("[2001:db8::7]:443"), CgroupID: 2, PID: 1, Comm: "python3"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := originFromMeta(&tt.meta); got != tt.want {
				t.Fatalf("originFromMeta() = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// FuzzOriginFromMeta decodes arbitrary bytes as the kernel's sk_meta record.
func FuzzOriginFromMeta(f *testing.F) {
	seeds := fuzzseed.New(f)
	seeds.Add(make([]byte, 64))
	seeds.Add(bytes.Repeat([]byte{0xff}, 64))
	f.Fuzz(func(t *testing.T, b []byte) {
		var m steerSkMeta
		if err := binary.Read(bytes.NewReader(b), binary.NativeEndian, &m); err != nil {
			return
		}
		o := originFromMeta(&m)
		if o.Dst.Port() != m.OrigPort || addr16(o.Dst.Addr()) != m.OrigAddr {
			t.Fatalf("destination %s does not match the record %x:%d", o.Dst, m.OrigAddr, m.OrigPort)
		}
		if o.CgroupID != m.CgroupId || o.PID != m.Pid || o.UID != m.Uid || o.GID != m.Gid {
			t.Fatalf("identity %+v does not match the record %+v", o, m)
		}
		if !utf8.ValidString(o.Comm) {
			t.Fatalf("comm %q is not UTF-8", o.Comm)
		}
	})
}

func TestLoadRejectsBadConfig(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"zero config", Config{}, "absolute"},
		{"no proxy port", Config{AgentsCgroup: dir, AgentLevel: 2, PinDir: "/sys/fs/bpf/x"}, "proxy port"},
		{"agents not a cgroup", Config{AgentsCgroup: dir, AgentLevel: 2, PinDir: "/sys/fs/bpf/x", ProxyPort: 1}, "cgroup2"},
		{"agents missing", Config{AgentsCgroup: filepath.Join(dir, "nope"), AgentLevel: 2, PinDir: "/sys/fs/bpf/x", ProxyPort: 1}, "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Load(tt.cfg)
			if err == nil {
				s.Close()
				t.Fatal("Load succeeded")
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Load() = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestCgroupIDRejectsNonCgroup(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{dir, file, filepath.Join(dir, "missing")} {
		if id, err := CgroupID(p); err == nil {
			t.Errorf("CgroupID(%s) = %d, want an error", p, id)
		}
	}
}

func TestCgroupIDOfRoot(t *testing.T) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Skip(err)
	}
	defer f.Close()
	m, err := parseCgroup2Mount(f)
	if err != nil || m.Root != "/" {
		t.Skipf("no cgroup2 mount of the whole tree: %v", err)
	}
	id, err := CgroupID(m.MountPoint)
	if err != nil {
		t.Fatal(err)
	}
	if id != 1 { // the root cgroup's kernfs id
		t.Fatalf("CgroupID(%s) = %d, want 1", m.MountPoint, id)
	}
}

func TestRemoveRefuses(t *testing.T) {
	dir := t.TempDir()
	keep := filepath.Join(dir, "keep")
	if err := os.WriteFile(keep, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		dir     string
		wantErr string // "" = no error
	}{
		{"relative", "wirken/v1", "absolute"},
		{"empty", "", "absolute"},
		{"not on bpffs", dir, "not on bpffs"},
		{"missing is fine", filepath.Join(dir, "missing"), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Remove(tt.dir)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Remove(%q) = %v", tt.dir, err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("Remove(%q) = %v, want an error containing %q", tt.dir, err, tt.wantErr)
			}
		})
	}
	if _, err := os.Stat(keep); err != nil {
		t.Fatalf("a refused Remove touched the directory: %v", err)
	}
}

func TestOriginOnClosedSteering(t *testing.T) {
	var s Steering // never loaded: behaves as closed
	_, err := s.Origin(netip.MustParseAddrPort("127.0.0.1:1"), netip.MustParseAddrPort("127.0.0.1:2"))
	if err == nil || errors.Is(err, ErrNoOrigin) {
		t.Fatalf("Origin on closed steering = %v, want a non-ErrNoOrigin error", err)
	}
	if _, err := s.Origin(netip.AddrPort{}, netip.MustParseAddrPort("127.0.0.1:2")); err == nil {
		t.Fatal("Origin accepted an invalid address")
	}
	if err := s.RegisterAgent(5); err == nil {
		t.Fatal("RegisterAgent on closed steering succeeded")
	}
	if err := s.RegisterAgent(0); err == nil {
		t.Fatal("RegisterAgent(0) succeeded")
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close on closed steering = %v", err)
	}
}
