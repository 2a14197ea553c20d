package hostagent

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/wirken/wirken/audit"
)

// TestLastAuditedGeneration: the generation of the last record that names one, not the
// highest, read from the end of the active file, with a torn final line ignored; 0 for no log.
func TestLastAuditedGeneration(t *testing.T) {
	cfg := &Config{}
	cfg.Audit.Log = filepath.Join(t.TempDir(), "audit.jsonl")
	if gen, err := lastAuditedGeneration(cfg); err != nil || gen != 0 {
		t.Fatalf("no log: %d, %v; want 0", gen, err)
	}
	l, err := audit.Open(cfg.Audit.Log, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range []uint64{3, 7, 5} {
		if _, err := l.Append(audit.Record{Type: "vault.reload", Generation: g}); err != nil {
			t.Fatal(err)
		}
	}
	for range 2000 { // many records without a generation after it, across read chunks
		if _, err := l.Append(audit.Record{Type: "request.deny", Detail: "no rule"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(cfg.Audit.Log, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"seq":99999,"type":"vault.reload","generation":11`) // torn: no newline
	f.Close()
	if gen, err := lastAuditedGeneration(cfg); err != nil || gen != 5 {
		t.Fatalf("got generation %d, %v; want 5 (the last named, not the highest 7, not the torn 11)", gen, err)
	}
}
