package vault

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const (
	crashStageEnv = "WIRKEN_VAULT_CRASH_STAGE"
	crashDirEnv   = "WIRKEN_VAULT_CRASH_DIR"
	crashReady    = "WIRKEN-VAULT-WRITER-BLOCKED"
)

// TestWriterKilled re-executes the test binary as a writer that blocks at
// an injected point of the atomic write and is then killed with SIGKILL.
// Killed after the temporary file is written but before the rename, the old
// file is intact and opens; killed after the rename, the new one does. The
// next writer removes the stale temporary file and takes the lock.
func TestWriterKilled(t *testing.T) {
	if stage := os.Getenv(crashStageEnv); stage != "" {
		crashChild(t, stage, os.Getenv(crashDirEnv))
		return
	}
	tests := []struct {
		stage   string
		want    string
		wantGen uint64
	}{
		{"synced", "old", 2},
		{"renamed", "new", 3},
	}
	for _, tc := range tests {
		t.Run(tc.stage, func(t *testing.T) {
			dir := t.TempDir()
			keyFile, path := filepath.Join(dir, "seal.key"), filepath.Join(dir, "vault.wv")
			if err := CreateAEADKeyFile(keyFile); err != nil {
				t.Fatal(err)
			}
			seal, err := AEADSeal(context.Background(), keyFile)
			if err != nil {
				t.Fatal(err)
			}
			if err := Create(context.Background(), path, seal); err != nil {
				t.Fatal(err)
			}
			v, err := Open(context.Background(), path, seal)
			if err != nil {
				t.Fatal(err)
			}
			mustPut(t, v, "cred", "old", "api.example.com")
			v.Close()

			killWriterAt(t, tc.stage, dir)

			w, err := Open(context.Background(), path, seal)
			if err != nil {
				t.Fatalf("after the writer was killed at %q the vault does not open: %v", tc.stage, err)
			}
			defer w.Close()
			if got, err := get(w, "cred", "api.example.com"); err != nil || got != tc.want || w.Generation() != tc.wantGen {
				t.Fatalf("killed at %q: cred = %q, %v, generation %d; want %q, %d", tc.stage, got, err, w.Generation(), tc.want, tc.wantGen)
			}
			temps := func() int {
				n := 0
				entries, _ := os.ReadDir(dir)
				for _, e := range entries {
					if strings.Contains(e.Name(), ".tmp-") {
						n++
					}
				}
				return n
			}
			if tc.stage == "synced" && temps() != 1 {
				t.Fatalf("want the killed writer's temporary file left behind, found %d", temps())
			}
			mustPut(t, w, "cred", "after", "api.example.com") // the lock is free again
			if temps() != 0 {
				t.Fatal("the next writer left the stale temporary file")
			}
		})
	}
}

// killWriterAt runs the child writer, waits until it blocks at stage, and
// kills it with SIGKILL.
func killWriterAt(t *testing.T, stage, dir string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestWriterKilled$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashStageEnv+"="+stage, crashDirEnv+"="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan bool, 1)
	var lines []string
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines = append(lines, sc.Text())
			if sc.Text() == crashReady {
				ready <- true
				return
			}
		}
		ready <- false
	}()
	select {
	case ok := <-ready:
		if !ok {
			cmd.Wait()
			t.Fatalf("writer ended without reaching %q:\n%s", stage, strings.Join(lines, "\n"))
		}
	case <-ctx.Done():
		t.Fatalf("writer did not reach %q in time", stage)
	}
	if err := cmd.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	if err := cmd.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("writer exit: %v, want killed", err)
	}
}

// crashChild is the writer: it puts a new value and blocks forever at stage.
func crashChild(t *testing.T, stage, dir string) {
	seal, err := AEADSeal(context.Background(), filepath.Join(dir, "seal.key"))
	if err != nil {
		t.Fatal(err)
	}
	v, err := Open(context.Background(), filepath.Join(dir, "vault.wv"), seal)
	if err != nil {
		t.Fatal(err)
	}
	writeHook = func(s string) {
		if s != stage {
			return
		}
		fmt.Println(crashReady)
		for {
			time.Sleep(time.Hour) // until SIGKILL
		}
	}
	_, err = v.Put(context.Background(), "cred", []byte("new"), Binding{Hosts: []string{"api.example.com"}})
	t.Fatalf("Put returned (%v) instead of blocking at %q", err, stage)
}
