package vault

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	wrapping "github.com/hashicorp/go-kms-wrapping/v2"
)

// fileBodyOf reads and parses the vault file at path.
func fileBodyOf(t *testing.T, path string) fileBody {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	p, err := parseFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	return p.body
}

// secretCrypto is every secret's (dek, value) ciphertext, by name@version.
func secretCrypto(b fileBody) (deks, values map[string]string) {
	deks, values = map[string]string{}, map[string]string{}
	for _, s := range b.Secrets {
		k := fmt.Sprintf("%s@%d", s.Name, s.Version)
		deks[k], values[k] = s.DEK, s.Value
	}
	return deks, values
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// openWith opens path with seal and checks it serves cred = want.
func openWith(t *testing.T, path string, seal Seal, want string) {
	t.Helper()
	w, err := Open(context.Background(), path, seal)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer w.Close()
	if got, err := get(w, "cred", "api.example.com"); err != nil || got != want {
		t.Fatalf("cred = %q, %v; want %q", got, err, want)
	}
}

func TestUnsealWithEachOfTwoEntries(t *testing.T) {
	v, s1 := newVault(t)
	s2 := newSeal(t)
	mustPut(t, v, "cred", "c1", "api.example.com")
	if err := v.Rewrap(context.Background(), s2, nil); err != nil {
		t.Fatal(err)
	}
	entries := v.SealEntries()
	k1, _ := s1.KeyId(context.Background())
	k2, _ := s2.KeyId(context.Background())
	if len(entries) != 2 || entries[0] != (SealEntry{ID: "s1", Type: "aead", KeyID: k1}) || entries[1] != (SealEntry{ID: "s2", Type: "aead", KeyID: k2}) {
		t.Fatalf("SealEntries = %+v", entries)
	}
	for _, seal := range []Seal{s1, s2} {
		openWith(t, v.Path(), seal, "c1")
	}
	if _, err := Open(context.Background(), v.Path(), newSeal(t)); !errors.Is(err, ErrSeal) {
		t.Fatalf("a third, unrelated seal: %v, want ErrSeal", err)
	}
}

// TestRewrapMovesToANewSeal adds a new seal and drops the old one without
// re-encrypting any secret; only the new seal opens the result.
func TestRewrapMovesToANewSeal(t *testing.T) {
	v, oldSeal := newVault(t)
	mustPut(t, v, "cred", "c1", "api.example.com")
	mustPut(t, v, "other", "o1")
	before := fileBodyOf(t, v.Path())
	newS := newSeal(t)
	if err := v.Rewrap(context.Background(), newS, []string{"s1"}); err != nil {
		t.Fatal(err)
	}
	after := fileBodyOf(t, v.Path())
	d0, v0 := secretCrypto(before)
	d1, v1 := secretCrypto(after)
	if !mapsEqual(d0, d1) || !mapsEqual(v0, v1) || before.Keyring != after.Keyring {
		t.Fatal("rewrap re-encrypted secrets or the keyring")
	}
	if len(after.Seals) != 1 || after.Seals[0].ID != "s2" || after.Generation != before.Generation+1 {
		t.Fatalf("seals %+v generation %d", after.Seals, after.Generation)
	}
	openWith(t, v.Path(), newS, "c1")
	if _, err := Open(context.Background(), v.Path(), oldSeal); !errors.Is(err, ErrSeal) {
		t.Fatalf("the removed seal still opens the vault: %v", err)
	}
	// The Vault that rewrapped keeps working and writing.
	mustPut(t, v, "cred", "c2", "api.example.com")
	openWith(t, v.Path(), newS, "c2")
}

func TestRewrapRefuses(t *testing.T) {
	v, seal := newVault(t)
	mustPut(t, v, "cred", "c1", "api.example.com")
	s2 := newSeal(t)
	if err := v.Rewrap(context.Background(), s2, nil); err != nil {
		t.Fatal(err)
	}
	gen := v.Generation()
	tests := []struct {
		name   string
		add    Seal
		remove []string
		want   error
		msg    string
	}{
		{"nothing", nil, nil, ErrInvalid, "nothing to add or remove"},
		{"unknown id", nil, []string{"s9"}, ErrInvalid, `no seal entry "s9"`},
		{"remove every entry", nil, []string{"s1", "s2"}, ErrInvalid, "no seal entry"},
		{"add a seal twice", seal, nil, ErrExists, `seal entry "s1" is already this seal`},
		{"seal that fails", failingSeal{seal}, nil, ErrSeal, "unwrapping the root key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := v.Rewrap(context.Background(), tc.add, tc.remove)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("Rewrap = %v, want %v with %q", err, tc.want, tc.msg)
			}
			if v.Generation() != gen || len(v.SealEntries()) != 2 {
				t.Fatal("a refused rewrap changed the vault")
			}
		})
	}
	// Replacing: the same seal added again while its old entry goes.
	if err := v.Rewrap(context.Background(), seal, []string{"s1"}); err != nil {
		t.Fatal(err)
	}
	if ids := v.SealEntries(); len(ids) != 2 || ids[0].ID != "s2" || ids[1].ID != "s3" {
		t.Fatalf("after replace: %+v", ids)
	}
	openWith(t, v.Path(), seal, "c1")
}

