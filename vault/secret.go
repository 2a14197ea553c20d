package vault

import (
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"sync"

	"github.com/awnumar/memguard"
)

const redacted = "[redacted]"

// Secret is a decrypted secret value in locked memory that cannot leak by
// accident: every way of printing or encoding it gives "[redacted]", and it
// cannot be compared with ==. Read it with Bytes and call Destroy when done;
// a Secret that is dropped without Destroy is destroyed by the garbage
// collector eventually, holding locked memory until then. Bytes and Destroy
// must not be called concurrently.
type Secret struct {
	_ [0]func() // not comparable
	r *revealed
}

type revealed struct {
	once    sync.Once
	buf     *memguard.LockedBuffer
	release func()
}

// destroy gives the value back: it is wiped at once if it was decrypted for this Secret alone,
// or later with its snapshot's cache (valuecache.go) if it is shared.
func (r *revealed) destroy() {
	r.once.Do(func() {
		r.release()
		r.buf = nil
	})
}

// Reveal decrypts the current version of name for host, like WithSecret,
// into a Secret that lives until Destroy.
func (v *Vault) Reveal(name, host string) (*Secret, error) {
	buf, _, release, err := v.decrypt(name, host)
	if err != nil {
		return nil, err
	}
	s := &Secret{r: &revealed{buf: buf, release: release}}
	runtime.AddCleanup(s, (*revealed).destroy, s.r)
	return s, nil
}

// Bytes returns the value; nil once destroyed. Do not keep the slice.
func (s *Secret) Bytes() []byte {
	if s == nil || s.r == nil {
		return nil
	}
	if s.r.buf == nil {
		return nil
	}
	return s.r.buf.Bytes()
}

// Destroy wipes the value and frees its locked memory. It is idempotent.
func (s *Secret) Destroy() {
	if s == nil || s.r == nil {
		return
	}
	s.r.destroy()
}

// String implements fmt.Stringer.
func (Secret) String() string { return redacted }

// GoString implements fmt.GoStringer.
func (Secret) GoString() string { return redacted }

// Format implements fmt.Formatter for every verb and flag.
func (Secret) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, redacted) }

// MarshalJSON implements json.Marshaler.
func (Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// MarshalText implements encoding.TextMarshaler.
func (Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// LogValue implements slog.LogValuer.
func (Secret) LogValue() slog.Value { return slog.StringValue(redacted) }
