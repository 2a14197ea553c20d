package vault

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	wrapping "github.com/hashicorp/go-kms-wrapping/v2"
)

// startSWTPM runs a fresh software TPM 2.0 (Debian's swtpm) on a Unix
// socket and returns the socket path. Each one has its own random seeds,
// so it is a different TPM. Without swtpm the test is skipped, except under
// CI=true, where it fails.
func startSWTPM(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("swtpm")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("swtpm is not installed (apt-get install swtpm) and CI=true forbids skipping")
		}
		t.Skip("swtpm is not installed")
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "tpm.sock")
	cmd := exec.Command(bin, "socket", "--tpm2", "--tpmstate", "dir="+dir,
		"--server", "type=unixio,path="+sock, "--ctrl", "type=unixio,path="+filepath.Join(dir, "ctrl.sock"),
		"--flags", "not-need-init,startup-clear")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	for deadline := time.Now().Add(10 * time.Second); ; {
		if fi, err := os.Stat(sock); err == nil && fi.Mode()&os.ModeSocket != 0 {
			return sock
		}
		if time.Now().After(deadline) {
			t.Fatalf("swtpm did not start: %s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func newTPMSealAt(t *testing.T, sock string) Seal {
	t.Helper()
	s, err := NewSeal(context.Background(), SealConfig{Type: "tpm2", Options: map[string]string{"device": sock}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { FinalizeSeal(context.Background(), s) })
	return s
}

// TestTPM2RoundTrip seals a vault to a (software) TPM, reopens it through a
// new connection, and pairs it with a local aead entry.
func TestTPM2RoundTrip(t *testing.T) {
	sock := startSWTPM(t)
	seal := newTPMSealAt(t, sock)
	path := filepath.Join(t.TempDir(), "vault.wv")
	if err := Create(context.Background(), path, seal); err != nil {
		t.Fatal(err)
	}
	v, err := Open(context.Background(), path, seal)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	mustPut(t, v, "cred", "c1", "api.example.com")
	e := v.SealEntries()
	if len(e) != 1 || e[0].Type != "tpm2" || !strings.HasPrefix(e[0].KeyID, "tpm2-srk-") {
		t.Fatalf("seal entries %+v", e)
	}
	openWith(t, path, newTPMSealAt(t, sock), "c1") // a new connection, the same TPM

	local := newSeal(t)
	if err := v.Rewrap(context.Background(), local, nil); err != nil {
		t.Fatal(err)
	}
	openWith(t, path, local, "c1")
	openWith(t, path, seal, "c1")
	if err := v.RotateRoot(context.Background(), seal, local); err != nil {
		t.Fatal(err)
	}
	openWith(t, path, seal, "c1")
}

// TestTPM2OtherTPMRefused: a root key sealed to one TPM does not unseal on
// another, and a corrupted TPM blob is refused without a panic.
func TestTPM2OtherTPMRefused(t *testing.T) {
	s1 := newTPMSealAt(t, startSWTPM(t))
	s2 := newTPMSealAt(t, startSWTPM(t))
	k1, _ := s1.KeyId(context.Background())
	k2, _ := s2.KeyId(context.Background())
	if k1 == k2 {
		t.Fatalf("two TPMs report the same key id %q", k1)
	}
	blob, err := s1.Encrypt(context.Background(), make([]byte, keyLen))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s2.Decrypt(context.Background(), blob); err == nil {
		t.Fatal("another TPM unsealed the blob")
	}
	path := filepath.Join(t.TempDir(), "vault.wv")
	if err := Create(context.Background(), path, s1); err != nil {
		t.Fatal(err)
	}
	// Same type, other key id: the entry is tried, and the TPM refuses.
	if _, err := Open(context.Background(), path, s2); !errors.Is(err, ErrSeal) || !strings.Contains(err.Error(), `seal entry "s1"`) {
		t.Fatalf("Open on another TPM: %v", err)
	}
	for _, n := range []int{0, 1, 3, len(blob.Ciphertext) / 2, len(blob.Ciphertext) - 1} {
		bad := &wrapping.BlobInfo{Ciphertext: bytes.Clone(blob.Ciphertext)}
		bad.Ciphertext[n] ^= 0x40
		if _, err := s1.Decrypt(context.Background(), bad); err == nil {
			t.Fatalf("byte %d flipped: blob accepted", n)
		}
	}
}
