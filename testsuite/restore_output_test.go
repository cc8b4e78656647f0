package testsuite

import (
	"path/filepath"
	"regexp"
	"slices"
	"testing"
)

// etcdInfoLine matches an info line of etcd's own in etcdbr's text format.
var etcdInfoLine = regexp.MustCompile(`(?m)^time=\S+ level=INFO msg=.* component=etcd`)

// `etcdbr restore` says what it does in lines of its own: etcd's info lines (bbolt opened,
// members added, etcdutl's restore) are left out unless etcd's --log-level asks for them.
func TestRestoreLeavesOutEtcdInfoLines(t *testing.T) {
	t.Parallel()
	store, _, src := progressStore(t)
	flags := slices.DeleteFunc(src.etcdFlags(), func(f string) bool { return f == "--log-level=error" })
	for _, c := range []struct {
		name  string
		extra []string
		want  bool
	}{
		{"etcd's default level", nil, false},
		{"etcd's --log-level=info", []string{"--log-level=info"}, true},
	} {
		dataDir := filepath.Join(t.TempDir(), "data")
		args := append(append([]string{"restore", "--data-dir", dataDir, "--store", store, "--"}, flags...), c.extra...)
		code, out := runToExit(t, args)
		if code != 0 {
			t.Fatalf("%s: etcdbr restore: exit %d\n%s", c.name, code, out)
		}
		if got := etcdInfoLine.MatchString(out); got != c.want {
			t.Errorf("%s: etcd's info lines shown %v, want %v:\n%s", c.name, got, c.want, out)
		}
	}
}
