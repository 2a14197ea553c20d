//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64 || wasm)

// The architecture list matches the generated steer_bpfel.go (-target bpfel).

package bpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Steering holds the loaded maps and programs. Its methods are safe for
// concurrent use. Close releases the file descriptors only: the pinned links
// and maps keep steering (and failing closed) without the process.
type Steering struct {
	mu       sync.RWMutex
	objs     *steerObjects // nil once closed
	linksDir string        // PinDir/links
}

// attachment is one program and the cgroup hook it attaches to.
type attachment struct {
	name   string // pin file name under PinDir/links
	attach ebpf.AttachType
	prog   *ebpf.Program
}

// Load mounts bpffs at /sys/fs/bpf if it is not mounted, creates PinDir,
// loads the programs reusing the maps pinned under PinDir/maps, and for each
// program either atomically swaps the program of the link already pinned
// under PinDir/links or attaches a new link to AgentsCgroup and pins it. It
// fails if a link cannot be pinned: an unpinned link would be detached when
// the process dies, which would fail open.
func Load(cfg Config) (*Steering, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("loading steering: %w", err)
	}
	cgID, err := CgroupID(cfg.AgentsCgroup)
	if err != nil {
		return nil, fmt.Errorf("loading steering: agents cgroup: %w", err)
	}
	if err := ensureBPFFS(); err != nil {
		return nil, fmt.Errorf("loading steering: %w", err)
	}
	mapsDir := filepath.Join(cfg.PinDir, "maps")
	linksDir := filepath.Join(cfg.PinDir, "links")
	for _, dir := range []string{mapsDir, linksDir} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("creating pin directory: %w", err)
		}
	}
	if ok, err := onFS(cfg.PinDir, unix.BPF_FS_MAGIC); err != nil {
		return nil, fmt.Errorf("checking pin directory: %w", err)
	} else if !ok {
		return nil, fmt.Errorf("pin directory %s is not on bpffs", cfg.PinDir)
	}

	spec, err := loadSteer()
	if err != nil {
		return nil, fmt.Errorf("loading steering: %w", err)
	}
	if err := setVariable(spec, steerVarProxyPort, cfg.ProxyPort); err != nil {
		return nil, err
	}
	if err := setVariable(spec, steerVarAgentLevel, cfg.AgentLevel); err != nil {
		return nil, err
	}
	if err := setVariable(spec, steerVarDnsPort, cfg.DNSPort); err != nil {
		return nil, err
	}
	refuse6 := uint32(0)
	if cfg.RefuseIPv6 {
		refuse6 = 1
	}
	if err := setVariable(spec, steerVarRefuseIpv6, refuse6); err != nil {
		return nil, err
	}
	objs := new(steerObjects)
	opts := &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: mapsDir}}
	if err := spec.LoadAndAssign(objs, opts); err != nil {
		return nil, fmt.Errorf("loading BPF objects: %w", err)
	}
	// Records pinned by an earlier run belong to sockets of that run: a
	// later connection reusing a tuple must never be served as their agent.
	for _, m := range []*ebpf.Map{objs.OrigByTuple, objs.UdpByTuple} {
		if err := clearTuples(m); err != nil {
			objs.Close()
			return nil, err
		}
	}

	for _, a := range attachments(objs) {
		err := attachOrUpdate(filepath.Join(linksDir, a.name), cfg.AgentsCgroup, cgID, a)
		if err != nil {
			objs.Close()
			return nil, err
		}
	}
	return &Steering{objs: objs, linksDir: linksDir}, nil
}

