package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// openPTY opens a pseudo-terminal pair: what a person's terminal looks like to the daemon.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("opening a pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return m, s
}

// logLine logs one debug and one info record through newLoggerTo and returns what came out.
func logLine(t *testing.T, out, read *os.File, level, format string) string {
	t.Helper()
	l, err := newLoggerTo(out, level, format)
	if err != nil {
		t.Fatal(err)
	}
	l.Debug("hidden at info")
	l.Info("hello", "k", "v")
	buf := make([]byte, 4096)
	n, err := read.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return string(buf[:n])
}

func TestLoggerFormat(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	// A pipe (journald, a file) gets JSON.
	got := logLine(t, w, r, "info", "auto")
	var rec map[string]any
	if err := json.Unmarshal(bytes.TrimSpace([]byte(got)), &rec); err != nil || rec["msg"] != "hello" || rec["k"] != "v" {
		t.Fatalf("auto on a pipe: %q (%v); want one JSON record", got, err)
	}
	if strings.Contains(got, "hidden") {
		t.Fatal("a debug record passed level info")
	}
	// A terminal gets text.
	m, s := openPTY(t)
	got = logLine(t, s, m, "info", "auto")
	if !strings.Contains(got, "level=INFO msg=hello k=v") {
		t.Fatalf("auto on a terminal: %q; want slog text", got)
	}
	// Explicit formats win.
	if got := logLine(t, s, m, "info", "json"); !strings.HasPrefix(got, "{") {
		t.Fatalf("json on a terminal: %q", got)
	}
	if got := logLine(t, w, r, "debug", "text"); !strings.Contains(got, "msg=\"hidden at info\"") {
		t.Fatalf("text at debug on a pipe: %q", got)
	}
	if _, err := newLoggerTo(w, "loud", "auto"); err == nil {
		t.Fatal("log level loud was accepted")
	}
}
