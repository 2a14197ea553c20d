package main

import (
	"go/build"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/wirken/wirken"

// allowedImports is DESIGN.md's import column: which of the module's packages each directory
// may import (outside its tests). Directories not listed may import anything.
var allowedImports = map[string][]string{
	"hostagent": {"bpf", "mitm", "policy", "vault", "audit", "resolver"},
	"mitm":      {"policy"},
	"resolver":  {"policy"},
	"bpf":       {},
	"policy":    {},
	"vault":     {},
	"audit":     {},
}

func TestLayoutImports(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	err = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		top := strings.Split(filepath.ToSlash(rel), "/")[0]
		if strings.HasPrefix(d.Name(), ".") && rel != "." {
			return filepath.SkipDir
		}
		allowed, ok := allowedImports[top]
		if !ok {
			return nil
		}
		// Check every build context we ship: Linux and the stubs elsewhere.
		for _, goos := range []string{"linux", "darwin"} {
			ctx := build.Default
			ctx.GOOS, ctx.CgoEnabled = goos, false
			pkg, err := ctx.ImportDir(path, 0)
			if err != nil {
				continue // no Go files for this OS
			}
			checked++
			for _, imp := range pkg.Imports {
				if !strings.HasPrefix(imp, module+"/") {
					continue
				}
				dep := strings.Split(strings.TrimPrefix(imp, module+"/"), "/")[0]
				if dep != top && !slices.Contains(allowed, dep) {
					t.Errorf("%s (GOOS=%s) imports %s; DESIGN.md allows only %v", rel, goos, imp, allowed)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < len(allowedImports) {
		t.Fatalf("checked %d packages; expected at least %d (did the layout move?)", checked, len(allowedImports))
	}
}
