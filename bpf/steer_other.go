//go:build !linux || !(386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64 || wasm)

package bpf

import (
	"fmt"
	"net/netip"
)

// Steering is the loaded steering programs; on this platform there are none.
type Steering struct{}

// Load returns ErrNotSupported: the eBPF cgroup hooks exist on Linux only.
func Load(cfg Config) (*Steering, error) {
	return nil, fmt.Errorf("loading steering: %w", ErrNotSupported)
}

// RegisterAgent returns ErrNotSupported.
func (s *Steering) RegisterAgent(cgroupID uint64) error {
	return fmt.Errorf("registering agent: %w", ErrNotSupported)
}

// UnregisterAgent returns ErrNotSupported.
func (s *Steering) UnregisterAgent(cgroupID uint64) error {
	return fmt.Errorf("unregistering agent: %w", ErrNotSupported)
}

// Origin returns ErrNotSupported.
func (s *Steering) Origin(client, local netip.AddrPort) (Origin, error) {
	return Origin{}, fmt.Errorf("looking up origin: %w", ErrNotSupported)
}

// QueryOrigin returns ErrNotSupported.
func (s *Steering) QueryOrigin(client, local netip.AddrPort) (Origin, error) {
	return Origin{}, fmt.Errorf("looking up query origin: %w", ErrNotSupported)
}

// Bind returns ErrNotSupported.
func (s *Steering) Bind(name, path string) (uint64, error) {
	return 0, fmt.Errorf("binding agent: %w", ErrNotSupported)
}

// Unbind returns ErrNotSupported.
func (s *Steering) Unbind(name string) error {
	return fmt.Errorf("unbinding agent: %w", ErrNotSupported)
}

// Bound returns ErrNotSupported.
func (s *Steering) Bound() ([]string, error) {
	return nil, fmt.Errorf("listing bound agents: %w", ErrNotSupported)
}

// DenialReader reads denials; on this platform there are none.
type DenialReader struct{}

// Denials returns ErrNotSupported.
func (s *Steering) Denials() (*DenialReader, error) {
	return nil, fmt.Errorf("reading denials: %w", ErrNotSupported)
}

// Read returns ErrNotSupported.
func (d *DenialReader) Read() (Denial, error) {
	return Denial{}, fmt.Errorf("reading denials: %w", ErrNotSupported)
}

// Close does nothing.
func (d *DenialReader) Close() error { return nil }

// Close does nothing.
func (s *Steering) Close() error { return nil }

// Remove returns ErrNotSupported.
func Remove(pinDir string) error {
	return fmt.Errorf("removing pins: %w", ErrNotSupported)
}

// CgroupID returns ErrNotSupported.
func CgroupID(path string) (uint64, error) {
	return 0, fmt.Errorf("reading cgroup id: %w", ErrNotSupported)
}

// Registered returns ErrNotSupported.
func (s *Steering) Registered(cgroupID uint64) (bool, error) { return false, ErrNotSupported }

// BoundCgroups returns ErrNotSupported.
func BoundCgroups(pinDir, onPath string) (map[string]string, error) { return nil, ErrNotSupported }
