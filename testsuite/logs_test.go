package testsuite

import (
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// runAndStop runs `etcdbr run` on a fresh member with etcdbr's flags extra and etcd's log
// level etcdLevel (the suite's usual flags keep etcd at error), waits until it serves and
// has taken its first full snapshot, stops it with SIGTERM (exit 0 required) and returns the
// lines it printed.
func runAndStop(t *testing.T, etcdLevel string, extra ...string) []string {
	t.Helper()
	dir := t.TempDir()
	m := newMember(t, dir)
	args := m.runArgs("file://"+filepath.Join(dir, "store"), extra...)
	args = slices.DeleteFunc(args, func(a string) bool { return strings.HasPrefix(a, "--log-level=") })
	args = append(args, "--log-level="+etcdLevel)
	p := start(t, args)
	cli := client(t, m.ClientURL)
	// A watch open while etcd stops: the stop ends it rather than waits for it.
	watch := cli.Watch(t.Context(), "k")
	if _, err := cli.Put(t.Context(), "k", "v"); err != nil {
		t.Fatal(err)
	}
	<-watch
	p.waitLine("full snapshot taken", time.Minute)
	p.stop()
	return strings.Split(strings.TrimSuffix(p.Output(), "\n"), "\n")
}

// errorLevels are the levels of a line that reports a failure (DPANIC, PANIC and FATAL are
// etcd's zap levels above error).
var errorLevels = []string{"ERROR", "DPANIC", "PANIC", "FATAL"}

// TestLogFormatJSON: with --log-format json every line is a JSON object, etcd's as well as
// etcdbr's, and etcd's carry component=etcd.
func TestLogFormatJSON(t *testing.T) {
	t.Parallel()
	lines := runAndStop(t, "info", "--log-format", "json")
	etcdLines := 0
	for _, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Errorf("a line that is not JSON (%v): %s", err, l)
			continue
		}
		for _, key := range []string{"time", "level", "msg"} {
			if _, ok := m[key]; !ok {
				t.Errorf("no %q in %s", key, l)
			}
		}
		if m["component"] == "etcd" {
			etcdLines++
		}
	}
	if etcdLines == 0 {
		t.Errorf("no line with component=etcd among %d", len(lines))
	}
	if !slices.ContainsFunc(lines, func(l string) bool { return strings.Contains(l, `"msg":"etcd is ready"`) }) {
		t.Error("etcdbr's own lines are missing")
	}
}

// TestLogFormatText: with the default --log-format text no line is JSON; etcd's lines are
// text lines with component=etcd.
func TestLogFormatText(t *testing.T) {
	t.Parallel()
	lines := runAndStop(t, "info")
	etcdLines := 0
	for _, l := range lines {
		if json.Valid([]byte(l)) || strings.HasPrefix(l, "{") {
			t.Errorf("a JSON line in text format: %s", l)
		}
		if !strings.HasPrefix(l, "time=") {
			t.Errorf("not a slog text line: %s", l)
		}
		if strings.Contains(l, " component=etcd ") {
			etcdLines++
		}
	}
	if etcdLines == 0 {
		t.Errorf("no line with component=etcd among %d", len(lines))
	}
}

// TestCleanStopLogsNoError: a run that starts, serves, backs up and stops on SIGTERM logs no
// line at error level or above, with everything at debug level (the lines about the
// listeners that the stop closes are there, at debug).
func TestCleanStopLogsNoError(t *testing.T) {
	t.Parallel()
	lines := runAndStop(t, "debug", "--log-format", "json", "--log-level", "debug")
	listenersClosed := 0
	for _, l := range lines {
		var m struct{ Level, Msg, Component string }
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Errorf("a line that is not JSON (%v): %s", err, l)
			continue
		}
		if slices.Contains(errorLevels, m.Level) {
			t.Errorf("an error-level line on a clean run: %s", l)
		}
		if m.Component == "etcd" && m.Msg == "setting up serving from embedded etcd failed." {
			listenersClosed++
			if m.Level != "DEBUG" {
				t.Errorf("a listener closed by the stop logged at %s: %s", m.Level, l)
			}
		}
	}
	if listenersClosed == 0 {
		t.Error("etcd's debug lines about the closed listeners are missing: are etcd's debug lines routed?")
	}
}

// TestDataDirGivenNoDefaultWarning: with --data-dir, etcd does not say that its data dir was
// empty and that it uses the default.
func TestDataDirGivenNoDefaultWarning(t *testing.T) {
	t.Parallel()
	lines := runAndStop(t, "info")
	for _, l := range lines {
		if strings.Contains(l, "'data-dir' was empty") {
			t.Errorf("etcd warns about an empty data dir although --data-dir was given: %s", l)
		}
	}
}
