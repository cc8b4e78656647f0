//go:build soak

package main

import (
	"context"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// maxRestoreAnon bounds the anonymous memory (RssAnon) of `etcdbr restore`, whatever the
// length of the chain of deltas.
const maxRestoreAnon = 300 << 20

// TestRestoreMemorySoak restores a 100,000-key full snapshot with 200,000 and then 1,000,000
// events of deltas in a child `etcdbr restore`, sampling its /proc status: the peak RssAnon
// stays under 300 MiB, and the longer chain takes little more than the shorter one.
func TestRestoreMemorySoak(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Minute)
	defer cancel()
	bin := t.TempDir()
	etcdbr, etcdutl, err := buildBinaries(ctx, bin, "", "")
	if err != nil {
		t.Fatal(err)
	}
	var peaks []int64
	for _, events := range []int{200_000, 1_000_000} {
		res, err := benchRestore(ctx, restoreConfig{
			Keys: 100_000, Events: events, ValueSize: 200, DeltaRevisions: 10_000, Writers: 8, Seed: 1,
			Dir: filepath.Join(t.TempDir(), "work"), Etcdbr: etcdbr, Etcdutl: etcdutl, Log: io.Discard,
		})
		if err != nil {
			t.Fatalf("%d events: %v", events, err)
		}
		var report strings.Builder
		res.print(&report)
		t.Logf("%d events:\n%s", events, report.String())
		if res.Restore.PeakAnon > maxRestoreAnon {
			t.Errorf("%d events: peak RssAnon %d MiB, above %d MiB", events, res.Restore.PeakAnon>>20, maxRestoreAnon>>20)
		}
		peaks = append(peaks, res.Restore.PeakAnon)
	}
	if peaks[1] > 2*peaks[0] {
		t.Errorf("5 times the events took %.1f times the anonymous memory (%d MiB, then %d MiB): memory follows the chain",
			float64(peaks[1])/float64(peaks[0]), peaks[0]>>20, peaks[1]>>20)
	}
}
