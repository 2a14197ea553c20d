package policy

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Sentinel errors for requests a rule's conditions refuse. The proxy answers the first three
// with 429 and ErrBodyTooLarge with 413.
var (
	ErrOutsideWindow = errors.New("outside the rule's time window")
	ErrRateLimited   = errors.New("rate limit reached")
	ErrBudgetSpent   = errors.New("daily token budget spent")
	ErrBodyTooLarge  = errors.New("request body larger than the rule allows")
)

// Meter keeps the counters behind rule conditions: request rates and daily token use, per
// agent and rule. It outlives policy reloads (counters are keyed by agent and rule name) and
// is safe for concurrent use. Token use can be saved and restored, so a budget holds across
// restarts; rates start afresh.
type Meter struct {
	now     func() time.Time
	changed chan struct{}

	mu     sync.Mutex
	rates  map[meterKey]*limiter
	tokens map[meterKey]dayCount
}

type meterKey struct{ agent, rule string }

type limiter struct {
	spec string
	l    *rate.Limiter
}

type dayCount struct {
	day    int // yyyymmdd
	tokens int64
}

// NewMeter returns a Meter reading time from now (time.Now if nil).
func NewMeter(now func() time.Time) *Meter {
	if now == nil {
		now = time.Now
	}
	return &Meter{
		now:     now,
		changed: make(chan struct{}, 1),
		rates:   make(map[meterKey]*limiter),
		tokens:  make(map[meterKey]dayCount),
	}
}

// Admit checks a granted request against its rule's time window, rate limit and token
// budget, and counts it against the rate. It returns nil or one of ErrOutsideWindow,
// ErrRateLimited, ErrBudgetSpent. The body cap is the caller's to enforce.
//
// A refusal by rate or budget is a *LimitError that says when to try again; errors.Is still
// matches ErrRateLimited or ErrBudgetSpent.
func (m *Meter) Admit(agent string, g Grant) error {
	c := g.Conditions
	if c == nil {
		return nil
	}
	now := m.now()
	if !c.Open(now) {
		return ErrOutsideWindow
	}
	if c.Rate == 0 && c.DailyTokens == 0 {
		return nil
	}
	k := meterKey{agent, g.Rule}
	m.mu.Lock()
	defer m.mu.Unlock()
	if c.DailyTokens > 0 {
		if u, ok := m.tokens[k]; ok && u.day == c.day(now) && u.tokens >= c.DailyTokens {
			return &LimitError{Err: ErrBudgetSpent, RetryAfter: c.untilNextDay(now)}
		}
	}
	if c.Rate > 0 {
		l := m.rates[k]
		if l == nil || l.spec != c.spec {
			l = &limiter{spec: c.spec, l: rate.NewLimiter(rate.Every(c.Per/time.Duration(c.Rate)), c.Rate)}
			m.rates[k] = l
		}
		if !l.l.AllowN(now, 1) {
			r := l.l.ReserveN(now, 1)
			wait := r.DelayFrom(now)
			r.CancelAt(now)
			return &LimitError{Err: ErrRateLimited, RetryAfter: wait}
		}
	}
	return nil
}

// Spend adds the tokens a response reported to the agent's use through the rule today. It
// does nothing when the rule has no budget.
func (m *Meter) Spend(agent string, g Grant, tokens int64) {
	c := g.Conditions
	if c == nil || c.DailyTokens == 0 || tokens <= 0 {
		return
	}
	day := c.day(m.now())
	k := meterKey{agent, g.Rule}
	m.mu.Lock()
	u := m.tokens[k]
	if u.day != day {
		u = dayCount{day: day}
	}
	u.tokens += tokens
	m.tokens[k] = u
	m.mu.Unlock()
	select {
	case m.changed <- struct{}{}:
	default:
	}
}

// Used returns the tokens the agent used through the rule on the current day of cond's time
// zone.
func (m *Meter) Used(agent, rule string, cond *Conditions) int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	u := m.tokens[meterKey{agent, rule}]
	if cond == nil || u.day != cond.day(m.now()) {
		return 0
	}
	return u.tokens
}

// Changed is signalled (without blocking, coalesced) after token use changes, so the owner
// can save the state.
func (m *Meter) Changed() <-chan struct{} { return m.changed }

type meterState struct {
	Version int          `json:"version"`
	Tokens  []tokenState `json:"tokens"`
}

type tokenState struct {
	Agent  string `json:"agent"`
	Rule   string `json:"rule"`
	Day    string `json:"day"`
	Tokens int64  `json:"tokens"`
}

// State returns the token use as JSON, for a state file.
func (m *Meter) State() []byte {
	m.mu.Lock()
	st := meterState{Version: 1, Tokens: []tokenState{}}
	for k, u := range m.tokens {
		day := fmt.Sprintf("%04d-%02d-%02d", u.day/10000, u.day/100%100, u.day%100)
		st.Tokens = append(st.Tokens, tokenState{Agent: k.agent, Rule: k.rule, Day: day, Tokens: u.tokens})
	}
	m.mu.Unlock()
	slices.SortFunc(st.Tokens, func(a, b tokenState) int {
		return strings.Compare(a.Agent+"\x00"+a.Rule, b.Agent+"\x00"+b.Rule)
	})
	b, _ := json.MarshalIndent(st, "", "  ") // cannot fail: plain strings and integers
	return append(b, '\n')
}

// Restore replaces the token use with what State returned. A malformed state is refused
// and changes nothing.
func (m *Meter) Restore(data []byte) error {
	var st meterState
	if err := json.Unmarshal(data, &st); err != nil {
		return fmt.Errorf("decoding meter state: %w", err)
	}
	if st.Version != 1 {
		return fmt.Errorf("decoding meter state: unsupported version %d", st.Version)
	}
	tokens := make(map[meterKey]dayCount, len(st.Tokens))
	for i, t := range st.Tokens {
		d, err := time.Parse(time.DateOnly, t.Day)
		if err != nil || t.Tokens < 0 || t.Agent == "" || t.Rule == "" {
			return fmt.Errorf("decoding meter state: entry %d is invalid", i)
		}
		tokens[meterKey{t.Agent, t.Rule}] = dayCount{day: d.Year()*10000 + int(d.Month())*100 + d.Day(), tokens: t.Tokens}
	}
	m.mu.Lock()
	m.tokens = tokens
	m.mu.Unlock()
	return nil
}

// LimitError is a refusal by a rate limit or a spent budget, with the time after which the
// same request may be admitted.
type LimitError struct {
	Err        error // ErrRateLimited or ErrBudgetSpent
	RetryAfter time.Duration
}

func (e *LimitError) Error() string { return e.Err.Error() }
func (e *LimitError) Unwrap() error { return e.Err }
