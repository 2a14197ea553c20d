package mitm

import "sync"

// DefaultBudgetInFlight is how many requests one agent may have in flight at once under one
// rule with a daily token budget, unless Config.BudgetInFlight says otherwise. A response's
// tokens are only counted once it has ended, so without a cap an agent could open many
// streams while the budget still shows room and have all of them answered.
const DefaultBudgetInFlight = 8

type budgetKey struct{ agent, rule string }

// inFlight counts the requests in flight per agent and budgeted rule.
type inFlight struct {
	mu sync.Mutex
	m  map[budgetKey]int
}

// acquire takes a slot for k if fewer than limit are taken, and returns its release (safe to
// call more than once), or nil when all are taken.
func (f *inFlight) acquire(k budgetKey, limit int) func() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m == nil {
		f.m = make(map[budgetKey]int)
	}
	if f.m[k] >= limit {
		return nil
	}
	f.m[k]++
	var once sync.Once
	return func() {
		once.Do(func() {
			f.mu.Lock()
			defer f.mu.Unlock()
			if f.m[k]--; f.m[k] <= 0 {
				delete(f.m, k)
			}
		})
	}
}
