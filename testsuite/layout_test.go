package testsuite

import (
	"os/exec"
	"path"
	"slices"
	"strings"
	"testing"
)

// The arrows between etcdbr's packages run one way (docs/architecture.md, "Where things
// live"): cmd -> supervisor -> {backup, embedded, snapstore} -> their sub-packages and
// internal; nothing imports cmd or supervisor; the pure planner (snapstore/catalog) imports
// no other package of etcdbr. Each package may import only what its row allows, and a new
// package needs a row: where it sits is decided, not drifted into.
func TestPackageArrows(t *testing.T) {
	const module = "github.com/etcdbr/etcdbr/"
	allowed := map[string][]string{
		"cmd/etcdbr": {"supervisor", "backup", "embedded", "embedded/*", "snapstore", "snapstore/catalog", "internal/*"},
		"supervisor": {"supervisor/membership", "supervisor/clusterrestore", "backup", "embedded", "embedded/*", "snapstore", "snapstore/catalog", "internal/*"},
		// The cluster's membership: pure decisions and the clientv3 client; no store, no etcd in-process.
		"supervisor/membership": {"internal/*"},
		// What a member does about a whole-cluster restore: pure, over the store's records.
		"supervisor/clusterrestore": {"snapstore/catalog"},
		"backup":                    {"snapstore", "snapstore/catalog", "internal/*"},
		"embedded":                  {"internal/*"},
		"embedded/datadir":          {"internal/*"},
		"embedded/rebuild":          {"embedded/datadir", "snapstore", "snapstore/catalog", "internal/*"},
		"snapstore":                 {"snapstore/catalog", "snapstore/foreign", "internal/*"},
		"snapstore/catalog":         {},
		// Other tools' formats: names and streams only; snapstore does their I/O.
		"snapstore/foreign": {},
		// internal: small jobs every layer may use; they use only each other.
		"internal/backoff":   {},
		"internal/boltfmt":   {},
		"internal/dbrev":     {"internal/*"},
		"internal/dirlock":   {},
		"internal/diskspace": {},
		"internal/fsync":     {},
		"internal/lowprio":   {},
		"internal/progress":  {},
		"internal/slogzap":   {},
		"internal/toolcache": {"internal/*"},
		// Test helpers and tools: anything below supervisor.
		"internal/deltatest":    {"snapstore", "snapstore/catalog", "internal/*"},
		"internal/embeddedtest": {},
		"internal/etcdtest":     {},
		"internal/faultstore":   {},
		"internal/storetest":    {"internal/*"},
		// The tests of scripts/fuzz.sh: no Go code, imports nothing of etcdbr.
		"scripts":                     {},
		"scripts/etcd-backup-restore": {"internal/*"},
		"scripts/kube-apiserver":      {"internal/*"},
		"scripts/promtool":            {"internal/*"},
		"scripts/test-services":       {"internal/*"},
		"testsuite":                   {},
		"testsuite/bench":             {"backup", "embedded", "embedded/*", "snapstore", "snapstore/catalog", "internal/*"},
	}
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}} {{join .Imports " "}}`, module+"...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg := strings.TrimPrefix(fields[0], module)
		may, ok := allowed[pkg]
		if !ok {
			t.Errorf("package %s has no row in TestPackageArrows: decide what it may import (and add it to docs/architecture.md)", pkg)
			continue
		}
		for _, imp := range fields[1:] {
			dep, ours := strings.CutPrefix(imp, module)
			if !ours {
				continue
			}
			if !slices.ContainsFunc(may, func(pattern string) bool {
				matched, _ := path.Match(pattern, dep)
				return matched
			}) {
				t.Errorf("%s imports %s: not an arrow of the layout (allowed: %v)", pkg, dep, may)
			}
		}
	}
}
