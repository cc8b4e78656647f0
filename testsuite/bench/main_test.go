package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestBenchSmoke runs every scenario with tiny sizes (-short): it builds the binaries, makes
// the store, restores it both ways, compacts it (the compacted full snapshot restores to the
// chain's HashKV) and restores it again, starts etcdbr (checked from its log to have validated at
// the depth each figure times) and plain etcd clean and after a SIGKILL, takes snapshots with
// etcdbr snapshot (which must stream in one pass: it has no spool dir), with etcdbr run's API
// and with etcdctl, puts into both, wipes a member of a cluster of three twice (etcdbr's
// learner path, then plain etcd replaced by hand), and prints one JSON line per figure.
func TestBenchSmoke(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	dir := t.TempDir()
	artifacts := filepath.Join(t.TempDir(), "artifacts")
	code := run(ctx, []string{"-short", "-json", "-dir", dir, "-artifacts", artifacts}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit code %d\nstdout:\n%s\nstderr:\n%s", code, &stdout, &stderr)
	}
	t.Log(stdout.String())
	var figs []figure
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		var f figure
		if err := json.Unmarshal(sc.Bytes(), &f); err != nil {
			t.Fatalf("a line is not a figure: %v\n%s", err, sc.Bytes())
		}
		figs = append(figs, f)
	}
	want := []struct {
		name     string
		measured []string // in both etcdbr's values and the baseline's
		etcdbr   []string // in etcdbr's values only
		targets  int
		alone    bool // no baseline: nothing else does it
	}{
		{"restore: full (300 keys x 200 B) + ", []string{"wall_s", "peak_rss_mib", "peak_anon_mib"}, []string{"revisions_per_s"}, 2, false},
		{"restore: full (300 keys x 200 B) + ", []string{"wall_s", "peak_rss_mib", "peak_anon_mib"}, []string{"revisions_per_s"}, 2, false},
		{"restore showing progress as log lines", []string{"wall_s", "peak_rss_mib", "peak_anon_mib"}, nil, 1, false},
		{"restore showing progress as a bar", []string{"wall_s", "peak_rss_mib", "peak_anon_mib"}, nil, 1, false},
		{"compact: full (300 keys x 200 B) + ", []string{"wall_s", "peak_rss_mib", "peak_anon_mib"}, []string{"revisions_per_s"}, 2, false},
		{"restore after compaction: ", []string{"wall_s", "peak_rss_mib", "peak_anon_mib"}, nil, 0, false},
		{"start to ready, clean data dir", []string{"ready_s", "peak_rss_mib", "peak_anon_mib"}, nil, 1, false},
		{"start to ready after a SIGKILL", []string{"ready_s", "peak_rss_mib", "peak_anon_mib"}, nil, 0, false},
		{"full snapshot of a", []string{"wall_s", "mb_per_s", "cpu_s", "peak_rss_mib"}, nil, 1, false},
		{"full snapshot of a", []string{"wall_s", "mb_per_s"}, nil, 1, false},
		{"put throughput, 200 B values, 4 clients", []string{"ops_per_s", "peak_rss_mib"}, nil, 1, false},
		{"a wiped member of 3 a voter again", []string{"wall_s", "learner_s"}, []string{"full_snapshot_s"}, 0, false},
		{"defrag of a fragmented member: 8 MiB", []string{"p50_ms", "p99_ms", "max_ms"}, []string{"db_before_mib", "db_after_mib", "defrag_s"}, 0, false},
		// Its target is judged at the size it is for (a 1 GiB db, 1M events), not at these.
		{"cluster restore of 3 members (db ", nil, []string{"wall_s", "done_s", "recorded_s"}, 0, true},
	}
	if len(figs) != len(want) {
		t.Fatalf("%d figures, want %d:\n%s", len(figs), len(want), &stdout)
	}
	for i, w := range want {
		f := figs[i]
		if !strings.HasPrefix(f.Name, w.name) {
			t.Errorf("figure %d is %q, want %q...", i, f.Name, w.name)
		}
		for _, m := range w.measured {
			if get(f.Etcdbr, m) <= 0 || get(f.Baseline, m) <= 0 {
				t.Errorf("%s: %s is %v for etcdbr and %v for the baseline, want both measured", f.Name, m, get(f.Etcdbr, m), get(f.Baseline, m))
			}
		}
		for _, m := range w.etcdbr {
			if get(f.Etcdbr, m) <= 0 {
				t.Errorf("%s: %s is %v for etcdbr, want it measured", f.Name, m, get(f.Etcdbr, m))
			}
		}
		if f.Ratio <= 0 && !w.alone {
			t.Errorf("%s: no ratio", f.Name)
		}
		if len(f.Targets) != w.targets {
			t.Errorf("%s: targets %v, want %d", f.Name, f.Targets, w.targets)
		}
	}
	if len(figs) == len(want) {
		if !strings.Contains(figs[0].Name, " 600 delta events") && !strings.Contains(figs[0].Name, "+ 6") {
			t.Errorf("the first restore is %q, want about 600 events", figs[0].Name)
		}
		// The timed etcdbr starts validated at the depth their figure names.
		for log, depth := range map[string]string{"start-clean-etcdbr-0.log": "quick", "start-killed-etcdbr-0-after.log": "full"} {
			v, err := readValidationLog(filepath.Join(dir, log))
			if err != nil || v.Depth != depth || v.Verdict != "valid" {
				t.Errorf("%s: %+v, %v; want a valid data dir, checked at depth %s", log, v, err, depth)
			}
		}
		// The cluster restore's store is its own, of a db of -cluster-restore-db-mib (2 in -short).
		var mib, events int
		if _, err := fmt.Sscanf(figs[len(figs)-1].Name, "cluster restore of 3 members (db %d MiB, %d events)", &mib, &events); err != nil || mib < 2 || events < 1500 {
			t.Errorf("the cluster restore is %q (%v), want a db of 2 MiB or more and 1500 events", figs[len(figs)-1].Name, err)
		}
		if !strings.Contains(figs[8].Name, "etcdbr snapshot (sidecar") || !strings.Contains(figs[9].Name, "etcdbr run (in-process") {
			t.Errorf("the snapshot figures are %q and %q, want the sidecar's then etcdbr run's", figs[8].Name, figs[9].Name)
		}
		for _, tg := range figs[4].Targets {
			if !tg.Met {
				t.Errorf("%s: target %q missed", figs[4].Name, tg.Goal)
			}
		}
	}
	// What a person sees of the progress scenario's restore: on a terminal the bar, full at
	// the end; in a pipe the log lines, the last at every revision of the total.
	screens, err := os.ReadFile(filepath.Join(artifacts, "progress-terminal.txt"))
	if err != nil || !strings.Contains(string(screens), "100% |") {
		t.Errorf("the terminal's screens of the restore (%v) show no full bar:\n%s", err, screens)
	}
	pipe, err := os.ReadFile(filepath.Join(artifacts, "progress-pipe.log"))
	lines := strings.Split(strings.TrimSpace(string(pipe)), "\n")
	var lastLine struct {
		Revisions      int64 `json:"revisions"`
		RevisionsTotal int64 `json:"revisions_total"`
	}
	if err != nil || json.Unmarshal([]byte(lines[len(lines)-1]), &lastLine) != nil || lastLine.Revisions == 0 || lastLine.Revisions != lastLine.RevisionsTotal {
		t.Errorf("the progress lines of the piped restore (%v) do not end at every revision of the total:\n%s", err, pipe)
	}
	var table bytes.Buffer
	printTable(&table, figs)
	if !strings.Contains(table.String(), "| restore: full (300 keys x 200 B)") || !strings.Contains(table.String(), "etcdutl snapshot restore") {
		t.Errorf("the table does not show the figures:\n%s", &table)
	}
}

