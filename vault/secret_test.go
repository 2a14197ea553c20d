package vault

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestRevealAndDestroy(t *testing.T) {
	v, _ := newVault(t)
	mustPut(t, v, "a", "alpha", "a.example")
	s, err := v.Reveal("a", "a.example")
	if err != nil {
		t.Fatal(err)
	}
	if string(s.Bytes()) != "alpha" {
		t.Fatalf("Bytes = %q", s.Bytes())
	}
	s.Destroy()
	s.Destroy() // idempotent
	if s.Bytes() != nil {
		t.Error("Bytes after Destroy is not nil")
	}
	if _, err := v.Reveal("a", "b.example"); !errors.Is(err, ErrHostNotAllowed) {
		t.Errorf("Reveal toward an unbound host: %v", err)
	}
	var nilSecret *Secret
	if nilSecret.Bytes() != nil {
		t.Error("nil Secret has bytes")
	}
	nilSecret.Destroy()
}

func TestRevealedSecretIsCollected(t *testing.T) {
	v, _ := newVault(t)
	mustPut(t, v, "a", "alpha")
	b := lockedPages()
	freeBefore := func() int { b.mu.Lock(); defer b.mu.Unlock(); return b.free }
	start := freeBefore()
	func() {
		s, err := v.Reveal("a", "h.example")
		if err != nil {
			t.Fatal(err)
		}
		if len(s.Bytes()) != 5 {
			t.Fatal("no value")
		}
		if freeBefore() >= start {
			t.Error("a live Secret holds no locked pages")
		}
	}()
	// The value stays cached while the vault is open; Close destroys it once the dropped
	// Secret's reference is given back.
	v.Close()
	for i := 0; i < 50 && freeBefore() != start; i++ {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	if freeBefore() != start {
		t.Errorf("a dropped Secret kept its locked pages: %d free, want %d", freeBefore(), start)
	}
}

func TestSecretNotComparable(t *testing.T) {
	if reflect.TypeFor[Secret]().Comparable() {
		t.Fatal("Secret is comparable with ==")
	}
}

// TestCanaryNeverLeaks stores a unique value and then looks for it in every
// error, format, encoding and log line the package can produce, and on disk.
func TestCanaryNeverLeaks(t *testing.T) {
	v, seal := newVault(t)
	c := canary(t)
	mustPut(t, v, "cred", c, "api.example.com")
	var out bytes.Buffer
	record := func(what string, a ...any) { fmt.Fprintln(&out, append([]any{what}, a...)...) }

	// Positive control: the value is reachable through the intended paths.
	s, err := v.Reveal("cred", "api.example.com")
	if err != nil || string(s.Bytes()) != c {
		t.Fatalf("control: Reveal = %v", err)
	}
	defer s.Destroy()

	// Formats and encodings of the Secret, by value and by pointer.
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%T"} {
		record(verb, fmt.Sprintf(verb, s), fmt.Sprintf(verb, *s), fmt.Sprintf(verb, []any{s}))
	}
	record("print", fmt.Sprint(s, *s), s.String(), s.GoString())
	j, err := json.Marshal(map[string]any{"p": s, "v": *s, "nested": struct{ S *Secret }{s}})
	record("json", string(j), err)
	txt, _ := s.MarshalText()
	record("text", string(txt))
	for _, h := range []slog.Handler{slog.NewJSONHandler(&out, nil), slog.NewTextHandler(&out, nil)} {
		slog.New(h).Info("use", "secret", s, "value", *s, "group", slog.GroupValue(slog.Any("s", s)))
	}

	// The Vault itself and its listing.
	record("vault", fmt.Sprintf("%v %+v %#v", v, v, v), fmt.Sprintf("%+v %#v", v.List(), v.List()))

	// Every error path we can reach with the secret in place.
	errs := []error{}
	add := func(err error) {
		if err == nil {
			t.Error("expected an error")
		}
		errs = append(errs, err)
	}
	add(v.WithSecret("cred", "evil.example", func([]byte) error { return nil }))
	add(v.WithSecret("cred", "bad host", func([]byte) error { return nil }))
	add(v.WithSecret("cred", "api.example.com", nil))
	add(v.WithSecret("other", "api.example.com", func([]byte) error { return nil }))
	_, err = v.Put(context.Background(), "bad name", []byte(c), Binding{})
	add(err)
	_, err = v.Put(context.Background(), "cred", []byte(c+strings.Repeat("x", maxValueLen)), Binding{})
	add(err)
	_, err = v.Put(context.Background(), "cred", []byte(c), Binding{Hosts: []string{"bad host"}})
	add(err)
	// A MAC-valid swap that makes the value fail to decrypt.
	rewrite(t, v, func(b *fileBody) { b.Secrets[0].Hosts = []string{"evil.example"} })
	_, err = Open(context.Background(), v.Path(), seal)
	add(err)
	// A corrupted file.
	raw, _ := os.ReadFile(v.Path())
	bad := filepath.Join(t.TempDir(), "bad")
	os.WriteFile(bad, bytes.Replace(raw, []byte(`"value":"`), []byte(`"value":"A`), 1), 0o600)
	_, err = Open(context.Background(), bad, seal)
	add(err)
	for _, err := range errs {
		record("error", err, fmt.Sprintf("%+v %#v", err, err))
	}

	if strings.Contains(out.String(), c) {
		t.Fatalf("canary leaked:\n%s", out.String())
	}
	if !strings.Contains(out.String(), redacted) {
		t.Fatal("no redacted marker in the output: the test looked at nothing")
	}
	for _, p := range []string{v.Path(), bad} {
		data, _ := os.ReadFile(p)
		if len(data) == 0 || bytes.Contains(data, []byte(c)) {
			t.Fatalf("%s is empty or holds the canary in plain text", p)
		}
	}
}