// attachments lists every program and its hook, in attach order. sockops
// and the egress recorder come before the connect and sendmsg hooks: a
// connect steered before its tuple can be published would only be reset by
// the proxy, but there is no reason to cause it. The deny-only hooks
// (sock_create, bind) come before the hooks that open a way out. All of them
// exist from kernel 5.8 on (getpeername4/6, the newest, came in 5.8), which
// is wirken's minimum, so none is optional: a kernel that lacks one fails
// the load with the hook's name.
func attachments(objs *steerObjects) []attachment {
	return []attachment{
		{"sock_create", ebpf.AttachCGroupInetSockCreate, objs.SteerSockCreate},
		{"bind4", ebpf.AttachCGroupInet4Bind, objs.SteerBind4},
		{"bind6", ebpf.AttachCGroupInet6Bind, objs.SteerBind6},
		{"egress", ebpf.AttachCGroupInetEgress, objs.SteerEgress},
		{"sockops", ebpf.AttachCGroupSockOps, objs.SteerSockops},
		{"getpeername4", ebpf.AttachCgroupInet4GetPeername, objs.SteerGetpeername4},
		{"getpeername6", ebpf.AttachCgroupInet6GetPeername, objs.SteerGetpeername6},
		{"recvmsg4", ebpf.AttachCGroupUDP4Recvmsg, objs.SteerRecvmsg4},
		{"recvmsg6", ebpf.AttachCGroupUDP6Recvmsg, objs.SteerRecvmsg6},
		{"sendmsg4", ebpf.AttachCGroupUDP4Sendmsg, objs.SteerSendmsg4},
		{"sendmsg6", ebpf.AttachCGroupUDP6Sendmsg, objs.SteerSendmsg6},
		{"connect4", ebpf.AttachCGroupInet4Connect, objs.SteerConnect4},
		{"connect6", ebpf.AttachCGroupInet6Connect, objs.SteerConnect6},
	}
}

// hookNames are the pin names of every attachment, in attach order.
var hookNames = func() []string {
	var names []string
	for _, a := range attachments(new(steerObjects)) {
		names = append(names, a.name)
	}
	return names
}()

func setVariable(spec *ebpf.CollectionSpec, name string, value any) error {
	v, ok := spec.Variables[name]
	if !ok || !v.Constant() {
		return fmt.Errorf("setting %s: no such constant in the BPF object", name)
	}
	if err := v.Set(value); err != nil {
		return fmt.Errorf("setting %s: %w", name, err)
	}
	return nil
}

// attachOrUpdate makes the link pinned at pin run a.prog on cgroup cgPath.
func attachOrUpdate(pin, cgPath string, cgID uint64, a attachment) error {
	l, err := link.LoadPinnedLink(pin, nil)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return attachAndPin(pin, cgPath, a)
	case err != nil:
		return fmt.Errorf("loading pinned %s link: %w", a.name, err)
	}
	defer l.Close()

	info, err := l.Info()
	if err != nil {
		return fmt.Errorf("inspecting pinned %s link: %w", a.name, err)
	}
	cg := info.Cgroup()
	if cg == nil || ebpf.AttachType(cg.AttachType) != a.attach {
		return fmt.Errorf("pinned %s link at %s is not a %s cgroup link", a.name, pin, a.attach)
	}
	if cg.CgroupId != cgID {
		// A link whose cgroup was removed steers nothing (the kernel reports
		// id 0 once it has released it, the dead id until then): replace it.
		// A link on another live cgroup is left alone: taking it over would
		// stop steering there.
		alive := false
		if cg.CgroupId != 0 {
			var err error
			if alive, err = cgroupAlive(cgPath, cg.CgroupId); err != nil {
				return fmt.Errorf("inspecting pinned %s link: %w", a.name, err)
			}
		}
		if alive {
			return fmt.Errorf("pinned %s link at %s is attached to cgroup id %d, not %s (id %d): remove the pin directory first",
				a.name, pin, cg.CgroupId, cgPath, cgID)
		}
		if err := l.Unpin(); err != nil {
			return fmt.Errorf("unpinning defunct %s link: %w", a.name, err)
		}
		return attachAndPin(pin, cgPath, a)
	}
	if err := l.Update(a.prog); err != nil {
		return fmt.Errorf("updating pinned %s link: %w", a.name, err)
	}
	return nil
}

