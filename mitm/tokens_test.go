package mitm

import (
	"fmt"
	"testing"

	"github.com/wirken/wirken/policy"
)

// The OAuth2 token cache holds one entry per credential name: a policy edit replaces the
// entry instead of adding one, and the cache never grows past maxTokenEntries.
func TestTokenCacheIsBounded(t *testing.T) {
	var tc tokens
	c := &policy.Credential{Name: "idp", Secret: "idp", TokenURL: "https://idp.test/token", ClientID: "bot", Scopes: []string{"read"}}
	first := tc.entry(c)
	if tc.entry(c) != first {
		t.Fatal("the same definition got a new entry")
	}
	edited := *c
	edited.Scopes = []string{"read", "write"}
	if tc.entry(&edited) == first {
		t.Fatal("an edited credential kept the token minted for its old definition")
	}
	if len(tc.m) != 1 {
		t.Fatalf("%d entries after an edit of one credential; want 1", len(tc.m))
	}
	for i := range 3 * maxTokenEntries {
		tc.entry(&policy.Credential{Name: fmt.Sprintf("c%d", i), TokenURL: "https://idp.test/token"})
		if i%10 == 0 {
			tc.entry(&edited) // in use all along: never the one evicted
		}
	}
	if len(tc.m) > maxTokenEntries {
		t.Fatalf("%d entries; want at most %d", len(tc.m), maxTokenEntries)
	}
	if _, ok := tc.m["idp"]; !ok {
		t.Fatal("a credential in steady use was evicted")
	}
	if _, ok := tc.m["c0"]; ok {
		t.Fatal("the least recently used entry was kept")
	}
}
