//go:build soak

package main

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"
)

// maxRestoreAnon bounds the anonymous memory (RssAnon) of `etcdbr restore`, in MiB, whatever
// the length of the chain of deltas.
const maxRestoreAnon = 300

// TestRestoreMemorySoak restores a 100,000-key full snapshot (1 KiB values) with 200,000 and
// with 1,000,000 events of deltas in a child `etcdbr restore`, sampling its /proc status: the
// peak RssAnon stays under 300 MiB, and the longer chain takes little more than the shorter.
func TestRestoreMemorySoak(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Minute)
	defer cancel()
	figs, err := bench(ctx, config{
		Keys: 100_000, ValueSize: 1024, Events: 200_000, LongEvents: 1_000_000, DeltaRevisions: 10_000, Writers: 8, Seed: 1,
		Rounds: 1, Scenarios: []string{"restore"}, Dir: t.TempDir(), Log: io.Discard,
	})
	if err != nil {
		t.Fatal(err)
	}
	var report strings.Builder
	printTable(&report, figs)
	t.Log("\n" + report.String())
	if len(figs) != 2 {
		t.Fatalf("%d figures, want 2", len(figs))
	}
	var peaks []float64
	for _, f := range figs {
		anon := get(f.Etcdbr, "peak_anon_mib")
		if anon <= 0 || anon > maxRestoreAnon {
			t.Errorf("%s: peak RssAnon %.0f MiB, want measured and under %d MiB", f.Name, anon, maxRestoreAnon)
		}
		peaks = append(peaks, anon)
	}
	if peaks[1] > 2*peaks[0] {
		t.Errorf("5 times the events took %.1f times the anonymous memory (%.0f MiB, then %.0f MiB): memory follows the chain",
			peaks[1]/peaks[0], peaks[0], peaks[1])
	}
}
