package testsuite

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/etcdbr/etcdbr/embedded/datadir"
	"github.com/etcdbr/etcdbr/internal/etcdtest"
	"github.com/etcdbr/etcdbr/snapstore"
)

// aliveRecord reads the liveness record of cluster in the store; ok is false when it has none.
func aliveRecord(t testing.TB, url, cluster string) (snapstore.AliveRecord, bool) {
	t.Helper()
	s := openStore(t, url)
	defer s.Close()
	rec, ok, err := s.Alive(context.Background(), cluster)
	if err != nil {
		t.Fatal(err)
	}
	return rec, ok
}

// TestStoreTakeoverNewMachine: disaster recovery onto a new machine. Member A backs up into a
// file store. While A runs, a second cluster (member B: other peer URLs, an empty data dir,
// the same store, no extra flag) is refused with the message of a store of another cluster,
// and A's data and the store are untouched. Once A's machine is gone (A is killed), B starts
// with no extra flag: it watches A's liveness record stay unchanged for A's bound, logs the
// takeover at warn level (which cluster owned the store, when it last wrote, the bound),
// serves A's data (keys, values, revisions, leases; a new history), the store records B's
// cluster (A in its history), and B's backups and liveness record continue in the store.
func TestStoreTakeoverNewMachine(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	store := "file://" + filepath.Join(dir, "store")
	const bound = "10s"

	a := newMember(t, filepath.Join(dir, "a"))
	pa := start(t, a.runArgs(store, "--full-snapshot-schedule", "@daily", "--delta-snapshot-period", "1s", "--store-takeover-after", bound))
	cli := client(t, a.ClientURL)
	idA := clusterOf(t, cli)
	rev, err := etcdtest.Workload{Seed: 23, Keys: 1500, Overwrites: 150, Deletes: 80, LeasedKeys: 20}.Run(ctx, cli)
	if err != nil {
		t.Fatal(err)
	}
	want, err := etcdtest.Take(ctx, cli, 0)
	if err != nil {
		t.Fatal(err)
	}
	waitStoreRevision(t, store, rev, time.Minute)
	var first snapstore.AliveRecord
	waitFor(t, "A's liveness record", time.Minute, func() bool {
		var ok bool
		first, ok = aliveRecord(t, store, idA)
		return ok
	})
	if first.Member != a.Name || first.TakeoverAfter != snapstore.Duration(10*time.Second) || first.Refresh != snapstore.Duration(time.Second) {
		t.Fatalf("A's liveness record: %+v", first)
	}
	// A rewrites it while idle: nothing changes in etcd meanwhile.
	waitFor(t, "A to rewrite its liveness record", time.Minute, func() bool {
		rec, ok := aliveRecord(t, store, idA)
		return ok && !rec.Same(first)
	})

	t.Log("A alive: a second cluster on the same store is refused")
	b := newMember(t, filepath.Join(dir, "b"))
	idB := configCluster(t, b.etcdFlags())
	if idB == idA {
		t.Fatalf("both members create cluster %s", idA)
	}
	before := storeState(t, store)
	code, out := runToExit(t, b.runArgs(store, "--full-snapshot-schedule", "@daily", "--delta-snapshot-period", "1s"))
	if code != 1 {
		t.Fatalf("etcdbr run of cluster B on A's store while A runs: exit %d, want 1\n%s", code, out)
	}
	for _, s := range []string{
		"the store belongs to cluster " + idA + ", but a restore with this etcd configuration creates cluster " + idB,
		"--force-restore", "nothing was changed", "cluster " + idA + " is alive",
	} {
		if !strings.Contains(out, s) {
			t.Errorf("the refusal lacks %q\n%s", s, out)
		}
	}
	if strings.Contains(out, "taking the store over") {
		t.Errorf("B took the store of a living owner over\n%s", out)
	}
	if after := storeState(t, store); after != before {
		t.Fatalf("the refused member changed the store:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if _, err := os.Stat(b.DataDir); !os.IsNotExist(err) {
		t.Fatalf("the refused member created its data dir (%v)", err)
	}
	if leftovers, _ := filepath.Glob(b.DataDir + ".*"); len(leftovers) > 0 {
		t.Fatalf("the refused member left files beside its data dir: %v", leftovers)
	}
	got, err := etcdtest.Take(ctx, cli, 0)
	if err != nil {
		t.Fatal(err)
	}
	if diff := etcdtest.Diff(want, got, 20); len(diff) > 0 {
		t.Fatalf("A's data changed:\n%s", strings.Join(diff, "\n"))
	}

	t.Log("A's machine is gone: B takes the store over")
	cli.Close()
	if err := pa.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	pa.wait(time.Minute)
	// etcdbr validate reads the owner's record once, and says that run watches it first.
	code, out = runToExit(t, append([]string{"validate", "--data-dir", b.DataDir, "--store", store, "--"}, b.etcdFlags()...))
	if code != 1 || !strings.Contains(out, "store takeover: etcdbr run watches the owner first: cluster "+idA+" last wrote its liveness record") {
		t.Errorf("etcdbr validate on B's empty data dir: exit %d, want 1 and what the owner's record says\n%s", code, out)
	}
	pb := start(t, b.runArgs(store, "--full-snapshot-schedule", "@daily", "--delta-snapshot-period", "1s", "--store-takeover-after", bound))
	pb.waitLine("taking the store over", 2*time.Minute)
	if n := pb.count("level=WARN", "taking the store over", "store_cluster="+idA, "cluster="+idB, "last_written=", "takeover_after="+bound); n != 1 {
		t.Errorf("%d warnings of the takeover naming A, B, A's last write and the bound, want 1\n%s", n, pb.Output())
	}
	cliB := client(t, b.ClientURL)
	if id := clusterOf(t, cliB); id != idB {
		t.Fatalf("B serves cluster %s, want %s", id, idB)
	}
	got, err = etcdtest.Take(ctx, cliB, 0)
	if err != nil {
		t.Fatal(err)
	}
	// What A served after the store's newest revision is unknown: a new history.
	if diff := etcdtest.Diff(newHistory(want, want.Revision), got, 20); len(diff) > 0 {
		t.Fatalf("B's data differs from what A served:\n%s", strings.Join(diff, "\n"))
	}
	if id, err := datadir.ReadIDs(b.DataDir, ""); err != nil || id.ClusterID != idB {
		t.Fatalf("B's data dir is cluster %q (%v), want %s", id.ClusterID, err, idB)
	}
	rec, ok := clusterRecord(t, store)
	if !ok || rec.ClusterID != idB || len(rec.Previous) != 1 || rec.Previous[0].ClusterID != idA {
		t.Fatalf("the store records %+v (ok %v), want cluster %s after %s", rec, ok, idB, idA)
	}
	// B's backups continue in the store, and B says it is alive there.
	waitStoreRevision(t, store, putKeys(t, cliB, "b", 50), time.Minute)
	waitFor(t, "B's liveness record", time.Minute, func() bool {
		_, ok := aliveRecord(t, store, idB)
		return ok
	})
	cliB.Close()
	pb.stop()
}
