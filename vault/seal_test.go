package vault

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	wrapping "github.com/hashicorp/go-kms-wrapping/v2"
	"google.golang.org/protobuf/proto"
)

func TestCreateAEADKeyFile(t *testing.T) {
	kf := filepath.Join(t.TempDir(), "k")
	if err := CreateAEADKeyFile(kf); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(kf)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	data, _ := os.ReadFile(kf)
	if key, err := parseKeyFile(data); err != nil || len(key) != 32 {
		t.Fatalf("key file does not hold 32 base64 bytes: %v", err)
	}
	if err := CreateAEADKeyFile(kf); !errors.Is(err, ErrExists) {
		t.Fatalf("second CreateAEADKeyFile: %v, want ErrExists", err)
	}
	data2, _ := os.ReadFile(kf)
	if string(data) != string(data2) {
		t.Fatal("existing key file was overwritten")
	}
	s1, err := AEADSeal(context.Background(), kf)
	if err != nil {
		t.Fatal(err)
	}
	s2 := newSeal(t)
	id1, _ := s1.KeyId(context.Background())
	id2, _ := s2.KeyId(context.Background())
	if id1 == "" || id1 == id2 || !strings.HasPrefix(id1, "aead-") {
		t.Errorf("key ids %q and %q: want distinct non-empty ids", id1, id2)
	}
}

func TestAEADSealRefuses(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	if err := CreateAEADKeyFile(good); err != nil {
		t.Fatal(err)
	}
	keyText, _ := os.ReadFile(good)
	c := canary(t)
	write := func(name string, data []byte, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // not subject to umask
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name string
		path string
		want string
	}{
		{"group readable", write("g", keyText, 0o640), "mode 0640"},
		{"other readable", write("o", keyText, 0o604), "mode 0604"},
		{"group writable", write("gw", keyText, 0o620), "mode 0620"},
		{"a directory", dir, "not a regular file"},
		{"not base64", write("nb", []byte(c), 0o600), "base64 of 32 bytes"},
		{"short key", write("short", []byte("AAAA\n"), 0o600), "base64 of 32 bytes"},
		{"long key", write("long", []byte(strings.Repeat("A", 64)), 0o600), "base64 of 32 bytes"},
		{"missing", filepath.Join(dir, "none"), "no such file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := AEADSeal(context.Background(), tc.path)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("AEADSeal = %v, %v; want error with %q", s, err, tc.want)
			}
			msg := err.Error()
			if strings.Contains(msg, strings.TrimSpace(string(keyText))) || strings.Contains(msg, c) {
				t.Fatalf("error reveals key file content: %v", err)
			}
		})
	}
}

// panicSeal stands in for a wrapper that panics on input it does not expect,
// as go-kms-wrapping's aead wrapper does on short ciphertext.
type panicSeal struct{ Seal }

func (panicSeal) Decrypt(context.Context, *wrapping.BlobInfo, ...wrapping.Option) ([]byte, error) {
	panic("boom")
}

func TestUnwrapRootContainsPanics(t *testing.T) {
	seal := newSeal(t)
	blob, err := seal.Encrypt(context.Background(), make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	raw := mustMarshal(t, blob)
	if _, err := unwrapRoot(context.Background(), panicSeal{seal}, raw); !errors.Is(err, ErrSeal) {
		t.Errorf("panicking seal: %v, want ErrSeal", err)
	}
	blob.Ciphertext = blob.Ciphertext[:5]
	if _, err := unwrapRoot(context.Background(), seal, mustMarshal(t, blob)); !errors.Is(err, ErrCorrupt) {
		t.Errorf("short ciphertext: %v, want ErrCorrupt", err)
	}
	if _, err := unwrapRoot(context.Background(), seal, []byte{0xff, 0xff}); !errors.Is(err, ErrCorrupt) {
		t.Errorf("not protobuf: %v, want ErrCorrupt", err)
	}
}

func mustMarshal(t *testing.T, b *wrapping.BlobInfo) []byte {
	t.Helper()
	raw, err := proto.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}
