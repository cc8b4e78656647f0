package testsuite

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// progressStore is a file store with a full snapshot and deltas after it, made by etcdbr
// run; it returns the store's URL, its newest revision and the source member.
func progressStore(t *testing.T) (string, int64, member) {
	t.Helper()
	src, store, p, cli := startBackedUp(t)
	putKeys(t, cli, "a", 60)
	putKeys(t, cli, "b", 60)
	cli.Close()
	p.stop() // uploads the final delta
	return store, newestRevision(t, store), src
}

// progressLine matches the progress log lines of etcdbr's text format.
var progressLine = regexp.MustCompile(`msg=progress phase=(\S+) bytes=(\d+) bytes_total=(\d+) revisions=(\d+) revisions_total=(\d+) revision=(\d+)`)

// `etcdbr restore` with stderr piped (not a terminal) logs its progress as structured lines,
// and the last one holds the final counts: every revision of the plan replayed, the newest
// revision reached, every byte of the objects read.
func TestRestoreProgressLogLines(t *testing.T) {
	t.Parallel()
	store, newest, src := progressStore(t)
	m := src
	m.DataDir = filepath.Join(t.TempDir(), "data")
	code, out := runToExit(t, append([]string{"restore", "--data-dir", m.DataDir, "--store", store, "--"}, m.etcdFlags()...))
	if code != 0 {
		t.Fatalf("etcdbr restore: exit %d\n%s", code, out)
	}
	var last []string
	for _, line := range strings.Split(out, "\n") {
		if m := progressLine.FindStringSubmatch(line); m != nil {
			last = m
		}
	}
	if last == nil {
		t.Fatalf("no progress line in the output:\n%s", out)
	}
	phase, bytes, bytesTotal, revs, revsTotal, rev := last[1], last[2], last[3], last[4], last[5], last[6]
	if rev != fmt.Sprint(newest) || revs != revsTotal || revs == "0" || bytes != bytesTotal || bytes == "0" || phase != "sync" {
		t.Fatalf("the last progress line is %q: want phase sync, revision %d, every revision and byte of the totals\n%s", last[0], newest, out)
	}
	if strings.Contains(out, "\x1b[") {
		t.Fatalf("terminal control sequences in piped output:\n%q", out)
	}
}

// --progress chooses the display whatever standard error is: off shows nothing (and the
// restore is the same), bar draws the bar into a pipe and logs no progress lines.
func TestRestoreProgressModes(t *testing.T) {
	t.Parallel()
	store, newest, src := progressStore(t)
	for _, c := range []struct {
		mode       string
		lines, bar bool
	}{
		{mode: "off"},
		{mode: "bar", bar: true},
		{mode: "log", lines: true},
	} {
		m := src
		m.DataDir = filepath.Join(t.TempDir(), "data-"+c.mode)
		code, out := runToExit(t, append([]string{"--progress", c.mode, "restore", "--data-dir", m.DataDir, "--store", store, "--"}, m.etcdFlags()...))
		if code != 0 {
			t.Fatalf("etcdbr --progress %s restore: exit %d\n%s", c.mode, code, out)
		}
		if got := progressLine.MatchString(out); got != c.lines {
			t.Errorf("--progress %s: progress log lines %v, want %v:\n%s", c.mode, got, c.lines, out)
		}
		if got := strings.Contains(out, "100% |"); got != c.bar {
			t.Errorf("--progress %s: a full bar drawn %v, want %v:\n%s", c.mode, got, c.bar, out)
		}
		if !strings.Contains(out, fmt.Sprintf("revision %d", newest)) && !strings.Contains(out, fmt.Sprintf("revision=%d", newest)) {
			t.Errorf("--progress %s: the output does not name the restored revision %d:\n%s", c.mode, newest, out)
		}
	}
}

// On a terminal (a tmux pane), `etcdbr restore` draws a progress display instead of log
// lines: a bar per phase with the bytes fetched and the revisions replayed of their total.
func TestRestoreProgressOnTerminal(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("tmux"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("tmux is missing (.ci/run installs it)")
		}
		t.Skip("tmux is missing")
	}
	store, newest, src := progressStore(t)
	m := src
	m.DataDir = filepath.Join(t.TempDir(), "data")
	socket := fmt.Sprintf("etcdbr-test-%d", os.Getpid())
	tmux := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("tmux", append([]string{"-L", socket}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("tmux %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	session := "restore"
	tmux("new-session", "-d", "-x", "120", "-y", "30", "-s", session)
	t.Cleanup(func() { _ = exec.Command("tmux", "-L", socket, "kill-server").Run() })
	tmux("set-option", "-t", session, "remain-on-exit", "on")
	// The pane runs the restore, then writes its exit status into a file: the pane stays
	// (remain-on-exit), and the file says when the screen is complete.
	status := filepath.Join(t.TempDir(), "status")
	args := append([]string{binary, "restore", "--data-dir", m.DataDir, "--store", store, "--"}, m.etcdFlags()...)
	tmux("respawn-pane", "-k", "-t", session, "sh -c '"+strings.Join(args, " ")+"; echo $? > "+status+"'")

	deadline := time.Now().Add(2 * time.Minute)
	for {
		code, err := os.ReadFile(status)
		if err == nil && strings.HasSuffix(string(code), "\n") {
			if strings.TrimSpace(string(code)) != "0" {
				t.Fatalf("etcdbr restore exited %s:\n%s", strings.TrimSpace(string(code)), tmux("capture-pane", "-p", "-J", "-S", "-", "-t", session))
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("etcdbr restore still runs in tmux after 2 minutes:\n%s", tmux("capture-pane", "-p", "-J", "-S", "-", "-t", session))
		}
		time.Sleep(100 * time.Millisecond)
	}
	// tmux reads the pane's output on its own time: wait until the last of it is on screen.
	done := fmt.Sprintf("to revision %d", newest)
	screen := tmux("capture-pane", "-p", "-J", "-S", "-", "-t", session)
	for !strings.Contains(screen, done) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		screen = tmux("capture-pane", "-p", "-J", "-S", "-", "-t", session)
	}
	t.Logf("the pane:\n%s", screen)
	// The bar of the revisions, full: "sync   rev 121, 1.5 KiB read 100% |████| (120/120, ...".
	replay := regexp.MustCompile(`rev (\d+), \S+ \S+ read 100% \|[^|]*\| \((\d+)/(\d+), `)
	mt := replay.FindStringSubmatch(screen)
	if mt == nil || mt[2] != mt[3] || mt[1] != fmt.Sprint(newest) {
		t.Fatalf("no finished bar of the revisions up to revision %d on the terminal:\n%s", newest, screen)
	}
	if !strings.Contains(screen, done) {
		t.Fatalf("the restore did not end at revision %d:\n%s", newest, screen)
	}
	if strings.Contains(screen, "msg=progress") {
		t.Fatalf("progress log lines on a terminal:\n%s", screen)
	}
}
