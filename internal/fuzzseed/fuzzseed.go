// Package fuzzseed makes a fuzz target's seeds its committed corpus. A target calls
// seeds := fuzzseed.New(f) and seeds.Add(...) where it would call f.Add(...). Normally that is
// f.Add. With WIRKEN_FUZZ_SEEDS=write in the environment (`make fuzz-seeds`), each seed is also
// written to testdata/fuzz/<Target>/seed-NN in the go test corpus format, replacing the seed
// files written before (crashers the fuzzer found keep their own names), so the committed
// corpus is the seeds the code makes: real configs, vault files, audit logs, ClientHellos and
// DNS messages produced by the packages' own test helpers.
//
// For tests only; it imports nothing of the module.
package fuzzseed

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Env is the variable that makes Add write the corpus.
const Env = "WIRKEN_FUZZ_SEEDS"

// Seeds adds seeds to one fuzz target.
type Seeds struct {
	f   *testing.F
	dir string
	n   int
}

// New returns the seeds of f's target.
func New(f *testing.F) *Seeds {
	s := &Seeds{f: f}
	if os.Getenv(Env) != "write" {
		return s
	}
	s.dir = filepath.Join("testdata", "fuzz", f.Name())
	old, _ := filepath.Glob(filepath.Join(s.dir, "seed-*"))
	for _, p := range old {
		if err := os.Remove(p); err != nil {
			f.Fatalf("removing old seed: %v", err)
		}
	}
	return s
}

// Add adds one seed (and writes it when asked to).
func (s *Seeds) Add(args ...any) {
	s.f.Helper()
	s.f.Add(args...)
	if s.dir == "" {
		return
	}
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		s.f.Fatalf("writing seed: %v", err)
	}
	p := filepath.Join(s.dir, fmt.Sprintf("seed-%02d", s.n))
	s.n++
	if err := os.WriteFile(p, Encode(args...), 0o644); err != nil {
		s.f.Fatalf("writing seed: %v", err)
	}
}

// Encode is args in the corpus file format of go test ("go test fuzz v1").
func Encode(args ...any) []byte {
	var b strings.Builder
	b.WriteString("go test fuzz v1\n")
	for _, a := range args {
		switch v := a.(type) {
		case []byte:
			fmt.Fprintf(&b, "[]byte(%q)\n", v)
		case string:
			fmt.Fprintf(&b, "string(%q)\n", v)
		case byte:
			fmt.Fprintf(&b, "byte(%q)\n", v)
		case rune:
			fmt.Fprintf(&b, "int32(%d)\n", v)
		case float64:
			fmt.Fprintf(&b, "math.Float64frombits(0x%x)\n", math.Float64bits(v))
		case float32:
			fmt.Fprintf(&b, "math.Float32frombits(0x%x)\n", math.Float32bits(v))
		case int, int8, int16, int64, uint, uint16, uint32, uint64, bool:
			fmt.Fprintf(&b, "%T(%v)\n", v, v)
		default:
			panic(fmt.Sprintf("fuzzseed: unsupported seed type %T", a))
		}
	}
	return []byte(b.String())
}
