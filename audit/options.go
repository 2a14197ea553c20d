package audit

import (
	"errors"
	"fmt"
	"time"
)

// Defaults for Open's options.
const (
	DefaultCheckpointEvery    = 256
	DefaultCheckpointInterval = time.Second
	DefaultSegmentSize        = 64 << 20
	// DefaultAsyncLinger is how long records queued with AppendAsync alone wait for company
	// before they are written (see WithAsyncLinger).
	DefaultAsyncLinger = 5 * time.Millisecond
)

// Option configures Open.
type Option func(*config)

type config struct {
	signer     *Signer
	cpEvery    int
	cpInterval time.Duration
	segSize    int64
	retention  int // closed segments to keep; < 0 keeps all
	linger     time.Duration
	now        func() time.Time
	create     func(path string) (file, error) // opens a new, empty active file
	err        error
}

func newConfig(opts []Option) (config, error) {
	cfg := config{
		cpEvery:    DefaultCheckpointEvery,
		cpInterval: DefaultCheckpointInterval,
		segSize:    DefaultSegmentSize,
		retention:  -1,
		linger:     DefaultAsyncLinger,
		now:        time.Now,
		create:     createActive,
	}
	for _, o := range opts {
		o(&cfg)
	}
	return cfg, cfg.err
}

func (c *config) fail(err error) {
	if c.err == nil {
		c.err = err
	}
}

// WithSigner makes the log write signed checkpoints (see
// WithCheckpointEvery). Without it none are written.
func WithSigner(s *Signer) Option {
	return func(c *config) {
		if s == nil {
			c.fail(errors.New("signer is nil"))
		}
		c.signer = s
	}
}

// WithCheckpointEvery sets when checkpoints are written (with a signer):
// after every n records (default 256), every d (default 1s) if records
// were added since the last one, and always by Close. n == 0 or d == 0
// turns that trigger off; negative values are an error.
func WithCheckpointEvery(n int, d time.Duration) Option {
	return func(c *config) {
		if n < 0 || d < 0 {
			c.fail(fmt.Errorf("checkpoint interval must not be negative (got %d records, %v)", n, d))
		}
		c.cpEvery, c.cpInterval = n, d
	}
}

// WithSegmentSize sets the size (default 64 MiB) past which the active
// file is sealed with a checkpoint, renamed to "<base>.NNNNNN.jsonl" and
// replaced by a new file that starts with a segment record. bytes must be
// positive.
func WithSegmentSize(bytes int64) Option {
	return func(c *config) {
		if bytes <= 0 {
			c.fail(fmt.Errorf("segment size must be positive (got %d)", bytes))
		}
		c.segSize = bytes
	}
}

// WithRetention keeps at most n closed segments, deleting the oldest once
// a new segment is durable. Without it every segment is kept. n must not be
// negative.
func WithRetention(n int) Option {
	return func(c *config) {
		if n < 0 {
			c.fail(fmt.Errorf("retention must not be negative (got %d)", n))
		}
		c.retention = n
	}
}

// WithAsyncLinger sets how long a batch holding only AppendAsync records waits for more
// records before it is written (default DefaultAsyncLinger; 0 writes at once). A request's
// result record then usually shares the next request's fdatasync instead of costing one of
// its own; Close writes what is queued without waiting.
func WithAsyncLinger(d time.Duration) Option {
	return func(c *config) {
		if d < 0 {
			c.fail(fmt.Errorf("async linger must not be negative (got %v)", d))
		}
		c.linger = d
	}
}
