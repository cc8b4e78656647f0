// Package scripts_test checks the shell scripts that make runs (scripts/fuzz.sh).
package scripts_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// raceLog is what go test prints when Go's fuzzing coordinator ends a clean run with its own
// deadline (go.dev/issue/75804).
const raceLog = `fuzz: elapsed: 0s, gathering baseline coverage: 0/222 completed
fuzz: elapsed: 3s, gathering baseline coverage: 73/222 completed
--- FAIL: FuzzX (3.05s)
    context deadline exceeded
FAIL
exit status 1
FAIL	example.com/m/pkg	3.079s
`

// TestFuzzScriptResult runs scripts/fuzz.sh in a repository of one fuzz target with a go
// command that prints a given log, writes a failing input or not, and exits 0 or 1; the
// script must fail exactly when the target found something or failed for another reason.
func TestFuzzScriptResult(t *testing.T) {
	script, err := os.ReadFile("fuzz.sh")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, version, log string
		crasher            bool // the fake go test writes an input to testdata/fuzz/FuzzX
		noSeeds            bool // the target has no committed seed corpus
		exit               int  // of the fake go test
		wantFail           bool
		wantSummary        string
	}{
		{name: "passed", version: "go1.26.8", log: "fuzz: elapsed: 3s, execs: 10 (3/sec)\nPASS\n", wantSummary: "ok "},
		{name: "deadline race", version: "go1.26.8", log: raceLog, exit: 1, wantSummary: "go.dev/issue/75804"},
		{name: "deadline race without seeds", version: "go1.26.8", noSeeds: true, exit: 1, wantSummary: "go.dev/issue/75804",
			log: "warning: starting with empty corpus\n" + raceLog},
		{name: "deadline race on go1.27", version: "go1.27.1", log: raceLog, exit: 1, wantFail: true, wantSummary: "FAILED"},
		{name: "deadline message and a failing input", version: "go1.26.8", log: raceLog, crasher: true, exit: 1, wantFail: true, wantSummary: "FAILED"},
		{name: "another error", version: "go1.26.8", exit: 1, wantFail: true, wantSummary: "FAILED",
			log: strings.Replace(raceLog, "    context deadline exceeded", "    fuzz_test.go:9: bad name", 1)},
		{name: "deadline message and another line", version: "go1.26.8", exit: 1, wantFail: true, wantSummary: "FAILED",
			log: strings.Replace(raceLog, "    context deadline exceeded", "    context deadline exceeded\n    panic: x", 1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			repo := t.TempDir()
			write(t, filepath.Join(repo, "scripts", "fuzz.sh"), string(script), 0o755)
			write(t, filepath.Join(repo, "pkg", "x_test.go"), "package pkg\n\nimport \"testing\"\n\nfunc FuzzX(f *testing.F) {}\n", 0o644)
			write(t, filepath.Join(repo, "log"), tc.log, 0o644)
			crasher := ""
			if tc.crasher {
				crasher = "mkdir -p pkg/testdata/fuzz/FuzzX && echo 'go test fuzz v1' >pkg/testdata/fuzz/FuzzX/0123"
			}
			fakeGo := "#!/bin/sh\n" +
				"if [ \"$1\" = env ]; then echo " + tc.version + "; exit 0; fi\n" +
				crasher + "\n" +
				"cat log\n" +
				"exit " + string(rune('0'+tc.exit)) + "\n"
			write(t, filepath.Join(repo, "fakego"), fakeGo, 0o755)
			if !tc.noSeeds {
				// A committed seed corpus is there before the run and is not a failing input.
				write(t, filepath.Join(repo, "pkg", "testdata", "fuzz", "FuzzX", "seed"), "go test fuzz v1\n", 0o644)
			}
			for _, args := range [][]string{{"init", "-q"}, {"add", "."}} {
				if out, err := exec.Command("git", append([]string{"-C", repo}, args...)...).CombinedOutput(); err != nil {
					t.Fatalf("git %v: %v\n%s", args, err, out)
				}
			}
			cmd := exec.Command("bash", filepath.Join(repo, "scripts", "fuzz.sh"))
			cmd.Env = append(os.Environ(), "GO="+filepath.Join(repo, "fakego"), "FUZZTIME=3s")
			out, err := cmd.CombinedOutput()
			if failed := err != nil; failed != tc.wantFail {
				t.Fatalf("script failed: %v, want %v\n%s", failed, tc.wantFail, out)
			}
			var summary string
			for _, line := range strings.Split(string(out), "\n") {
				if strings.HasPrefix(line, "FuzzX ") {
					summary = line
				}
			}
			if !strings.Contains(summary, tc.wantSummary) {
				t.Fatalf("summary line %q does not say %q\n%s", summary, tc.wantSummary, out)
			}
		})
	}
}

func write(t *testing.T, path, text string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(text), mode); err != nil {
		t.Fatal(err)
	}
}
