//go:build !linux || !(386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64 || wasm)

package bpf

import (
	"errors"
	"net/netip"
	"testing"
)

func TestStubsReportNotSupported(t *testing.T) {
	var s *Steering
	_, originErr := s.Origin(netip.MustParseAddrPort("127.0.0.1:1"), netip.MustParseAddrPort("127.0.0.1:2"))
	_, loadErr := Load(Config{})
	_, idErr := CgroupID("/")
	tests := []struct {
		name string
		err  error
	}{
		{"Load", loadErr},
		{"RegisterAgent", s.RegisterAgent(1)},
		{"UnregisterAgent", s.UnregisterAgent(1)},
		{"Origin", originErr},
		{"Remove", Remove("/sys/fs/bpf/wirken")},
		{"CgroupID", idErr},
	}
	for _, tt := range tests {
		if !errors.Is(tt.err, ErrNotSupported) {
			t.Errorf("%s: %v, want ErrNotSupported", tt.name, tt.err)
		}
	}
}
