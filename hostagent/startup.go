package hostagent

import (
	"log/slog"
	"time"
)

// StartupPhase is one step of the daemon's start-up and how long it took.
type StartupPhase struct {
	Name string  `json:"name"`
	Ms   float64 `json:"ms"`
}

// startupClock times the start-up step by step: mark ends the current step, which began where
// the previous one ended (or at begin).
type startupClock struct {
	last   time.Time
	phases []StartupPhase
	now    func() time.Time
}

func newStartupClock(now func() time.Time) *startupClock {
	return &startupClock{last: now(), now: now}
}

func (c *startupClock) mark(name string) {
	t := c.now()
	c.phases = append(c.phases, StartupPhase{Name: name, Ms: float64(t.Sub(c.last).Microseconds()) / 1000})
	c.last = t
}

// total is the time the marked steps took together.
func (c *startupClock) total() float64 {
	var ms float64
	for _, p := range c.phases {
		ms += p.Ms
	}
	return ms
}

// startupAttrs are the phases as a log group: startup.policy=0.4 ...
func startupAttrs(phases []StartupPhase) slog.Value {
	attrs := make([]slog.Attr, len(phases))
	for i, p := range phases {
		attrs[i] = slog.Float64(p.Name, p.Ms)
	}
	return slog.GroupValue(attrs...)
}
