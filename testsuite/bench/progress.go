package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// progressModes are the ways a restore shows its progress, in the order of the first round:
// off is the baseline, log what a pipe gets by default, bar the terminal's drawing (drawn
// into a pipe here, every 200 ms, which costs what it costs on a terminal).
var progressModes = []string{"off", "log", "bar"}

// benchProgress measures what showing progress costs: `etcdbr restore` of the dataset's last
// point with --progress off, log and bar, in rotating order for cfg.Rounds rounds (medians).
// With cfg.Artifacts set, it also keeps what a person sees of that restore: the log lines of
// a piped run, and, in a tmux pane of 120x30, the terminal's screen captured while it runs
// and at its end.
func benchProgress(ctx context.Context, cfg config, ds dataset, dir string) ([]figure, error) {
	last := ds.Points[len(ds.Points)-1]
	rounds := max(cfg.Rounds, 1)
	runs := map[string]*restoreRuns{}
	into := filepath.Join(dir, "progress-restored")
	defer os.RemoveAll(into)
	var logLines []string
	for round := range rounds {
		for i := range progressModes {
			mode := progressModes[(i+round)%len(progressModes)]
			cfg.progress("round %d of %d: etcdbr --progress %s restore of the full snapshot and %d events (%d revisions)",
				round+1, rounds, mode, last.Events, last.Revisions)
			st, replayed, err := restoreMeasured(ctx, cfg, ds, last, into, "--progress", mode)
			if err != nil {
				return nil, err
			}
			if !replayed && last.Revisions > 0 {
				return nil, fmt.Errorf("etcdbr --progress %s restore of revision %d replayed no delta", mode, last.Revision)
			}
			lines := progressLines(st.Stderr)
			if (len(lines) > 0) != (mode == "log") {
				return nil, fmt.Errorf("etcdbr --progress %s restore logged %d progress lines", mode, len(lines))
			}
			if mode == "log" {
				logLines = lines
			}
			if runs[mode] == nil {
				runs[mode] = &restoreRuns{}
			}
			runs[mode].add(st, replayLog{})
		}
	}
	if cfg.Artifacts != "" {
		if err := os.MkdirAll(cfg.Artifacts, 0o755); err != nil {
			return nil, err
		}
		pipe := filepath.Join(cfg.Artifacts, "progress-pipe.log")
		if err := os.WriteFile(pipe, []byte(strings.Join(logLines, "\n")+"\n"), 0o644); err != nil {
			return nil, err
		}
		cfg.progress("the progress lines of a piped restore: %s", pipe)
		screens, err := restoreOnTerminal(ctx, cfg, ds, last, into)
		if err != nil {
			return nil, fmt.Errorf("etcdbr restore on a terminal: %w", err)
		}
		term := filepath.Join(cfg.Artifacts, "progress-terminal.txt")
		if err := os.WriteFile(term, []byte(strings.Join(screens, "\n--- a second later ---\n")), 0o644); err != nil {
			return nil, err
		}
		cfg.progress("the terminal's screens of a restore (tmux, 120x30, one a second): %s", term)
	}

	var figs []figure
	off := runs["off"]
	for _, mode := range progressModes[1:] {
		r := runs[mode]
		what := map[string]string{"log": "log lines every 5 s (a pipe)", "bar": "a bar drawn every 200 ms"}[mode]
		f := figure{
			Name:         fmt.Sprintf("restore showing progress as %s: full + %d delta events", what, last.Events),
			Etcdbr:       r.values(),
			BaselineName: "the same restore with --progress off (no counters)",
			Baseline:     off.values(),
			Note: fmt.Sprintf("median of %d each, in rotating order (off, log, bar); wall ratio %.3f. The CPU time is compared: "+
				"what showing progress adds is work of the process itself, and the wall time of a restore on a shared machine "+
				"moves by more than that from one run to the next", rounds, median(r.wall)/median(off.wall)),
		}
		f.compare("cpu_s")
		f.want("CPU ratio <= 1.02", f.Ratio <= 1.02)
		figs = append(figs, f)
	}
	return figs, nil
}

// progressLines returns the progress lines of etcdbr's JSON log.
func progressLines(stderr []byte) []string {
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(stderr))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var line struct {
			Msg string `json:"msg"`
		}
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "progress" {
			lines = append(lines, sc.Text())
		}
	}
	return lines
}

// restoreOnTerminal runs `etcdbr restore` of p into a new data dir into in a tmux pane of
// 120x30 (standard error a terminal: the default display is the bar) and returns the
// screen once a second while it runs, and at its end.
func restoreOnTerminal(ctx context.Context, cfg config, ds dataset, p point, into string) ([]string, error) {
	if _, err := exec.LookPath("tmux"); err != nil {
		return nil, errors.New("tmux is missing: install it to capture the terminal, or leave -artifacts out")
	}
	os.RemoveAll(into)
	socket := fmt.Sprintf("etcdbr-bench-%d", os.Getpid())
	tmux := func(args ...string) (string, error) {
		out, err := exec.CommandContext(ctx, "tmux", append([]string{"-L", socket}, args...)...).CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("tmux %s: %w\n%s", strings.Join(args, " "), err, out)
		}
		return string(out), nil
	}
	defer exec.Command("tmux", "-L", socket, "kill-server").Run()
	status := into + ".status"
	defer os.Remove(status)
	cmd := fmt.Sprintf("%s restore --store %s --data-dir %s --to-revision %d -- --name bench --initial-cluster bench=http://127.0.0.1:2380 "+
		"--initial-advertise-peer-urls http://127.0.0.1:2380; echo $? > %s", cfg.Bins.Etcdbr, ds.StoreURL, into, p.Revision, status)
	if _, err := tmux("new-session", "-d", "-x", "120", "-y", "30", "-s", "restore", "sh", "-c", cmd+"; sleep 3600"); err != nil {
		return nil, err
	}
	var screens []string
	capture := func() error {
		s, err := tmux("capture-pane", "-p", "-t", "restore")
		if err == nil && (len(screens) == 0 || screens[len(screens)-1] != s) {
			screens = append(screens, strings.TrimRight(s, "\n")+"\n")
		}
		return err
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		if code, err := os.ReadFile(status); err == nil && len(bytes.TrimSpace(code)) > 0 {
			// tmux shows what the pane printed on its own time: one more look a second later.
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-tick.C:
			}
			if err := capture(); err != nil {
				return nil, err
			}
			if c := strings.TrimSpace(string(code)); c != "0" {
				return screens, fmt.Errorf("etcdbr restore exited %s:\n%s", c, screens[len(screens)-1])
			}
			return screens, nil
		}
		if err := capture(); err != nil {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-tick.C:
		}
	}
}
