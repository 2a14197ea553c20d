package audit

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func backwardLines(t *testing.T, path string, stopAfter int) []string {
	t.Helper()
	var got []string
	err := ReadLinesBackward(path, func(line []byte) (bool, error) {
		got = append(got, string(line))
		return stopAfter == 0 || len(got) < stopAfter, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// TestReadLinesBackward: lines of random lengths across small chunks come out last first, the
// same lines ReadLines passes on, with a torn tail skipped and an early stop honoured.
func TestReadLinesBackward(t *testing.T) {
	old := backwardChunk
	t.Cleanup(func() { backwardChunk = old })
	rng := rand.New(rand.NewPCG(1, 2))
	for _, chunk := range []int{1, 3, 7, 64, 4096} {
		backwardChunk = chunk
		for _, torn := range []string{"", "{\"seq\":9", "x"} {
			var want []string
			var b bytes.Buffer
			for i := range 50 {
				l := strings.Repeat(string(rune('a'+i%26)), rng.IntN(200))
				if i%7 == 0 {
					l = "" // empty lines are lines too
				}
				want = append(want, l)
				b.WriteString(l + "\n")
			}
			b.WriteString(torn)
			path := filepath.Join(t.TempDir(), "audit.jsonl")
			if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
				t.Fatal(err)
			}
			var fwd []string
			if _, err := ReadLines(path, 0, func(line []byte) error { fwd = append(fwd, string(line)); return nil }); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(fwd, want) {
				t.Fatalf("ReadLines disagrees with what was written")
			}
			got := backwardLines(t, path, 0)
			slices.Reverse(got)
			if !slices.Equal(got, want) {
				t.Fatalf("chunk %d torn %q: backward gave %d lines, not the %d written in reverse", chunk, torn, len(got), len(want))
			}
			if got := backwardLines(t, path, 3); !slices.Equal(got, []string{want[49], want[48], want[47]}) {
				t.Fatalf("chunk %d: stopping after 3 gave %q", chunk, got)
			}
		}
	}
}

func TestReadLinesBackwardEdges(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{"empty": "", "only torn": "no newline", "one": "a\n"} {
		path := filepath.Join(dir, strings.ReplaceAll(name, " ", "-"))
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		got := backwardLines(t, path, 0)
		want := map[string][]string{"empty": nil, "only torn": nil, "one": {"a"}}[name]
		if !slices.Equal(got, want) {
			t.Errorf("%s: got %q, want %q", name, got, want)
		}
	}
	huge := filepath.Join(dir, "huge-torn")
	if err := os.WriteFile(huge, append([]byte("a\n"), bytes.Repeat([]byte("x"), maxLineBytes+backwardChunk+1)...), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := ReadLinesBackward(huge, func([]byte) (bool, error) { return true, nil }); err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Errorf("a torn tail longer than a line may be: %v; want an error, not a read of all of it", err)
	}
	boom := errors.New("boom")
	path := filepath.Join(dir, "one")
	if err := ReadLinesBackward(path, func([]byte) (bool, error) { return true, boom }); !errors.Is(err, boom) {
		t.Errorf("fn's error came back as %v", err)
	}
	if err := ReadLinesBackward(filepath.Join(dir, "missing"), func([]byte) (bool, error) { return true, nil }); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a missing file gave %v", err)
	}
}