func attachAndPin(pin, cgPath string, a attachment) error {
	l, err := link.AttachCgroup(link.CgroupOptions{Path: cgPath, Attach: a.attach, Program: a.prog})
	if err != nil {
		return fmt.Errorf("attaching %s to %s: %w", a.name, cgPath, err)
	}
	defer l.Close() // detaches unless the pin below succeeded
	if err := l.Pin(pin); err != nil {
		return fmt.Errorf("pinning %s link (refusing to steer with an unpinned link): %w", a.name, err)
	}
	return nil
}

// RegisterAgent makes cgroupID (of an agents/<name> cgroup, see CgroupID) a
// known agent, so its connects are steered instead of denied.
func (s *Steering) RegisterAgent(cgroupID uint64) error {
	if cgroupID == 0 {
		return errors.New("registering agent: cgroup id 0")
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.objs == nil {
		return errors.New("registering agent: steering is closed")
	}
	if err := s.objs.Agents.Update(cgroupID, steerAgentInfo{}, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("registering agent cgroup %d: %w", cgroupID, err)
	}
	return nil
}

// UnregisterAgent forgets cgroupID: its later connects are denied. Forgetting
// an unknown id is not an error.
func (s *Steering) UnregisterAgent(cgroupID uint64) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.objs == nil {
		return errors.New("unregistering agent: steering is closed")
	}
	err := s.objs.Agents.Delete(cgroupID)
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("unregistering agent cgroup %d: %w", cgroupID, err)
	}
	return nil
}

// Registered reports whether cgroupID is in the kernel's agents map.
func (s *Steering) Registered(cgroupID uint64) (bool, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.objs == nil {
		return false, errors.New("looking up agent: steering is closed")
	}
	var v steerAgentInfo
	err := s.objs.Agents.Lookup(cgroupID, &v)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("looking up agent cgroup %d: %w", cgroupID, err)
	}
	return true, nil
}

// Origin looks up and deletes the record of an accepted proxy connection:
// client is the agent's end (conn.RemoteAddr), local the proxy's
// (conn.LocalAddr). A miss returns an error wrapping ErrNoOrigin. IPv4
// destinations are returned as plain IPv4, whether the agent used a v4 or a
// v4-mapped address.
func (s *Steering) Origin(client, local netip.AddrPort) (Origin, error) {
	if !client.IsValid() || !local.IsValid() {
		return Origin{}, fmt.Errorf("looking up origin of %s -> %s: invalid address", client, local)
	}
	key := tupleKey(client, local)
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.objs == nil {
		return Origin{}, errors.New("looking up origin: steering is closed")
	}
	var m steerSkMeta
	if err := takeRecord(s.objs.OrigByTuple, &key, &m); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return Origin{}, fmt.Errorf("looking up origin of %s -> %s: %w", client, local, ErrNoOrigin)
		}
		return Origin{}, fmt.Errorf("looking up origin of %s -> %s: %w", client, local, err)
	}
	if err := fresh(&m, MaxOriginAge); err != nil {
		return Origin{}, fmt.Errorf("looking up origin of %s -> %s: %w", client, local, err)
	}
	return originFromMeta(&m), nil
}

