package main

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files of `policy explain`")

// TestExplainGolden runs `wirken policy explain` for every "# explain: AGENT METHOD URL" line
// of every example policy in configs/, and compares the output with
// testdata/explain/<file>.golden. Every example must carry such lines.
func TestExplainGolden(t *testing.T) {
	files, _ := filepath.Glob("../../configs/*.toml")
	more, _ := filepath.Glob("../../configs/policies/*.toml")
	files = append(files, more...)
	n := 0
	for _, f := range files {
		if filepath.Base(f) == "wirken.toml" {
			continue
		}
		n++
		t.Run(filepath.Base(f), func(t *testing.T) {
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var got strings.Builder
			for _, l := range strings.Split(string(src), "\n") {
				spec, ok := strings.CutPrefix(l, "# explain: ")
				if !ok {
					continue
				}
				fields := strings.Fields(spec)
				if len(fields) != 3 {
					t.Fatalf("bad explain line %q (want AGENT METHOD URL)", l)
				}
				code, out, errs := cli(t, "", "policy", "explain", "--policy", f, "--agent", fields[0], "--method", fields[1], fields[2])
				if code != 0 {
					t.Fatalf("explain %s: exit %d: %s", spec, code, errs)
				}
				got.WriteString("$ wirken policy explain --agent " + fields[0] + " --method " + fields[1] + " " + fields[2] + "\n" + out + "\n")
			}
			if got.Len() == 0 {
				t.Fatal(`no "# explain: AGENT METHOD URL" lines: every example policy needs some`)
			}
			if !strings.Contains(got.String(), "verdict:    allow") || !strings.Contains(got.String(), "verdict:    deny") {
				t.Error("an example should explain at least one allowed and one denied request")
			}
			golden := filepath.Join("testdata", "explain", strings.TrimSuffix(filepath.Base(f), ".toml")+".golden")
			if *update {
				os.MkdirAll(filepath.Dir(golden), 0o755)
				if err := os.WriteFile(golden, []byte(got.String()), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./cmd/wirken -run TestExplainGolden -update)", err)
			}
			if got.String() != string(want) {
				t.Errorf("explain output differs from %s:\n%s", golden, got.String())
			}
		})
	}
	if n < 8 {
		t.Fatalf("only %d example policies found", n)
	}
}

func TestExplainUsage(t *testing.T) {
	pol := "../../configs/policies/openai.toml"
	for _, args := range [][]string{
		{"policy", "explain", "--policy", pol, "https://api.openai.com/"},
		{"policy", "explain", "--policy", pol, "--agent", "assistant"},
		{"policy", "explain", "--policy", pol, "--agent", "assistant", "ftp://api.openai.com/"},
	} {
		if code, _, errs := cli(t, "", args...); code != 2 || !strings.Contains(errs, "wirken: error: ") {
			t.Errorf("%v: exit %d, stderr %q; want a usage error", args, code, errs)
		}
	}
	bad := filepath.Join(t.TempDir(), "bad.toml")
	os.WriteFile(bad, []byte("version = 1\n[agents.a]\nusr = \"x\"\n"), 0o644)
	code, _, errs := cli(t, "", "policy", "explain", "--policy", bad, "--agent", "a", "https://x.test/")
	if code != 1 || !strings.Contains(errs, "bad.toml:3:1: agents.a.usr: unknown key") {
		t.Errorf("bad policy: exit %d, stderr %q", code, errs)
	}
}
