package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/etcdbr/etcdbr/internal/progress"
)

// The display draws the bytes until a total of revisions is known, then the revisions, and
// ends on its own line.
func TestDisplay(t *testing.T) {
	var out bytes.Buffer
	p := progress.New("fetch")
	p.AddBytesTotal(4 << 20)
	d := &display{p: p, w: &out}
	p.AddBytes(2 << 20)
	d.draw()
	assert.Contains(t, out.String(), "fetch")
	assert.Contains(t, out.String(), " 50% |")

	p.SetPhase("replay")
	p.SetRevisionsTotal(120)
	p.AddBytes(2 << 20)
	p.AddRevisions(120, 121)
	d.draw()
	d.end()
	s := out.String()
	assert.Contains(t, s, "replay rev 121, 4.0 MiB read 100% |")
	assert.Contains(t, s, "(120/120, ")
	assert.True(t, strings.HasSuffix(s, "\n"), "%q", s)
}

// A full bar stays on screen: log lines that clear its line (written after the replay
// reached its total) do not take it away, and the display ends on it.
func TestDisplayFullBarAfterLogLines(t *testing.T) {
	var out bytes.Buffer
	lw := &lockedWriter{w: &out}
	lw.setClearLine(true)
	p := progress.New("replay")
	p.SetRevisionsTotal(100)
	p.AddRevisions(100, 101)
	p.SetPhase("sync")
	d := &display{p: p, w: lw.raw()}
	d.draw()
	fmt.Fprintln(lw, "level=INFO msg=\"deltas replayed\"")
	d.draw()
	fmt.Fprintln(lw, "level=INFO msg=\"data dir restored\"")
	d.end()
	s := out.String()
	lastLog := strings.LastIndex(s, "data dir restored")
	assert.Contains(t, s[lastLog:], "100% |", "the full bar is not drawn after the log line: %q", s)
	assert.True(t, strings.HasSuffix(s, "\n"), "%q", s)
}

// Not on a terminal, the progress goes to the log, and stopping writes the last counts.
func TestWatchProgressLogs(t *testing.T) {
	var logs bytes.Buffer
	env := &Env{Stderr: &bytes.Buffer{}, Log: slog.New(slog.NewTextHandler(&logs, nil))}
	p := progress.New("copy")
	p.AddBytesTotal(10)
	stop := watchProgress(context.Background(), env, p)
	p.AddBytes(10)
	stop()
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	last := lines[len(lines)-1]
	assert.Contains(t, last, "msg=progress phase=copy bytes=10 bytes_total=10")
	stop() // once only: no second line
	assert.Equal(t, logs.Len(), len(strings.Join(lines, "\n"))+1)
}

// --progress=off: nothing is shown, and a restore is given no watcher (it keeps no counters).
func TestWatchProgressOff(t *testing.T) {
	var logs, stderr bytes.Buffer
	env := &Env{Stderr: &stderr, Log: slog.New(slog.NewTextHandler(&logs, nil)), Progress: "off"}
	assert.Nil(t, progressWatcher(context.Background(), env))
	p := progress.New("copy")
	p.AddBytesTotal(10)
	stop := watchProgress(context.Background(), env, p)
	p.AddBytes(10)
	stop()
	assert.Zero(t, logs.Len()+stderr.Len(), "logs %q, stderr %q", logs.String(), stderr.String())

	env.Progress = "bar" // drawn even into a buffer, which is no terminal
	stop = watchProgress(context.Background(), env, p)
	stop()
	assert.Contains(t, stderr.String(), "100% |")
	assert.Zero(t, logs.Len())
}
