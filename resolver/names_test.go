package resolver

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

// TestTableFullSweepsOnlyWhenSomethingExpired: a full table refuses new names (fail closed)
// without scanning again until its earliest entry can have expired, and then takes them.
func TestTableFullSweepsOnlyWhenSomethingExpired(t *testing.T) {
	var tb table
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	addr := netip.MustParseAddr("192.0.2.1")
	for i := range maxNamesPerAgent {
		exp := now.Add(2 * time.Hour)
		if i == 7 {
			exp = now.Add(time.Hour) // the earliest
		}
		if !tb.add("a", fmt.Sprintf("n%d.test", i), addr, exp, now) {
			t.Fatalf("name %d refused before the table was full", i)
		}
	}
	if tb.add("a", "new.test", addr, now.Add(time.Hour), now) {
		t.Fatal("a full table took a new name")
	}
	if got := tb.nextSweep["a"]; !got.Equal(now.Add(time.Hour)) {
		t.Fatalf("next sweep at %v, want the earliest expiry %v", got, now.Add(time.Hour))
	}
	if tb.add("a", "new.test", addr, now.Add(2*time.Hour), now.Add(30*time.Minute)) {
		t.Fatal("a full table took a new name before anything expired")
	}
	if !tb.add("b", "other.test", addr, now.Add(time.Hour), now) {
		t.Fatal("another agent's table is affected")
	}
	later := now.Add(time.Hour + time.Second)
	if !tb.add("a", "new.test", addr, later.Add(time.Hour), later) {
		t.Fatal("a name was refused after an entry expired")
	}
	if tb.has("a", "n7.test", addr, later) || !tb.has("a", "new.test", addr, later) || !tb.has("a", "n8.test", addr, later) {
		t.Fatal("the sweep removed the wrong entries")
	}
}
