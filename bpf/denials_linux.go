//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64 || wasm)

package bpf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"github.com/cilium/ebpf/ringbuf"
)

// DenialReader reads the denials the hooks report. The ring is pinned: denials made while no
// daemon ran are read by the next one (as many as the ring held).
type DenialReader struct{ r *ringbuf.Reader }

// Denials opens a reader on the ring of denials. Close it before s.
func (s *Steering) Denials() (*DenialReader, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.objs == nil {
		return nil, errors.New("reading denials: steering is closed")
	}
	r, err := ringbuf.NewReader(s.objs.Denials)
	if err != nil {
		return nil, fmt.Errorf("reading denials: %w", err)
	}
	return &DenialReader{r: r}, nil
}

// Read blocks for the next denial. After Close it returns an error wrapping os.ErrClosed.
func (d *DenialReader) Read() (Denial, error) {
	rec, err := d.r.Read()
	if errors.Is(err, ringbuf.ErrClosed) {
		return Denial{}, fmt.Errorf("reading denials: %w", os.ErrClosed)
	}
	if err != nil {
		return Denial{}, fmt.Errorf("reading denials: %w", err)
	}
	var raw steerDenial
	if err := binary.Read(bytes.NewReader(rec.RawSample), binary.NativeEndian, &raw); err != nil {
		return Denial{}, fmt.Errorf("reading denials: %w", err)
	}
	return denialFrom(&raw), nil
}

// Close stops Read.
func (d *DenialReader) Close() error { return d.r.Close() }

func denialFrom(raw *steerDenial) Denial {
	den := Denial{
		Hook:     hookNamesByID[raw.Hook],
		CgroupID: raw.CgroupId,
		Family:   raw.Family,
		Protocol: raw.Protocol,
		SockType: raw.SockType,
		PID:      raw.Pid,
		UID:      raw.Uid,
		Comm:     commString(raw.Comm),
	}
	if den.Hook == "" {
		den.Hook = fmt.Sprintf("hook %d", raw.Hook)
	}
	if den.Hook != "sock_create" {
		den.Addr = dstFrom(raw.Addr, raw.Port)
	}
	return den
}