// failingSeal wraps but cannot unwrap: Rewrap must notice before writing.
type failingSeal struct{ Seal }

func (failingSeal) KeyId(context.Context) (string, error) { return "aead-failing", nil }

func (failingSeal) Decrypt(context.Context, *wrapping.BlobInfo, ...wrapping.Option) ([]byte, error) {
	return nil, errors.New("cannot decrypt")
}

func TestRotateKeyring(t *testing.T) {
	v, seal := newVault(t)
	mustPut(t, v, "cred", "c1", "api.example.com")
	mustPut(t, v, "cred", "c2", "api.example.com")
	mustPut(t, v, "other", "o1")
	before := fileBodyOf(t, v.Path())
	for want := uint32(2); want <= 3; want++ {
		term, err := v.RotateKeyring(context.Background())
		if err != nil || term != want {
			t.Fatalf("RotateKeyring = %d, %v; want %d", term, err, want)
		}
	}
	after := fileBodyOf(t, v.Path())
	d0, v0 := secretCrypto(before)
	d1, v1 := secretCrypto(after)
	if !mapsEqual(v0, v1) {
		t.Fatal("keyring rotation re-encrypted values")
	}
	for k := range d0 {
		if d0[k] == d1[k] {
			t.Fatalf("%s: data key not rewrapped", k)
		}
	}
	for _, s := range after.Secrets {
		if s.Term != 3 {
			t.Fatalf("%s@%d still on term %d", s.Name, s.Version, s.Term)
		}
	}
	st, err := v.Status()
	if err != nil || st.Terms != 1 || st.Term != 3 {
		t.Fatalf("Status = %+v, %v; want one term, 3", st, err)
	}
	openWith(t, v.Path(), seal, "c2")
	if ver := mustPut(t, v, "cred", "c3", "api.example.com"); ver != 3 {
		t.Fatalf("Put after rotation: version %d", ver)
	}
	if d, _ := v.Show("cred"); d.Term != 3 {
		t.Fatalf("new secret on term %d", d.Term)
	}
	openWith(t, v.Path(), seal, "c3")
}

func TestRotateRoot(t *testing.T) {
	v, s1 := newVault(t)
	s2, s3 := newSeal(t), newSeal(t)
	if err := v.Rewrap(context.Background(), s2, nil); err != nil {
		t.Fatal(err)
	}
	mustPut(t, v, "cred", "c1", "api.example.com")
	before := fileBodyOf(t, v.Path())
	derived := v.DeriveKey("audit")

	// New root under s2 (keeps its ID) and s3 (new ID); s1's entry goes.
	if err := v.RotateRoot(context.Background(), s2, s3); err != nil {
		t.Fatal(err)
	}
	after := fileBodyOf(t, v.Path())
	d0, v0 := secretCrypto(before)
	d1, v1 := secretCrypto(after)
	if !mapsEqual(d0, d1) || !mapsEqual(v0, v1) {
		t.Fatal("root rotation re-encrypted data keys or values")
	}
	if after.Keyring == before.Keyring {
		t.Fatal("keyring not re-encrypted")
	}
	var ids []string
	for _, e := range after.Seals {
		ids = append(ids, e.ID)
		if slices.ContainsFunc(before.Seals, func(b sealEntry) bool { return b.Root == e.Root }) {
			t.Fatalf("entry %s still wraps the old root", e.ID)
		}
	}
	if !slices.Equal(ids, []string{"s2", "s3"}) {
		t.Fatalf("seal ids %v, want [s2 s3]", ids)
	}
	if bytes.Equal(v.DeriveKey("audit"), derived) {
		t.Fatal("derived keys did not change with the root")
	}
	for _, s := range []Seal{s2, s3} {
		openWith(t, v.Path(), s, "c1")
	}
	if _, err := Open(context.Background(), v.Path(), s1); !errors.Is(err, ErrSeal) {
		t.Fatalf("dropped seal: %v", err)
	}
	// With no seals, the seal given to Open (s1) wraps the new root; its old
	// entry is gone, so it gets a new ID.
	if err := v.RotateRoot(context.Background()); err != nil {
		t.Fatal(err)
	}
	if e := v.SealEntries(); len(e) != 1 || e[0].ID != "s4" {
		t.Fatalf("RotateRoot() entries %+v", e)
	}
	openWith(t, v.Path(), s1, "c1")
	if err := v.RotateRoot(context.Background(), s2, s2); !errors.Is(err, ErrInvalid) {
		t.Fatalf("the same seal twice: %v", err)
	}
}

