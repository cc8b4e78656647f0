package main

import (
	"fmt"
	"slices"
	"strings"

	"github.com/alecthomas/kong"
)

// envPrefix starts etcdbr's own environment variables. ETCD_* is etcd's namespace, which
// etcd checks itself; etcdbr checks only its own.
const envPrefix = "ETCDBR_"

// toolEnv are ETCDBR_ variables that are not flags: the restore failpoint that the crash
// tests set (embedded/rebuild/restore.go) and the settings of the project's scripts.
var toolEnv = []string{"ETCDBR_FAILPOINT", "ETCDBR_KUBE_CACHE", "ETCDBR_KUBE_APISERVER"}

// toolEnvPrefixes start the variables that the project's test harnesses set for the tests
// they run (scripts/test-services: ETCDBR_TEST_*; the crash trials: ETCDBR_CHAOS_*), which the
// binary inherits.
var toolEnvPrefixes = []string{"ETCDBR_TEST_", "ETCDBR_SNAPSTORE_TEST_", "ETCDBR_CHAOS_"}

// knownEnv returns the environment variables of every flag of every command (kong's env
// tags): a variable that one command reads is known to all, so that a static pod's
// ETCDBR_* settings cause no warning when another command runs beside it.
func knownEnv(app *kong.Application) []string {
	known := slices.Clone(toolEnv)
	var walk func(n *kong.Node)
	walk = func(n *kong.Node) {
		for _, f := range n.Flags {
			known = append(known, f.Envs...)
		}
		for _, p := range n.Positional {
			known = append(known, p.Tag.Envs...)
		}
		for _, c := range n.Children {
			walk(c)
		}
	}
	walk(app.Node)
	slices.Sort(known)
	return slices.Compact(known)
}

// unknownEnvWarnings returns one warning for each ETCDBR_ variable in environ (KEY=VALUE
// lines) that no flag reads, naming the closest known variable.
func unknownEnvWarnings(environ, known []string) []string {
	var warnings []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, envPrefix) || slices.Contains(known, name) ||
			slices.ContainsFunc(toolEnvPrefixes, func(p string) bool { return strings.HasPrefix(name, p) }) {
			continue
		}
		closest, dist := closestName(name, known)
		hint := fmt.Sprintf("did you mean %s?", closest)
		if dist > max(2, len(name[len(envPrefix):])/3) {
			hint = fmt.Sprintf("no known variable is close (the closest is %s)", closest)
		}
		warnings = append(warnings, fmt.Sprintf("unknown environment variable %s is ignored: %s "+
			"(etcdbr COMMAND --help names the variable of every flag)", name, hint))
	}
	slices.Sort(warnings)
	return warnings
}

// closestName returns the name in names nearest to name by edit distance, and the distance.
func closestName(name string, names []string) (string, int) {
	best, bestDist := "", -1
	for _, n := range names {
		if d := editDistance(name, n); bestDist < 0 || d < bestDist {
			best, bestDist = n, d
		}
	}
	return best, bestDist
}

// editDistance is the Levenshtein distance between a and b: the fewest single-byte
// insertions, deletions and substitutions that turn one into the other.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
