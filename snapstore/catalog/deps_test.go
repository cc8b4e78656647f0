package catalog_test

import (
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"strings"
	"testing"
)

// listedPackage is what the test reads of `go list -json`.
type listedPackage struct {
	ImportPath string
	Standard   bool
	Imports    []string
}

// TestNoIO keeps the planners pure: no package that catalog depends on is a store client
// (gocloud, the cloud SDKs) or the network, and no package outside the standard library in
// its dependencies (catalog itself included) touches files or the network. A change that
// mixes I/O into the planning fails here; I/O belongs in snapstore, which imports catalog.
func TestNoIO(t *testing.T) {
	cmd := exec.Command("go", "list", "-deps", "-json", ".")
	out, err := cmd.Output()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		t.Fatalf("go list: %v\n%s", err, exit.Stderr)
	}
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	forbiddenDeps := []string{"gocloud.dev", "cloud.google.com", "google.golang.org/api", "github.com/aws",
		"github.com/Azure", "net"}
	forbiddenImports := []string{"os", "io/fs", "io/ioutil", "path/filepath", "syscall", "net"}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	seen := 0
	for {
		var p listedPackage
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decode go list: %v", err)
		}
		seen++
		for _, bad := range forbiddenDeps {
			if under(p.ImportPath, bad) {
				t.Errorf("catalog depends on %s: planning must not do I/O (put it in snapstore)", p.ImportPath)
			}
		}
		if p.Standard {
			continue
		}
		for _, imp := range p.Imports {
			for _, bad := range forbiddenImports {
				if under(imp, bad) {
					t.Errorf("%s imports %s: planning must not touch files or the network (put it in snapstore)", p.ImportPath, imp)
				}
			}
		}
	}
	if seen == 0 {
		t.Fatal("go list listed no package")
	}
}

// under reports whether path is pkg or a package under it.
func under(path, pkg string) bool {
	return path == pkg || strings.HasPrefix(path, pkg+"/")
}
