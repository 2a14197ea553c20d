package fuzzseed

import (
	"math"
	"testing"
)

// TestEncode: the corpus format go test reads (internal/fuzz's "go test fuzz v1"); a file it
// cannot parse fails the target's seed run, so every committed corpus checks this again.
func TestEncode(t *testing.T) {
	got := string(Encode([]byte("a\"\x00\xff"), "é\n", int64(-3), uint16(7), true, byte('x'), 0.5, rune(-1)))
	want := "go test fuzz v1\n" +
		"[]byte(\"a\\\"\\x00\\xff\")\n" +
		"string(\"é\\n\")\n" +
		"int64(-3)\n" +
		"uint16(7)\n" +
		"bool(true)\n" +
		"byte('x')\n" +
		"math.Float64frombits(0x3fe0000000000000)\n" +
		"int32(-1)\n"
	if got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
	if math.Float64frombits(0x3fe0000000000000) != 0.5 {
		t.Fatal("float encoding")
	}
}
