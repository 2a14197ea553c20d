package hostagent

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wirken/wirken/mitm"
	"github.com/wirken/wirken/policy"
)

// The daemon's policy must let the proxy find placeholders, or stray ones would pass.
var _ mitm.PlaceholderFinder = (*livePolicy)(nil)

func TestBudgetsSurviveRestart(t *testing.T) {
	p, err := policy.Parse("p.toml", []byte(`version = 1
[agents.bot]
[[rules]]
name = "llm"
agent = "bot"
hosts = ["api.test"]
daily_tokens = 10
`))
	if err != nil {
		t.Fatal(err)
	}
	g := p.Authorize(policy.Request{Agent: "bot", Method: "POST", Host: "api.test", Port: 443, Path: "/"})
	path := filepath.Join(t.TempDir(), "budgets.json")
	m, err := loadMeter(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { keepMeter(ctx, m, path, slog.New(slog.NewTextHandler(io.Discard, nil))); close(done) }()
	m.Spend("bot", g, 10)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if b, _ := os.ReadFile(path); strings.Contains(string(b), `"tokens": 10`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the token use was not saved")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	// A restarted daemon still refuses the spent budget.
	m2, err := loadMeter(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := m2.Admit("bot", g); !errors.Is(err, policy.ErrBudgetSpent) {
		t.Fatalf("after restart: %v", err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", fi.Mode())
	}
	// A damaged file is refused, naming it.
	os.WriteFile(path, []byte("{"), 0o600)
	if _, err := loadMeter(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("damaged file: %v", err)
	}
}