// Bind ties an agent to an existing cgroup outside agents/ (a systemd unit's, say): every
// program is attached there too, as links pinned under PinDir/links/bound/<name>/ (updated in
// place when already pinned), and the cgroup's id is registered. It returns the id. Processes
// in the cgroup (and below) are then steered as that agent. A cgroup created later at the same
// path (the unit restarted) is a new cgroup: Bind it again.
func (s *Steering) Bind(name, path string) (uint64, error) {
	if !validBoundName(name) {
		return 0, fmt.Errorf("binding agent %q: not a valid name", name)
	}
	id, err := CgroupID(path)
	if err != nil {
		return 0, fmt.Errorf("binding agent %s: %w", name, err)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.objs == nil {
		return 0, errors.New("binding agent: steering is closed")
	}
	dir := filepath.Join(s.linksDir, "bound", name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return 0, fmt.Errorf("binding agent %s: %w", name, err)
	}
	for _, a := range attachments(s.objs) {
		if err := attachOrUpdate(filepath.Join(dir, a.name), path, id, a); err != nil {
			return 0, fmt.Errorf("binding agent %s to %s: %w", name, path, err)
		}
	}
	if err := s.objs.Agents.Update(id, steerAgentInfo{}, ebpf.UpdateAny); err != nil {
		return 0, fmt.Errorf("registering bound agent %s: %w", name, err)
	}
	return id, nil
}

// Unbind removes the links Bind pinned for name, which detaches the programs from that cgroup.
// Unregistering its id is the caller's (UnregisterAgent). Unbinding an unknown name is not an
// error.
func (s *Steering) Unbind(name string) error {
	if !validBoundName(name) {
		return fmt.Errorf("unbinding agent %q: not a valid name", name)
	}
	if err := os.RemoveAll(filepath.Join(s.linksDir, "bound", name)); err != nil {
		return fmt.Errorf("unbinding agent %s: %w", name, err)
	}
	return nil
}

// validBoundName: a bound agent's name is one path element.
func validBoundName(name string) bool {
	return name != "" && name != "." && name != ".." && !strings.ContainsAny(name, "/\x00")
}

// Bound lists the agents with pinned bound links (from this or an earlier run).
func (s *Steering) Bound() ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(s.linksDir, "bound"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing bound agents: %w", err)
	}
	var names []string
	for _, e := range ents {
		if e.IsDir() {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

// QueryOrigin looks up who sent the UDP datagram that arrived at the
// resolver's socket local from client. The record stays (a socket sends many
// queries; the LRU map evicts old ones). A miss returns an error wrapping
// ErrNoOrigin: the resolver must then refuse the query.
func (s *Steering) QueryOrigin(client, local netip.AddrPort) (Origin, error) {
	if !client.IsValid() || !local.IsValid() {
		return Origin{}, fmt.Errorf("looking up query origin of %s -> %s: invalid address", client, local)
	}
	key := tupleKey(client, local)
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.objs == nil {
		return Origin{}, errors.New("looking up query origin: steering is closed")
	}
	var m steerSkMeta
	if err := s.objs.UdpByTuple.Lookup(&key, &m); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return Origin{}, fmt.Errorf("looking up query origin of %s -> %s: %w", client, local, ErrNoOrigin)
		}
		return Origin{}, fmt.Errorf("looking up query origin of %s -> %s: %w", client, local, err)
	}
	if err := fresh(&m, MaxQueryAge); err != nil {
		return Origin{}, fmt.Errorf("looking up query origin of %s -> %s: %w", client, local, err)
	}
	return originFromMeta(&m), nil
}

func tupleKey(client, local netip.AddrPort) steerTupleKey {
	return steerTupleKey{
		ClientAddr: addr16(client.Addr()),
		ProxyAddr:  addr16(local.Addr()),
		ClientPort: client.Port(),
		ProxyPort:  local.Port(),
	}
}

// fresh returns an error wrapping ErrNoOrigin if the record was written more
// than max ago (CLOCK_BOOTTIME, the clock of bpf_ktime_get_boot_ns).
func fresh(m *steerSkMeta, max time.Duration) error {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return fmt.Errorf("reading the boot clock: %w", err)
	}
	now := uint64(ts.Nano())
	if m.KtimeBoot > now || time.Duration(now-m.KtimeBoot) > max {
		return fmt.Errorf("record older than %s: %w", max, ErrNoOrigin)
	}
	return nil
}

// clearTuples deletes every entry of a tuple map.
func clearTuples(m *ebpf.Map) error {
	var keys []steerTupleKey
	var k steerTupleKey
	var v steerSkMeta
	it := m.Iterate()
	for it.Next(&k, &v) {
		keys = append(keys, k)
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("listing stale connection records: %w", err)
	}
	for _, k := range keys {
		if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("clearing stale connection records: %w", err)
		}
	}
	return nil
}

func originFromMeta(m *steerSkMeta) Origin {
	return Origin{
		Dst:      dstFrom(m.OrigAddr, m.OrigPort),
		CgroupID: m.CgroupId,
		PID:      m.Pid,
		UID:      m.Uid,
		GID:      m.Gid,
		Comm:     commString(m.Comm),
	}
}