func TestRemove(t *testing.T) {
	v, seal := newVault(t)
	mustPut(t, v, "cred", "c1")
	mustPut(t, v, "cred", "c2")
	mustPut(t, v, "keep", "k")
	if err := v.Remove(context.Background(), "cred"); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		err  error
	}{
		{"cred", ErrNotFound},
		{"Bad", ErrInvalid},
	}
	for _, tc := range tests {
		if err := v.Remove(context.Background(), tc.name); !errors.Is(err, tc.err) {
			t.Errorf("Remove(%q) = %v, want %v", tc.name, err, tc.err)
		}
	}
	if _, err := get(v, "cred", "h.example"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("removed secret still served: %v", err)
	}
	w, err := Open(context.Background(), v.Path(), seal)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if l := w.List(); len(l) != 1 || l[0].Name != "keep" || w.Generation() != 5 {
		t.Fatalf("after Remove: %+v generation %d", l, w.Generation())
	}
}

func TestShowStatusAndVersionRetention(t *testing.T) {
	v, _ := newVault(t)
	for i := 1; i <= 5; i++ {
		mustPut(t, v, "cred", fmt.Sprint("c", i), "api.example.com", "*.example.org")
	}
	mustPut(t, v, "other", "o")
	d, err := v.Show("cred")
	if err != nil {
		t.Fatal(err)
	}
	var vers []int
	for _, s := range d.Versions {
		vers = append(vers, s.Version)
	}
	if d.Name != "cred" || d.Version != 5 || d.Term != 1 || !slices.Equal(vers, []int{3, 4, 5}) ||
		!slices.Equal(d.Hosts, []string{"*.example.org", "api.example.com"}) || d.Created.IsZero() {
		t.Fatalf("Show = %+v", d)
	}
	for _, tc := range []struct {
		name string
		want error
	}{{"missing", ErrNotFound}, {"BAD", ErrInvalid}} {
		if _, err := v.Show(tc.name); !errors.Is(err, tc.want) {
			t.Errorf("Show(%q) = %v, want %v", tc.name, err, tc.want)
		}
	}
	st, err := v.Status()
	if err != nil {
		t.Fatal(err)
	}
	if st.Path != v.Path() || len(st.VaultID) != 32 || st.Generation != 7 || len(st.Seals) != 1 ||
		st.Terms != 1 || st.Term != 1 || st.Secrets != 2 || st.Versions != 4 {
		t.Fatalf("Status = %+v", st)
	}
	gen, cur := v.Versions()
	if gen != 7 || len(cur) != 2 || cur["cred"] != 5 || cur["other"] != 1 {
		t.Fatalf("Versions = %d %v", gen, cur)
	}
	v.Close()
	if _, err := v.Status(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Status after Close: %v", err)
	}
	if _, err := v.Show("cred"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Show after Close: %v", err)
	}
	if g, m := v.Versions(); g != 0 || m != nil || v.SealEntries() != nil {
		t.Fatal("Versions or SealEntries answer after Close")
	}
}

func TestChanged(t *testing.T) {
	tests := []struct {
		before, after map[string]int
		want          []string
	}{
		{nil, nil, nil},
		{map[string]int{"a": 1}, map[string]int{"a": 1}, nil},
		{map[string]int{"a": 1, "b": 1}, map[string]int{"a": 2, "b": 1}, []string{"a"}},
		{map[string]int{"a": 1}, map[string]int{"b": 1}, []string{"a", "b"}},
		{nil, map[string]int{"z": 3, "c": 1}, []string{"c", "z"}},
	}
	for _, tc := range tests {
		if got := Changed(tc.before, tc.after); !slices.Equal(got, tc.want) {
			t.Errorf("Changed(%v, %v) = %v, want %v", tc.before, tc.after, got, tc.want)
		}
	}
}
