package vault

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	wrapping "github.com/hashicorp/go-kms-wrapping/v2"
)

func TestRoundTrip(t *testing.T) {
	v, _ := newVault(t)
	puts := []struct {
		name, value string
		hosts       []string
		wantVersion int
	}{
		{"anthropic", "sk-ant-1", []string{"api.anthropic.com"}, 1},
		{"openai", "sk-openai", []string{"API.OpenAI.com.", "*.openai.com"}, 1},
		{"anthropic", "sk-ant-2", []string{"api.anthropic.com"}, 2},
		{"any.host_key-1", "x", nil, 1},
	}
	for _, p := range puts {
		if got := mustPut(t, v, p.name, p.value, p.hosts...); got != p.wantVersion {
			t.Errorf("Put(%q) version = %d, want %d", p.name, got, p.wantVersion)
		}
	}
	reads := []struct{ name, host, want string }{
		{"anthropic", "api.anthropic.com", "sk-ant-2"}, // newest version
		{"openai", "api.openai.com", "sk-openai"},
		{"openai", "eu.api.openai.com", "sk-openai"},
		{"any.host_key-1", "example.org", "x"},
	}
	for _, r := range reads {
		got, err := get(v, r.name, r.host)
		if err != nil || got != r.want {
			t.Errorf("WithSecret(%q, %q) = %q, %v; want %q", r.name, r.host, got, err, r.want)
		}
	}
	var names []string
	for _, s := range v.List() {
		names = append(names, fmt.Sprintf("%s@%d%v", s.Name, s.Version, s.Hosts))
		if s.Created.IsZero() {
			t.Errorf("%s@%d: zero Created", s.Name, s.Version)
		}
	}
	want := []string{"anthropic@1[api.anthropic.com]", "anthropic@2[api.anthropic.com]", "any.host_key-1@1[]", "openai@1[*.openai.com api.openai.com]"}
	if !slices.Equal(names, want) {
		t.Errorf("List = %v, want %v", names, want)
	}
}

func TestReopenFromDisk(t *testing.T) {
	v, seal := newVault(t)
	mustPut(t, v, "a", "alpha", "a.example")
	mustPut(t, v, "b", "beta")
	mustPut(t, v, "a", "alpha2", "a.example")
	gen, list := v.Generation(), v.List()
	v.Close()

	w, err := Open(context.Background(), v.Path(), seal)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if w.Generation() != gen || gen != 4 {
		t.Errorf("generation after reopen = %d, before = %d, want 4", w.Generation(), gen)
	}
	if fmt.Sprint(w.List()) != fmt.Sprint(list) {
		t.Errorf("List after reopen = %v, want %v", w.List(), list)
	}
	for name, want := range map[string]string{"a": "alpha2", "b": "beta"} {
		if got, err := get(w, name, "a.example"); err != nil || got != want {
			t.Errorf("%s = %q, %v; want %q", name, got, err, want)
		}
	}
	// Still writable after reopening.
	if ver := mustPut(t, w, "b", "beta2"); ver != 2 {
		t.Errorf("version = %d, want 2", ver)
	}
}

func TestFileModes(t *testing.T) {
	v, _ := newVault(t)
	mustPut(t, v, "a", "x")
	for _, p := range []string{v.Path(), v.Path() + ".lock"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", p, fi.Mode().Perm())
		}
	}
	left, _ := filepath.Glob(filepath.Join(filepath.Dir(v.Path()), ".*tmp-*"))
	if len(left) != 0 {
		t.Errorf("temporary files left behind: %v", left)
	}
}

func TestCreateRefusesExisting(t *testing.T) {
	seal := newSeal(t)
	dir := t.TempDir()
	tests := []struct {
		name  string
		setup func(path string)
	}{
		{"vault", func(p string) {
			if err := Create(context.Background(), p, seal); err != nil {
				t.Fatal(err)
			}
		}},
		{"other file", func(p string) { os.WriteFile(p, []byte("keep me"), 0o600) }},
		{"dangling symlink", func(p string) { os.Symlink(filepath.Join(dir, "nowhere"), p) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_"))
			tc.setup(path)
			before, _ := os.Readlink(path)
			data, _ := os.ReadFile(path)
			err := Create(context.Background(), path, seal)
			if !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), path) {
				t.Fatalf("Create over %s: %v, want ErrExists naming the file", tc.name, err)
			}
			after, _ := os.Readlink(path)
			data2, _ := os.ReadFile(path)
			if before != after || !bytes.Equal(data, data2) {
				t.Error("existing file was changed")
			}
		})
	}
}

