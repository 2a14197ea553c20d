package audit

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func writeFile(t testing.TB, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

func appendFile(t testing.TB, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
}

func collect(t testing.TB, path string, from int64) ([]string, int64) {
	t.Helper()
	var got []string
	next, err := ReadLines(path, from, func(line []byte) error {
		got = append(got, string(line))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got, next
}

func TestReadLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	long := strings.Repeat("x", 100<<10/2) // spans several reads
	writeFile(t, path, "a\nbb\n"+long+"\nparti")
	got, next := collect(t, path, 0)
	if strings.Join(got, "|") != "a|bb|"+long || next != int64(5+len(long)+1) {
		t.Fatalf("lines %d, next %d", len(got), next)
	}
	// The partial line appears once it is complete, not before.
	got, again := collect(t, path, next)
	if len(got) != 0 || again != next {
		t.Fatalf("a partial line was passed on: %q", got)
	}
	appendFile(t, path, "al\nc\n")
	got, _ = collect(t, path, next)
	if strings.Join(got, "|") != "partial|c" {
		t.Fatalf("got %q", got)
	}
	// Offsets must be at line starts and inside the file.
	for _, from := range []int64{-1, 1, 3, 1 << 40} {
		if _, err := ReadLines(path, from, func([]byte) error { return nil }); err == nil {
			t.Fatalf("offset %d accepted", from)
		}
	}
	// fn's error stops the read and comes back as is.
	stop := errors.New("stop")
	n := 0
	if _, err := ReadLines(path, 0, func([]byte) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
		t.Fatalf("ReadLines = %v after %d lines, want stop after 1", err, n)
	}
	// A line past the limit is an error, not an unbounded buffer.
	writeFile(t, path, strings.Repeat("y", maxLineBytes+10))
	if _, err := ReadLines(path, 0, func([]byte) error { return nil }); err == nil {
		t.Fatal("an over-long line was accepted")
	}
}

func TestTailOffset(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	writeFile(t, path, "a\nbb\nccc\npart")
	tests := []struct {
		n    int
		want int64
	}{
		{0, 9}, {1, 5}, {2, 2}, {3, 0}, {10, 0},
	}
	for _, tc := range tests {
		got, err := TailOffset(path, tc.n)
		if err != nil || got != tc.want {
			t.Fatalf("TailOffset(%d) = %d, %v, want %d", tc.n, got, err, tc.want)
		}
	}
	if _, err := TailOffset(path, -1); err == nil {
		t.Fatal("negative count accepted")
	}
	// Many lines across chunk boundaries.
	var b strings.Builder
	for range 20000 {
		b.WriteString("0123456789\n")
	}
	writeFile(t, path, b.String())
	got, err := TailOffset(path, 15000)
	if err != nil || got != int64(5000*11) {
		t.Fatalf("TailOffset(15000) = %d, %v", got, err)
	}
	empty := filepath.Join(t.TempDir(), "empty")
	writeFile(t, empty, "")
	if got, err := TailOffset(empty, 5); err != nil || got != 0 {
		t.Fatalf("empty file: %d, %v", got, err)
	}
}

// TestFollowAcrossRotation follows a live log written by the real writer
// through several segment rotations and sees every line exactly once, in
// order, each one complete.
func TestFollowAcrossRotation(t *testing.T) {
	s := testSigner(t, testOrigin)
	path := tempLogPath(t)
	logger, _ := testLogger()
	l, err := Open(path, logger, WithSigner(s), WithSegmentSize(2048), WithCheckpointEvery(8, 0))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		mu  sync.Mutex
		got [][]byte
	)
	done := make(chan error, 1)
	go func() {
		done <- Follow(ctx, path, 0, func(line []byte) error {
			if _, err := ParseRecord(line); err != nil {
				return err // a partial or torn line would fail here
			}
			mu.Lock()
			got = append(got, bytes.Clone(line))
			mu.Unlock()
			return nil
		})
	}()
	for i := range 60 {
		mustAppend(t, l, Record{Type: TypeRequestAllow, Agent: "agent-7"})
		if i%10 == 0 {
			time.Sleep(FollowPoll / 2)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	paths, _ := SegmentPaths(path)
	if len(paths) < 3 {
		t.Fatalf("only %d files; the test needs rotations", len(paths))
	}
	want := allLines(t, paths)
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n >= len(want) {
			break
		}
		if time.Now().After(deadline) {
			select {
			case err := <-done:
				t.Fatalf("Follow returned %v after %d of %d lines", err, n, len(want))
			default:
				t.Fatalf("followed %d of %d lines in 10s", n, len(want))
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Follow = %v, want context.Canceled", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != len(want) {
		t.Fatalf("followed %d lines, want %d", len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("line %d differs", i)
		}
	}
}

// TestFollowWaitsForCompleteLines writes a line in two halves; Follow
// passes it on only once the '\n' is there.
func TestFollowWaitsForCompleteLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	writeFile(t, path, "one\n")
	lines := make(chan string, 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Follow(ctx, path, 0, func(line []byte) error {
			lines <- string(line)
			return nil
		})
	}()
	if got := <-lines; got != "one" {
		t.Fatalf("got %q", got)
	}
	appendFile(t, path, "tw")
	select {
	case got := <-lines:
		t.Fatalf("partial line %q passed on", got)
	case <-time.After(3 * FollowPoll):
	}
	appendFile(t, path, "o\n")
	select {
	case got := <-lines:
		if got != "two" {
			t.Fatalf("got %q", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the completed line never came")
	}
	// A cut back (a failed write undone) resumes at the new end.
	writeFile(t, path, "one\n")
	time.Sleep(3 * FollowPoll)
	appendFile(t, path, "three\n")
	select {
	case got := <-lines:
		if got != "three" {
			t.Fatalf("after a cut back got %q", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no line after the cut back")
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Follow = %v", err)
	}
}

func TestFollowErrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	if err := Follow(context.Background(), path, 0, func([]byte) error { return nil }); err == nil {
		t.Fatal("following a missing file succeeded")
	}
	writeFile(t, path, "a\nb\n")
	stop := errors.New("stop")
	if err := Follow(context.Background(), path, 0, func([]byte) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("Follow = %v, want fn's error", err)
	}
	if err := Follow(context.Background(), path, 1, func([]byte) error { return nil }); err == nil {
		t.Fatal("an offset inside a line was accepted")
	}
}
