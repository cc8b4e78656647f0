package testsuite

import (
	"go/scanner"
	"go/token"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/etcdbr/etcdbr/internal/storetest"
)

// docTestRef is one test named in a table of docs/inputs.md: `TestX`, `TestX/sub_test` or
// `pkg/dir TestX/sub*`, where the package is a directory of the module (testsuite when
// left out) and a subtest name is written as go test prints it (spaces as underscores; *
// matches any run of characters).
var docTestRef = regexp.MustCompile(`^(?:([a-z][a-z0-9/]*) )?(Test[A-Za-z0-9_]+)((?:/[^/\s]+)*)$`)

// testSources is what the test files of one package define: its Test functions and the
// string literals that may name its subtests, as go test prints them.
type testSources struct {
	funcs    map[string]bool
	literals map[string]bool
}

// readTestSources scans the _test.go files of the module's directory dir.
func readTestSources(t *testing.T, dir string) testSources {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("..", dir, "*_test.go"))
	if err != nil || len(files) == 0 {
		t.Fatalf("package %s: no test files (%v)", dir, err)
	}
	src := testSources{funcs: map[string]bool{}, literals: map[string]bool{}}
	fset := token.NewFileSet()
	for _, name := range files {
		raw, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		var s scanner.Scanner
		s.Init(fset.AddFile(name, -1, len(raw)), raw, nil, 0)
		prev := token.ILLEGAL
		for {
			_, tok, lit := s.Scan()
			if tok == token.EOF {
				break
			}
			switch {
			case tok == token.IDENT && prev == token.FUNC:
				src.funcs[lit] = true
			case tok == token.STRING:
				if v, err := strconv.Unquote(lit); err == nil {
					src.literals[strings.ReplaceAll(v, " ", "_")] = true
				}
			}
			prev = tok
		}
	}
	return src
}

// hasSubtest reports whether some literal of the package names the subtest name (a
// pattern with * allowed).
func (s testSources) hasSubtest(name string) bool {
	for lit := range s.literals {
		if ok, _ := path.Match(name, lit); ok {
			return true
		}
	}
	return false
}

// TestInputsTableNamesRealTests keeps docs/inputs.md current: every row of its tables
// names at least one test, and every test it names exists in the package it names, down
// to the subtests.
func TestInputsTableNamesRealTests(t *testing.T) {
	raw, err := os.ReadFile("../docs/inputs.md")
	if err != nil {
		t.Fatal(err)
	}
	codeSpan := regexp.MustCompile("`([^`]+)`")
	sources := map[string]testSources{}
	rows := 0
	for i, line := range strings.Split(string(raw), "\n") {
		cells := strings.Split(strings.Trim(strings.TrimSpace(line), "|"), "|")
		if !strings.HasPrefix(line, "|") || len(cells) < 2 {
			continue
		}
		last := strings.TrimSpace(cells[len(cells)-1])
		if last == "test" || strings.Trim(last, "- ") == "" {
			continue // the header and its rule
		}
		rows++
		refs := codeSpan.FindAllStringSubmatch(last, -1)
		if len(refs) == 0 {
			t.Errorf("docs/inputs.md:%d names no test: %s", i+1, line)
		}
		for _, ref := range refs {
			m := docTestRef.FindStringSubmatch(ref[1])
			if m == nil {
				t.Errorf("docs/inputs.md:%d: %q is not a test (write `TestX`, `TestX/subtest` or `pkg/dir TestX`)", i+1, ref[1])
				continue
			}
			pkg := m[1]
			if pkg == "" {
				pkg = "testsuite"
			}
			src, ok := sources[pkg]
			if !ok {
				src = readTestSources(t, pkg)
				sources[pkg] = src
			}
			if !src.funcs[m[2]] {
				t.Errorf("docs/inputs.md:%d: %s has no test %s", i+1, pkg, m[2])
				continue
			}
			for _, sub := range strings.Split(strings.TrimPrefix(m[3], "/"), "/") {
				if sub != "" && !src.hasSubtest(sub) {
					t.Errorf("docs/inputs.md:%d: %s: no subtest %q of %s", i+1, pkg, sub, m[2])
				}
			}
		}
	}
	if rows < 60 {
		t.Errorf("found %d rows in the tables of docs/inputs.md; the parser lost them", rows)
	}
}

// TestReadmeTestPrerequisites: the README says what `make test` needs beyond `make run`:
// Node.js and npm (Azurite), the registries the test servers come from, where they are
// installed and how long the first run takes.
func TestReadmeTestPrerequisites(t *testing.T) {
	raw, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(raw)
	start := strings.Index(readme, "`make test` needs more than `make run`:")
	if start < 0 {
		t.Fatal("README.md does not list what make test needs beyond make run")
	}
	end := strings.Index(readme[start:], "\n\n`make run`")
	if end < 0 {
		t.Fatal("README.md: the list of make test's needs does not end before `make run` is explained")
	}
	list := readme[start : start+end]
	t.Setenv(storetest.EnvCacheDir, "")
	cache, err := storetest.DefaultCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"Node.js", "`npm`", // storetest.Install looks up node and runs npm install
		"Go module proxy", "npm registry", "go install", "npm install",
		"~/.cache/" + filepath.Base(cache), "about 4 minutes",
	} {
		if !strings.Contains(list, want) {
			t.Errorf("README.md's needs of make test do not mention %q:\n%s", want, list)
		}
	}
}
