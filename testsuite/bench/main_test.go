package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestBenchSmoke runs every scenario with tiny sizes (-short): it builds the binaries, makes
// the store, restores it both ways, starts etcdbr and plain etcd clean and after a SIGKILL,
// takes snapshots both ways and puts into both, and prints one JSON line per figure.
func TestBenchSmoke(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code := run(ctx, []string{"-short", "-json", "-dir", t.TempDir()}, &stdout, &stderr)
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
		targets  int
	}{
		{"restore: full (300 keys x 200 B) + ", []string{"wall_s", "peak_rss_mib", "peak_anon_mib"}, 2},
		{"restore: full (300 keys x 200 B) + ", []string{"wall_s", "peak_rss_mib", "peak_anon_mib"}, 2},
		{"start to ready, clean data dir", []string{"ready_s", "peak_rss_mib", "peak_anon_mib"}, 1},
		{"start to ready after a SIGKILL", []string{"ready_s", "peak_rss_mib", "peak_anon_mib"}, 0},
		{"full snapshot of a", []string{"wall_s", "mb_per_s", "peak_rss_mib"}, 1},
		{"put throughput, 200 B values, 4 clients", []string{"ops_per_s", "peak_rss_mib"}, 1},
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
		if f.Ratio <= 0 {
			t.Errorf("%s: no ratio", f.Name)
		}
		if len(f.Targets) != w.targets {
			t.Errorf("%s: targets %v, want %d", f.Name, f.Targets, w.targets)
		}
	}
	if len(figs) >= 2 {
		if get(figs[0].Etcdbr, "revisions_per_s") <= 0 || get(figs[1].Etcdbr, "revisions_per_s") <= 0 {
			t.Errorf("a restore does not report its replay rate: %v, %v", figs[0].Etcdbr, figs[1].Etcdbr)
		}
		if !strings.Contains(figs[0].Name, " 600 delta events") && !strings.Contains(figs[0].Name, "+ 6") {
			t.Errorf("the first restore is %q, want about 600 events", figs[0].Name)
		}
	}
	var table bytes.Buffer
	printTable(&table, figs)
	if !strings.Contains(table.String(), "| restore: full (300 keys x 200 B)") || !strings.Contains(table.String(), "etcdutl snapshot restore") {
		t.Errorf("the table does not show the figures:\n%s", &table)
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