// Close releases the maps and programs held by s. The pins stay, so the
// kernel keeps steering: with no proxy listening, agents' connects are
// refused. Closing twice is a no-op.
func (s *Steering) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.objs == nil {
		return nil
	}
	err := s.objs.Close()
	s.objs = nil
	if err != nil {
		return fmt.Errorf("closing steering: %w", err)
	}
	return nil
}

// Remove unpins and removes everything under pinDir, which detaches the
// links (once no process holds them open) and frees the maps: agents are then
// no longer steered. It is for uninstall and tests. A missing pinDir is not
// an error; a pinDir that is not on bpffs, or is a bpffs mount root, is
// refused.
func Remove(pinDir string) error {
	if pinDir == "" || !filepath.IsAbs(pinDir) {
		return fmt.Errorf("removing pins: %q is not an absolute path", pinDir)
	}
	pinDir = filepath.Clean(pinDir)
	ok, err := onFS(pinDir, unix.BPF_FS_MAGIC)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("removing pins: %w", err)
	}
	if !ok {
		return fmt.Errorf("removing pins: %s is not on bpffs", pinDir)
	}
	var dir, parent unix.Stat_t
	if err := unix.Stat(pinDir, &dir); err != nil {
		return fmt.Errorf("removing pins: %w", err)
	}
	if err := unix.Stat(filepath.Dir(pinDir), &parent); err != nil {
		return fmt.Errorf("removing pins: %w", err)
	}
	if dir.Dev != parent.Dev {
		return fmt.Errorf("removing pins: refusing to remove the bpffs mount at %s", pinDir)
	}
	if err := os.RemoveAll(pinDir); err != nil {
		return fmt.Errorf("removing pins: %w", err)
	}
	return nil
}