// The depth a start validated at is read from etcdbr's log, and a log without it is an error
// (the start figures fail rather than time the wrong depth).
func TestReadValidationLog(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.log")
	if err := os.WriteFile(good, []byte(`{"level":"warn","msg":"etcd says something"}
not json
{"time":"2026-11-25T19:12:23.612116896Z","level":"INFO","msg":"data dir checked","verdict":"valid","depth":"quick","reason":"","took":1000000}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	v, err := readValidationLog(good)
	if err != nil || v.Depth != "quick" || v.Took != time.Millisecond || v.Verdict != "valid" {
		t.Errorf("readValidationLog = %+v, %v; want depth quick, took 1ms", v, err)
	}
	bad := filepath.Join(dir, "bad.log")
	if err := os.WriteFile(bad, []byte(`{"msg":"starting etcd"}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := readValidationLog(bad); err == nil {
		t.Error("a log without \"data dir checked\" was accepted")
	}
}

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		xs   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{5, 1, 4}, 4}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := median(c.xs); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.xs, got, c.want)
		}
	}
}

func TestBenchUsage(t *testing.T) {
	for _, args := range [][]string{{"-scenario", "nope"}, {"-keys", "0"}, {"-rounds", "0"}, {"-bogus"}, {"extra"}} {
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), args, &stdout, &stderr); code != 2 {
			t.Errorf("%v: exit code %d, want 2", args, code)
		}
	}
}
