package testsuite

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/etcdbr/etcdbr/internal/etcdtest"
)

// TestRunCollectsGarbage: `etcdbr run` applies the retention policy while it takes backups
// (every --gc-period and after each full snapshot), and what it keeps still restores to the
// newest point with every key equal.
func TestRunCollectsGarbage(t *testing.T) {
	dir := t.TempDir()
	m := newMember(t, dir)
	store := "file://" + filepath.Join(dir, "store")
	p := start(t, m.runArgs(store, "--full-snapshot-schedule", "@every 1s", "--delta-snapshot-period", "1s",
		"--gc-policy", "limit", "--max-backups", "2", "--gc-period", "1s"))
	cli := client(t, m.ClientURL)
	ctx := context.Background()
	var rev int64
	for round := 0; round < 6; round++ {
		r, err := etcdtest.Workload{Seed: uint64(10 + round), Keys: 200, Overwrites: 50}.Run(ctx, cli)
		if err != nil {
			t.Fatal(err)
		}
		rev = r
		waitFull(t, store, rev, time.Minute)
	}
	want, err := etcdtest.Take(ctx, cli, 0)
	if err != nil {
		t.Fatal(err)
	}
	// GC runs every second: the fulls come down to the policy's 2.
	deadline := time.Now().Add(time.Minute)
	for len(fulls(t, store)) > 2 {
		if time.Now().After(deadline) {
			t.Fatalf("still %d full snapshots after a minute of GC with --max-backups 2", len(fulls(t, store)))
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !strings.Contains(p.Output(), "component=gc") {
		t.Fatalf("no GC run logged:\n%s", p.Output())
	}
	cli.Close()
	p.stop()

	// What GC kept restores the newest point.
	m2 := newMember(t, filepath.Join(dir, "restored"))
	code, out := runToExit(t, append([]string{"restore", "--data-dir", m2.DataDir, "--store", store, "--force-restore", "--"}, m2.etcdFlags()...))
	if code != 0 {
		t.Fatalf("restore after GC: exit %d\n%s", code, out)
	}
	p2 := start(t, m2.runArgs(store, "--full-snapshot-schedule", "@daily", "--gc-period", "0"))
	got, err := etcdtest.Take(ctx, client(t, m2.ClientURL), 0)
	if err != nil {
		t.Fatal(err)
	}
	if diff := etcdtest.Diff(newHistory(want, want.Revision), got, 20); len(diff) > 0 {
		t.Fatalf("restored data differs after GC:\n%s", strings.Join(diff, "\n"))
	}
	p2.stop()
}