// CgroupID returns the id of the cgroup2 directory at path (its inode
// number), the value the programs see as the agent's identity.
func CgroupID(path string) (uint64, error) {
	ok, err := onFS(path, unix.CGROUP2_SUPER_MAGIC)
	if err != nil {
		return 0, fmt.Errorf("reading cgroup id: %w", err)
	}
	if !ok {
		return 0, fmt.Errorf("reading cgroup id: %s is not on a cgroup2 file system", path)
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("reading cgroup id: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return 0, fmt.Errorf("reading cgroup id: %s is not a directory", path)
	}
	return st.Ino, nil
}

// cgroupAlive reports whether the cgroup with the given id still exists, by
// opening it by file handle (cgroup2 handles are the 64-bit id) relative to
// onPath, any path on the same cgroup2 mount.
func cgroupAlive(onPath string, id uint64) (bool, error) {
	fd, err := openCgroup(onPath, id)
	if err != nil || fd < 0 {
		return false, err
	}
	unix.Close(fd)
	return true, nil
}

// openCgroup opens the cgroup with the given id by file handle (cgroup2 handles are the 64-bit
// id) relative to onPath, any path on the same cgroup2 mount. It returns -1 if the cgroup is gone.
func openCgroup(onPath string, id uint64) (int, error) {
	mnt, err := os.Open(onPath)
	if err != nil {
		return -1, fmt.Errorf("checking cgroup %d: %w", id, err)
	}
	defer mnt.Close()
	var h [8]byte
	binary.NativeEndian.PutUint64(h[:], id)
	fd, err := unix.OpenByHandleAt(int(mnt.Fd()), unix.NewFileHandle(fileIDKernfs, h[:]),
		unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC)
	switch {
	case err == nil:
		return fd, nil
	case errors.Is(err, unix.ESTALE) || errors.Is(err, unix.ENOENT):
		return -1, nil
	}
	return -1, fmt.Errorf("checking cgroup %d: %w", id, err)
}

// fileIDKernfs is the file handle type of kernfs (cgroup2) handles.
const fileIDKernfs = 0xfe

// onFS reports whether path lives on a file system with the given magic.
// The magic is compared as 32 bits: Statfs_t.Type is signed and 32 bits wide
// on some architectures.
func onFS(path string, magic uint32) (bool, error) {
	var fs unix.Statfs_t
	if err := unix.Statfs(path, &fs); err != nil {
		return false, &os.PathError{Op: "statfs", Path: path, Err: err}
	}
	return uint32(fs.Type) == magic, nil
}

// ensureBPFFS mounts bpffs at /sys/fs/bpf unless it is mounted. An exclusive
// flock on the directory serialises processes that race to mount it: the
// loser then finds the mount and does not stack a second one on top.
func ensureBPFFS() error {
	if ok, err := onFS(bpffsRoot, unix.BPF_FS_MAGIC); err != nil {
		return fmt.Errorf("checking bpffs: %w", err)
	} else if ok {
		return nil
	}
	d, err := os.Open(bpffsRoot)
	if err != nil {
		return fmt.Errorf("mounting bpffs: %w", err)
	}
	defer d.Close()
	if err := unix.Flock(int(d.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("mounting bpffs: locking %s: %w", bpffsRoot, err)
	}
	if ok, err := onFS(bpffsRoot, unix.BPF_FS_MAGIC); err != nil {
		return fmt.Errorf("checking bpffs: %w", err)
	} else if ok {
		return nil
	}
	if err := unix.Mount("bpffs", bpffsRoot, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("mounting bpffs at %s: %w", bpffsRoot, err)
	}
	return nil
}

// BoundCgroups returns, for each bound agent whose links are pinned under pinDir (by this or an
// earlier run, see Bind), the path of the live cgroup they are attached to. onPath is any path
// on the cgroup2 mount. An agent whose cgroup is gone is left out: its links steer nothing.
func BoundCgroups(pinDir, onPath string) (map[string]string, error) {
	dir := filepath.Join(pinDir, "links", "bound")
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing bound agents: %w", err)
	}
	out := map[string]string{}
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		pins, err := os.ReadDir(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("listing bound agent %s: %w", e.Name(), err)
		}
		for _, p := range pins {
			path, err := linkCgroup(filepath.Join(dir, e.Name(), p.Name()), onPath)
			if err != nil {
				return nil, fmt.Errorf("bound agent %s: %w", e.Name(), err)
			}
			if path != "" {
				out[e.Name()] = path
				break
			}
		}
	}
	return out, nil
}

// linkCgroup is the path of the live cgroup the pinned link is attached to, or "" if it is gone.
func linkCgroup(pin, onPath string) (string, error) {
	l, err := link.LoadPinnedLink(pin, nil)
	if err != nil {
		return "", fmt.Errorf("opening pinned link %s: %w", pin, err)
	}
	defer l.Close()
	info, err := l.Info()
	if err != nil {
		return "", fmt.Errorf("inspecting pinned link %s: %w", pin, err)
	}
	cg := info.Cgroup()
	if cg == nil || cg.CgroupId == 0 {
		return "", nil
	}
	fd, err := openCgroup(onPath, cg.CgroupId)
	if err != nil || fd < 0 {
		return "", err
	}
	defer unix.Close(fd)
	path, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
	if err != nil {
		return "", fmt.Errorf("finding cgroup %d: %w", cg.CgroupId, err)
	}
	return path, nil
}

// takeRecord looks key up and deletes it. Kernels before 5.14 cannot do both in one call on a
// hash map (they answer ENOTSUPP, 524, or EINVAL); there it is a lookup and then a delete,
// which is as safe here: a record is written once per client socket, before its SYN, and
// deleted when that socket closes, so nothing rewrites it between the two calls.
func takeRecord(m *ebpf.Map, key, value any) error {
	err := m.LookupAndDelete(key, value)
	if err == nil || !(errors.Is(err, ebpf.ErrNotSupported) || errors.Is(err, unix.Errno(524)) || errors.Is(err, unix.EINVAL)) {
		return err
	}
	if err := m.Lookup(key, value); err != nil {
		return err
	}
	if err := m.Delete(key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return err
	}
	return nil
}
