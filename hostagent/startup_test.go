package hostagent

import (
	"testing"
	"time"
)

func TestStartupClock(t *testing.T) {
	t0 := time.Unix(1000, 0)
	steps := []time.Duration{0, 1500 * time.Microsecond, 4 * time.Millisecond, 0}
	i := 0
	clock := newStartupClock(func() time.Time {
		t0 = t0.Add(steps[i])
		i++
		return t0
	})
	clock.mark("policy")
	clock.mark("vault")
	clock.mark("proxy")
	want := []StartupPhase{{"policy", 1.5}, {"vault", 4}, {"proxy", 0}}
	if len(clock.phases) != len(want) {
		t.Fatalf("phases %+v, want %+v", clock.phases, want)
	}
	for j := range want {
		if clock.phases[j] != want[j] {
			t.Errorf("phase %d: %+v, want %+v", j, clock.phases[j], want[j])
		}
	}
	if got := clock.total(); got != 5.5 {
		t.Errorf("total %v ms, want 5.5", got)
	}
}
