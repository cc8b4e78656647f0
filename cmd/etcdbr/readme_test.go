package main

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/alecthomas/kong"
)

// The README's table of `etcdbr run`'s flags says what --help says: every flag it names is
// a flag of run (or a global one), and where the flag has a default, the default the
// README shows first for it is that default, so that the two never tell a user different
// things.
func TestReadmeRunDefaults(t *testing.T) {
	raw, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(raw)
	start := strings.Index(readme, "### `etcdbr run`")
	if start < 0 {
		t.Fatal("README.md has no section on etcdbr run")
	}
	section := readme[start:]
	if end := strings.Index(section[1:], "\n#"); end > 0 {
		section = section[:end+1]
	}

	app := cliModel(t)
	flags := map[string]*kong.Flag{}
	for _, f := range app.Node.Flags {
		flags[f.Name] = f
	}
	for _, c := range app.Node.Children {
		if c.Name == "run" {
			for _, f := range c.Flags {
				flags[f.Name] = f
			}
		}
	}
	codeSpan := regexp.MustCompile("`([^`]*)`")
	rows := 0
	for _, line := range strings.Split(section, "\n") {
		cells := strings.Split(strings.Trim(line, "|"), "|")
		if !strings.HasPrefix(line, "| `--") || len(cells) != 3 {
			continue
		}
		rows++
		var names []string
		for _, m := range codeSpan.FindAllStringSubmatch(cells[0], -1) {
			names = append(names, strings.TrimPrefix(m[1], "--"))
		}
		defaults := codeSpan.FindAllStringSubmatch(cells[1], -1)
		for i, name := range names {
			f, ok := flags[name]
			if !ok {
				t.Errorf("README.md: --%s is not a flag of etcdbr run: %s", name, line)
				continue
			}
			if f.Default == "" {
				continue // computed (the data dir's, etcd's) or none: the README says which
			}
			switch {
			case i >= len(defaults):
				t.Errorf("README.md: --%s: the default column shows no value, --help says %q: %s", name, f.Default, line)
			case defaults[i][1] != f.Default:
				t.Errorf("README.md: --%s: the default column shows %q, --help says %q: %s", name, defaults[i][1], f.Default, line)
			}
		}
	}
	if rows < 20 {
		t.Errorf("found %d flags in README.md's table of etcdbr run; the parser lost them", rows)
	}
}
