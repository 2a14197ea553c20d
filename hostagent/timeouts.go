package hostagent

import (
	"fmt"
	"time"

	"github.com/BurntSushi/toml"
)

// Timeouts are the proxy's time limits, in seconds, from the [proxy] table. Zero (unset) means
// the default; each bounds what one slow or silent party can hold open.
type Timeouts struct {
	// FirstByteTimeout: a new connection must send its first bytes (ClientHello, request line)
	// within this many seconds, or it is closed.
	FirstByteTimeout float64 `toml:"first_byte_timeout"`
	// ReadHeaderTimeout: the agent's TLS handshake, and then each request header once begun,
	// must arrive within this (a slow-loris agent sending a header byte by byte is cut off).
	ReadHeaderTimeout float64 `toml:"read_header_timeout"`
	// IdleTimeout: a kept-alive agent connection waiting for its next request is closed after this.
	IdleTimeout float64 `toml:"idle_timeout"`
	// UpstreamDialTimeout bounds the TCP connect to an upstream.
	UpstreamDialTimeout float64 `toml:"upstream_dial_timeout"`
	// UpstreamResponseHeaderTimeout: an upstream that accepted a request must start its answer
	// within this, or the agent gets 502 with reason "timeout" (LLM calls may think for minutes).
	UpstreamResponseHeaderTimeout float64 `toml:"upstream_response_header_timeout"`
}

// Timeout defaults, in seconds: what an unset field means.
const (
	DefaultFirstByteTimeout              = 10
	DefaultReadHeaderTimeout             = 30
	DefaultIdleTimeout                   = 90
	DefaultUpstreamDialTimeout           = 10
	DefaultUpstreamResponseHeaderTimeout = 600
)

func (t *Timeouts) fields() []struct {
	name string
	v    *float64
	def  float64
} {
	return []struct {
		name string
		v    *float64
		def  float64
	}{
		{"first_byte_timeout", &t.FirstByteTimeout, DefaultFirstByteTimeout},
		{"read_header_timeout", &t.ReadHeaderTimeout, DefaultReadHeaderTimeout},
		{"idle_timeout", &t.IdleTimeout, DefaultIdleTimeout},
		{"upstream_dial_timeout", &t.UpstreamDialTimeout, DefaultUpstreamDialTimeout},
		{"upstream_response_header_timeout", &t.UpstreamResponseHeaderTimeout, DefaultUpstreamResponseHeaderTimeout},
	}
}

// check fills in defaults and returns one error per bad field, naming file, line and field.
func (t *Timeouts) check(path string, data []byte) []string {
	var errs []string
	for _, f := range t.fields() {
		switch {
		case *f.v == 0:
			*f.v = f.def
		case !(*f.v >= 0.01 && *f.v <= 24*3600): // also NaN, which TOML allows
			errs = append(errs, fmt.Sprintf("%s:%d: proxy.%s: %g seconds is out of range (0.01 to 86400)", path, keyLine(data, toml.Key{"proxy", f.name}), f.name, *f.v))
		}
	}
	return errs
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// Durations are the timeouts as the proxy takes them.
func (t Timeouts) Durations() (firstByte, readHeader, idle, dial, responseHeader time.Duration) {
	return seconds(t.FirstByteTimeout), seconds(t.ReadHeaderTimeout), seconds(t.IdleTimeout),
		seconds(t.UpstreamDialTimeout), seconds(t.UpstreamResponseHeaderTimeout)
}

// DefaultUnsealTimeout is vault.unseal_timeout when unset, in seconds.
const DefaultUnsealTimeout = 30

func (c *Config) checkUnsealTimeout(path string, data []byte) []string {
	switch t := &c.Vault.UnsealTimeout; {
	case *t == 0:
		*t = DefaultUnsealTimeout
	case !(*t >= 0.01 && *t <= 3600): // also NaN
		return []string{fmt.Sprintf("%s:%d: vault.unseal_timeout: %g seconds is out of range (0.01 to 3600)", path, keyLine(data, toml.Key{"vault", "unseal_timeout"}), *t)}
	}
	return nil
}

// UnsealTimeout is vault.unseal_timeout as a duration.
func (c *Config) UnsealTimeout() time.Duration { return seconds(c.Vault.UnsealTimeout) }