// testSeal reports a fixed type and key ID over any aead key: it lets a
// wrong key reach the decryption step instead of failing the key ID match.
type testSeal struct {
	Seal
	typ wrapping.WrapperType
	kid string
}

func (s testSeal) KeyId(context.Context) (string, error) { return s.kid, nil }

func (s testSeal) Type(context.Context) (wrapping.WrapperType, error) { return s.typ, nil }

func TestWrongSealRefused(t *testing.T) {
	v, seal := newVault(t)
	mustPut(t, v, "a", "x")
	v.Close()
	kid, _ := seal.KeyId(context.Background())
	other := newSeal(t)
	tests := []struct {
		name string
		seal Seal
		want string
	}{
		{"other key file", other, "unwrapping the root key"},
		{"other key, same key id", testSeal{other, wrapping.WrapperTypeAead, kid}, "unwrapping the root key"},
		{"seal of another type", testSeal{other, wrapping.WrapperTypeTransit, kid}, `no seal entry for type "transit"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w, err := Open(context.Background(), v.Path(), tc.seal)
			if !errors.Is(err, ErrSeal) || !strings.Contains(err.Error(), v.Path()) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Open = %v, %v; want ErrSeal naming the file and %q", w, err, tc.want)
			}
		})
	}
}

func TestOpenRefusesBadFiles(t *testing.T) {
	v, seal := newVault(t)
	mustPut(t, v, "a", "x", "a.example")
	good, err := os.ReadFile(v.Path())
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(good), "\n")
	tests := []struct {
		name    string
		data    string
		wantErr error
		wantMsg string
	}{
		{"empty", "", ErrCorrupt, "bad magic"},
		{"bad magic", "hello\n" + lines[1] + lines[2], ErrCorrupt, "line 1: bad magic"},
		{"newer version", "wirken-vault/2\n" + lines[1] + lines[2], ErrUnsupportedVersion, `"2"`},
		{"bad JSON", lines[0] + `{"vault_id":x}` + "\n" + lines[2], ErrCorrupt, "line 2, column 13"},
		{"wrong type", lines[0] + `{"generation":"1"}` + "\n" + lines[2], ErrCorrupt, `"generation" has the wrong type`},
		{"unknown field", lines[0] + `{"extra":1}` + "\n" + lines[2], ErrCorrupt, "unknown field"},
		{"not canonical", lines[0] + " " + lines[1] + lines[2], ErrCorrupt, "canonical"},
		{"no mac line", lines[0] + lines[1], ErrCorrupt, "line 3"},
		{"two mac lines", lines[0] + lines[1] + lines[2] + lines[2], ErrCorrupt, "line 3"},
		{"bad mac", lines[0] + lines[1] + "mac:" + strings.Repeat("A", 43) + "=\n", ErrCorrupt, "MAC does not verify"},
		{"mac of other body", lines[0] + strings.Replace(lines[1], `"generation":2`, `"generation":1`, 1) + lines[2], ErrCorrupt, "MAC does not verify"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "v")
			if err := os.WriteFile(path, []byte(tc.data), 0o600); err != nil {
				t.Fatal(err)
			}
			w, err := Open(context.Background(), path, seal)
			if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("Open = %v, %v; want %v naming the file and %q", w, err, tc.wantErr, tc.wantMsg)
			}
		})
	}
}

// TestOpenRefusesEveryByteFlip changes every byte of a real vault file in
// two ways, and cuts it at every length: each result is refused, nothing panics.
func TestOpenRefusesEveryByteFlip(t *testing.T) {
	v, seal := newVault(t)
	mustPut(t, v, "a", "alpha", "a.example")
	mustPut(t, v, "b", "beta")
	good, err := os.ReadFile(v.Path())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := unseal(context.Background(), good, seal); err != nil {
		t.Fatalf("control: unmodified file refused: %v", err)
	}
	ctx := context.Background()
	for i := range good {
		for _, mask := range []byte{0x01, 0xff} {
			bad := bytes.Clone(good)
			bad[i] ^= mask
			if _, err := unseal(ctx, bad, seal); err == nil {
				t.Fatalf("byte %d ^ %#x accepted", i, mask)
			} else if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrSeal) && !errors.Is(err, ErrUnsupportedVersion) {
				t.Fatalf("byte %d ^ %#x: unexpected error class: %v", i, mask, err)
			}
		}
	}
	for n := range len(good) {
		if _, err := unseal(ctx, good[:n], seal); err == nil {
			t.Fatalf("file cut to %d bytes accepted", n)
		}
	}
}

// TestAdditionalDataBindsSecrets edits the file as someone holding the MAC
// key could: every move of ciphertext to another slot, version or binding
// must be refused when the file is opened, with an error naming the secret
// and the part that failed, instead of ever yielding a value.
func TestAdditionalDataBindsSecrets(t *testing.T) {
	secretOf := func(b *fileBody, name string) *secretEntry {
		for i := range b.Secrets {
			if b.Secrets[i].Name == name {
				return &b.Secrets[i]
			}
		}
		t.Fatalf("no secret %q", name)
		return nil
	}
	const dekFails, valueFails = "data key does not decrypt", "value does not decrypt for this name, version and binding"
	tests := []struct {
		name   string
		mutate func(*fileBody)
		want   string
	}{
		{"value of b in a", func(b *fileBody) { secretOf(b, "a").Value = secretOf(b, "b").Value }, `secret "a" version 1: ` + valueFails},
		{"dek of b in a", func(b *fileBody) { secretOf(b, "a").DEK = secretOf(b, "b").DEK }, `secret "a" version 1: ` + dekFails},
		{"whole crypto of b in a", func(b *fileBody) {
			a, s := secretOf(b, "a"), secretOf(b, "b")
			a.DEK, a.Value = s.DEK, s.Value
		}, `secret "a" version 1: ` + dekFails},
		{"a rebound to another host", func(b *fileBody) { secretOf(b, "a").Hosts = []string{"evil.example"} }, `secret "a" version 1: ` + valueFails},
		{"a unbound", func(b *fileBody) { secretOf(b, "a").Hosts = []string{} }, `secret "a" version 1: ` + valueFails},
		{"a renumbered", func(b *fileBody) { secretOf(b, "a").Version = 7 }, `secret "a" version 7: ` + dekFails},
		{"b renamed to a", func(b *fileBody) {
			b.Secrets = slices.DeleteFunc(b.Secrets, func(s secretEntry) bool { return s.Name == "a" })
			secretOf(b, "b").Name = "a"
		}, `secret "a" version 1: ` + dekFails},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, seal := newVault(t)
			mustPut(t, v, "a", "alpha", "a.example")
			mustPut(t, v, "b", "beta", "a.example")
			rewrite(t, v, tc.mutate)
			w, err := Open(context.Background(), v.Path(), seal)
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Open after a MAC-valid edit = %v, %v; want ErrCorrupt with %q", w, err, tc.want)
			}
			// The Vault that wrote the file keeps serving its own snapshot.
			if got, err := get(v, "a", "a.example"); err != nil || got != "alpha" {
				t.Fatalf("the writer's snapshot: %q, %v", got, err)
			}
		})
	}
}

func TestBindingEnforced(t *testing.T) {
	v, _ := newVault(t)
	mustPut(t, v, "exact", "e", "api.example.com")
	mustPut(t, v, "wild", "w", "*.example.com")
	mustPut(t, v, "ip", "i", "10.0.0.7", "::1")
	mustPut(t, v, "free", "f")
	tests := []struct {
		name, host string
		allowed    bool
	}{
		{"exact", "api.example.com", true},
		{"exact", "API.Example.COM.", true},
		{"exact", "example.com", false},
		{"exact", "x.api.example.com", false},
		{"exact", "api.example.com.evil.net", false},
		{"wild", "a.example.com", true},
		{"wild", "a.b.example.com", true},
		{"wild", "example.com", false},
		{"wild", "badexample.com", false},
		{"ip", "10.0.0.7", true},
		{"ip", "::ffff:10.0.0.7", true},
		{"ip", "0:0:0:0:0:0:0:1", true},
		{"ip", "10.0.0.8", false},
		{"free", "anything.example", true},
	}
	for _, tc := range tests {
		got, err := get(v, tc.name, tc.host)
		switch {
		case tc.allowed && (err != nil || got == ""):
			t.Errorf("%s toward %s: %v, want allowed", tc.name, tc.host, err)
		case !tc.allowed && !errors.Is(err, ErrHostNotAllowed):
			t.Errorf("%s toward %s: %v, want ErrHostNotAllowed", tc.name, tc.host, err)
		}
	}
	for _, host := range []string{"", "api.example.com:443", "[::1]", "a b", "fe80::1%eth0"} {
		if _, err := get(v, "free", host); !errors.Is(err, ErrInvalid) {
			t.Errorf("host %q: %v, want ErrInvalid", host, err)
		}
	}
}

func TestGenerationIncrements(t *testing.T) {
	v, seal := newVault(t)
	if v.Generation() != 1 {
		t.Fatalf("new vault generation = %d, want 1", v.Generation())
	}
	for i := 2; i <= 5; i++ {
		mustPut(t, v, "a", fmt.Sprint(i))
		if v.Generation() != uint64(i) {
			t.Fatalf("after put %d generation = %d", i-1, v.Generation())
		}
	}
	w, err := Open(context.Background(), v.Path(), seal)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if w.Generation() != 5 {
		t.Errorf("reopened generation = %d, want 5", w.Generation())
	}
}

func TestPutConflict(t *testing.T) {
	a, seal := newVault(t)
	b, err := Open(context.Background(), a.Path(), seal)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	mustPut(t, a, "x", "1")
	if _, err := b.Put(context.Background(), "y", []byte("2"), Binding{}); !errors.Is(err, ErrConflict) {
		t.Fatalf("Put on a stale Vault: %v, want ErrConflict", err)
	}
	if _, err := get(b, "y", "h.example"); !errors.Is(err, ErrNotFound) {
		t.Errorf("refused Put is visible: %v", err)
	}
	if got, err := get(a, "x", "h.example"); err != nil || got != "1" {
		t.Errorf("a lost its write: %q, %v", got, err)
	}
}

func TestPutRejects(t *testing.T) {
	v, _ := newVault(t)
	long := strings.Repeat("a", 64)
	tests := []struct {
		name  string
		value []byte
		hosts []string
	}{
		{"", []byte("x"), nil},
		{"Upper", []byte("x"), nil},
		{"1abc", []byte("x"), nil},
		{"a|b", []byte("x"), nil},
		{"a/b", []byte("x"), nil},
		{long, []byte("x"), nil},
		{"ok", nil, nil},
		{"ok", []byte{}, nil},
		{"ok", make([]byte, maxValueLen+1), nil},
		{"ok", []byte("x"), []string{"*"}},
		{"ok", []byte("x"), []string{"*.10.0.0.1"}},
		{"ok", []byte("x"), []string{"a..b"}},
		{"ok", []byte("x"), []string{"-a.example"}},
		{"ok", []byte("x"), []string{"bücher.example"}},
		{"ok", []byte("x"), []string{"host:443"}},
		{"ok", []byte("x"), make([]string, maxBindingHosts+1)},
	}
	for _, tc := range tests {
		if _, err := v.Put(context.Background(), tc.name, tc.value, Binding{Hosts: tc.hosts}); !errors.Is(err, ErrInvalid) {
			t.Errorf("Put(%q, %d bytes, %q) = %v, want ErrInvalid", tc.name, len(tc.value), tc.hosts, err)
		}
	}
	if v.Generation() != 1 || len(v.List()) != 0 {
		t.Errorf("rejected Puts changed the vault: generation %d, %d secrets", v.Generation(), len(v.List()))
	}
	if ver := mustPut(t, v, long[:63], string(make([]byte, maxValueLen))); ver != 1 {
		t.Errorf("limits: version %d", ver)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := v.Put(ctx, "ok", []byte("x"), Binding{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Put with a cancelled context: %v", err)
	}
}

func TestWithSecretErrors(t *testing.T) {
	v, _ := newVault(t)
	mustPut(t, v, "a", "x", "a.example")
	sentinel := errors.New("from fn")
	tests := []struct {
		name, host string
		fn         func([]byte) error
		want       error
	}{
		{"missing", "a.example", func([]byte) error { return nil }, ErrNotFound},
		{"BAD", "a.example", func([]byte) error { return nil }, ErrInvalid},
		{"a", "a.example", nil, ErrInvalid},
		{"a", "a.example", func([]byte) error { return sentinel }, sentinel},
	}
	for _, tc := range tests {
		if err := v.WithSecret(tc.name, tc.host, tc.fn); !errors.Is(err, tc.want) {
			t.Errorf("WithSecret(%q, %q) = %v, want %v", tc.name, tc.host, err, tc.want)
		}
	}
}

func TestClose(t *testing.T) {
	v, _ := newVault(t)
	mustPut(t, v, "a", "x")
	v.Close()
	v.Close() // idempotent
	if _, err := get(v, "a", "h.example"); !errors.Is(err, ErrClosed) {
		t.Errorf("WithSecret after Close: %v", err)
	}
	if _, err := v.Reveal("a", "h.example"); !errors.Is(err, ErrClosed) {
		t.Errorf("Reveal after Close: %v", err)
	}
	if _, err := v.Put(context.Background(), "b", []byte("y"), Binding{}); !errors.Is(err, ErrClosed) {
		t.Errorf("Put after Close: %v", err)
	}
	if v.List() != nil || v.Generation() != 0 || v.DeriveKey("audit") != nil {
		t.Error("List, Generation or DeriveKey still answer after Close")
	}
}

func TestDeriveKey(t *testing.T) {
	v, seal := newVault(t)
	k1 := v.DeriveKey("audit-ed25519")
	if len(k1) != 32 {
		t.Fatalf("key length %d", len(k1))
	}
	w, err := Open(context.Background(), v.Path(), seal)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	other, _ := newVault(t)
	tests := []struct {
		name  string
		got   []byte
		equal bool
	}{
		{"same label after reopen", w.DeriveKey("audit-ed25519"), true},
		{"other label", v.DeriveKey("audit-hmac"), false},
		{"other vault", other.DeriveKey("audit-ed25519"), false},
	}
	for _, tc := range tests {
		if bytes.Equal(tc.got, k1) != tc.equal || len(tc.got) != 32 {
			t.Errorf("%s: equal = %v, want %v", tc.name, !tc.equal, tc.equal)
		}
	}
	for _, label := range []string{"", "file-mac"} {
		if k := v.DeriveKey(label); k != nil {
			t.Errorf("DeriveKey(%q) returned a key", label)
		}
	}
}

func TestConcurrentWithSecret(t *testing.T) {
	v, _ := newVault(t)
	values := map[string]string{}
	for i := range 4 {
		name := fmt.Sprintf("s%d", i)
		values[name] = strings.Repeat(name, 100*(i+1)) // up to 2 pages
		mustPut(t, v, name, values[name], "h.example")
	}
	const workers, rounds = 16, 25
	var wg sync.WaitGroup
	errs := make(chan error, workers+1)
	for w := range workers {
		wg.Go(func() {
			for r := range rounds {
				name := fmt.Sprintf("s%d", (w+r)%4)
				err := v.WithSecret(name, "h.example", func(b []byte) error {
					if string(b) != values[name] {
						return fmt.Errorf("%s: wrong value", name)
					}
					return nil
				})
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Go(func() { // a writer alongside the readers
		for i := range 5 {
			if _, err := v.Put(context.Background(), "w", []byte{byte(i + 1)}, Binding{}); err != nil {
				errs <- err
				return
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	b := lockedPages()
	b.mu.Lock()
	free, total := b.free, b.total
	b.mu.Unlock()
	if free != total {
		t.Errorf("locked pages leaked: %d of %d free", free, total)
	}
}

func TestWithSecretVersion(t *testing.T) {
	v, _ := newVault(t)
	ctx := context.Background()
	for want := 1; want <= 2; want++ {
		if _, err := v.Put(ctx, "k", []byte("value-"+strconv.Itoa(want)), Binding{}); err != nil {
			t.Fatal(err)
		}
		err := v.WithSecretVersion("k", "api.example.test", func(b []byte, ver int) error {
			if ver != want || string(b) != "value-"+strconv.Itoa(want) {
				t.Fatalf("got %q version %d; want value-%d version %d", b, ver, want, want)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}
