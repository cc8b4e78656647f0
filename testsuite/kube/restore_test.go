package kube

import (
	"context"
	"maps"
	"slices"
	"strconv"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// The namespaces of the scenarios: A holds the state restored to, B is created after it.
const (
	nsA = "team-a"
	nsB = "team-b"
)

// history is what pastAndPresent made: the state at revision R (namespace A with 50
// configmaps), and the state after it (namespace B with 50 configmaps, 10 of A's changed).
type history struct {
	atR     world
	r       int64
	now     world
	allKeys []string // every object of either state, for single GETs
}

// pastAndPresent writes the history that the restore scenarios go back in: namespace A
// with 50 configmaps (revision R), a full snapshot, then namespace B with 50 configmaps and
// 10 of A's changed.
func (c *cluster) pastAndPresent(ctx context.Context, t *testing.T) history {
	t.Helper()
	cs := c.kube.client
	var h history
	ns, err := createNamespace(ctx, cs, nsA)
	if err != nil {
		t.Fatal(err)
	}
	cms, err := createConfigMaps(ctx, cs, nsA, 0, 50, "original")
	if err != nil {
		t.Fatal(err)
	}
	h.atR = ns.with(cms)
	if h.r, err = c.revision(ctx); err != nil {
		t.Fatal(err)
	}
	full, err := c.m.api.fullSnapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("namespace %s with 50 configmaps: etcd at revision R=%d; full snapshot at revision %d", nsA, h.r, full)

	nsb, err := createNamespace(ctx, cs, nsB)
	if err != nil {
		t.Fatal(err)
	}
	bcms, err := createConfigMaps(ctx, cs, nsB, 0, 50, "b")
	if err != nil {
		t.Fatal(err)
	}
	changed, err := updateConfigMaps(ctx, cs, nsA, 0, 10, "changed")
	if err != nil {
		t.Fatal(err)
	}
	h.now = h.atR.with(nsb).with(bcms).with(changed)
	h.allKeys = slices.Sorted(maps.Keys(h.now))
	rev, err := c.revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("namespace %s with 50 configmaps, 10 of %s's changed: etcd at revision %d", nsB, nsA, rev)
	return h
}

// views are the clients of kube-apiserver the scenarios check: consistent lists, the
// informer's store and single GETs of keys, all in the namespaces sel.
func (c *cluster) views(inf *informer, sel inNamespaces, keys []string) []view {
	return []view{listView(c.kube.client, sel), informerView(inf.store, sel), getView(c.kube.client, keys)}
}

// startWithHistory starts etcdbr (deltas every second) and kube-apiserver, writes the
// history the restores go back in (pastAndPresent), and starts an informer that shows it.
func startWithHistory(ctx context.Context, t *testing.T) (*cluster, history, *informer) {
	t.Helper()
	c := startCluster(ctx, t, "--delta-snapshot-period=1s")
	h := c.pastAndPresent(ctx, t)
	inf := startInformer(ctx, t, c.kube.client)
	if !converge(ctx, t, convergeTimeout, fixed(h.now), c.views(inf, inNamespaces{nsA, nsB}, h.allKeys)...) {
		t.Fatal("kube-apiserver does not show the writes before the restore")
	}
	return c, h, inf
}

// fixed is a want function of converge for a state known in advance.
func fixed(w world) func(context.Context) (world, error) {
	return func(context.Context) (world, error) { return w, nil }
}

// checkRestoredHistory checks, after a restore to h.r, that etcd holds the state at R
// with its revision past high (the newest revision clients may have seen) and compacted
// above high+1, and that kube-apiserver and its clients converge to the state at R: B gone,
// A's changes undone, creates in B refused, writes in A taken.
// mark is the size of kube-apiserver's log before the restore began.
func (c *cluster) checkRestoredHistory(ctx context.Context, t *testing.T, h history, inf *informer, high, mark int64) {
	t.Helper()
	sel := inNamespaces{nsA, nsB}
	got, err := etcdWorld(ctx, c.etcd, sel)
	if err != nil {
		t.Fatal(err)
	}
	if d := diff(h.atR, got); d != "" {
		t.Errorf("etcd does not hold the state at revision %d after the restore: %s", h.r, d)
	}
	// A caught-up watcher of the old history resumes at high+1: it must be told "compacted".
	if err := checkCompacted(ctx, c.etcd, high+1); err != nil {
		t.Errorf("revision bump: the newest revision clients may have seen is %d: %v", high, err)
	} else {
		t.Logf("revision bump: etcd answers \"compacted\" at revision %d (the newest served was %d)", high+1, high)
	}

	start := time.Now()
	converged := converge(ctx, t, convergeTimeout, fixed(h.atR), c.views(inf, sel, h.allKeys)...)
	t.Logf("kube-apiserver and its clients converged: %v (%v after the restore ended); the informer learned %d deletions from a relist",
		converged, time.Since(start).Round(time.Millisecond), inf.relistDeletes.Load())
	c.logWatchEvidence(t, mark)

	c.refusedInMissingNamespace(ctx, t, nsB, converged)
	c.writesSucceed(ctx, t, nsA)
}

// (a) A restore over etcdbr's HTTP API to a revision before the newest, under a running
// kube-apiserver with an informer: every client converges to the restored state without
// kube-apiserver restarting.
func TestLiveRestoreToRevision(t *testing.T) {
	needBinaries(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	c, h, inf := startWithHistory(ctx, t)

	mark := c.kube.proc.logSize()
	start := time.Now()
	res, err := c.m.api.restore(ctx, h.r)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s; waited %v", res, time.Since(start).Round(time.Millisecond))
	if res.Revision != h.r {
		t.Errorf("restored revision %d, asked for %d", res.Revision, h.r)
	}
	c.checkRestoredHistory(ctx, t, h, inf, max(res.MemberRevision, res.StoreRevision), mark)
}

// (c) An offline restore: etcdbr stops (kube-apiserver keeps running and retrying),
// `etcdbr restore` builds a new data dir at revision R from the same store, and `etcdbr run`
// serves it on the same client URL: kube-apiserver converges as after a live restore.
func TestOfflineRestoreToRevision(t *testing.T) {
	needBinaries(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	c, h, inf := startWithHistory(ctx, t)

	seen, err := c.revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mark := c.kube.proc.logSize()
	if err := c.etcdbr.stop(2 * time.Minute); err != nil {
		t.Fatalf("etcdbr did not stop cleanly: %v", err)
	}
	high, err := c.m.storeNewest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if high < seen {
		t.Fatalf("the store ends at revision %d, before revision %d that etcd served: the final delta is missing", high, seen)
	}
	start := time.Now()
	args := append([]string{"restore", "--data-dir", c.m.dataDir("restored"), "--store", c.m.store,
		"--to-revision", strconv.FormatInt(h.r, 10), "--"}, c.m.etcdFlags()...)
	out, err := runToExit(ctx, etcdbrBin, args...)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	t.Logf("etcdbr restore in %v (the store ended at revision %d):\n%s", time.Since(start).Round(time.Millisecond), high, out)

	c.etcdbr = c.m.run(ctx, t, c.m.dataDir("restored"), "--delta-snapshot-period=1s")
	c.checkRestoredHistory(ctx, t, h, inf, high, mark)
}

// (b) A CORRUPT alarm with --restore-on-corrupt restores the newest backup, including the
// writes made after the last periodic delta (they reach the store in the final delta):
// kube-apiserver converges to exactly what etcd holds, and takes writes.
func TestCorruptAlarmRestore(t *testing.T) {
	needBinaries(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	// No periodic delta comes within the test: the writes after the full snapshot reach the
	// store only with the final delta the restore uploads.
	c := startCluster(ctx, t, "--restore-on-corrupt", "--delta-snapshot-period=10m")
	cs := c.kube.client
	const ns = "team-c"
	if _, err := createNamespace(ctx, cs, ns); err != nil {
		t.Fatal(err)
	}
	if _, err := createConfigMaps(ctx, cs, ns, 0, 30, "original"); err != nil {
		t.Fatal(err)
	}
	full, err := c.m.api.fullSnapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := createConfigMaps(ctx, cs, ns, 30, 50, "late"); err != nil {
		t.Fatal(err)
	}
	if _, err := updateConfigMaps(ctx, cs, ns, 0, 10, "changed"); err != nil {
		t.Fatal(err)
	}
	gone, err := deleteConfigMaps(ctx, cs, ns, 10, 15)
	if err != nil {
		t.Fatal(err)
	}
	before, err := etcdWorld(ctx, c.etcd, inNamespaces{ns})
	if err != nil {
		t.Fatal(err)
	}
	keys := append(slices.Sorted(maps.Keys(before)), gone...)
	inf := startInformer(ctx, t, cs)
	etcdNow := func(ctx context.Context) (world, error) { return etcdWorld(ctx, c.etcd, nil) }
	if !converge(ctx, t, convergeTimeout, etcdNow, c.views(inf, nil, keys)...) {
		t.Fatal("kube-apiserver does not show what etcd holds before the alarm")
	}
	last, err := c.revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("full snapshot at revision %d; 20 creates, 10 updates, 5 deletes after it in %s; etcd at revision %d", full, ns, last)

	mark := c.kube.proc.logSize()
	raiseCorrupt(ctx, t, c)
	res, err := c.m.api.waitRestore(ctx, func(r *restoreStatus) bool { return r.Trigger == "corrupt" })
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s", res)
	if res.Revision < last || res.Revision != res.MemberRevision {
		t.Errorf("restored revision %d: want the member's newest, %d (at least %d, the revision before the alarm)",
			res.Revision, res.MemberRevision, last)
	}
	after, err := etcdWorld(ctx, c.etcd, inNamespaces{ns})
	if err != nil {
		t.Fatal(err)
	}
	if d := diff(before, after); d != "" {
		t.Errorf("etcd lost writes in the restore (they were made after the last delta): %s", d)
	}
	alarms, err := c.etcd.AlarmList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(alarms.Alarms) != 0 {
		t.Errorf("alarms after the restore: %v", alarms.Alarms)
	}

	start := time.Now()
	converged := converge(ctx, t, convergeTimeout, etcdNow, c.views(inf, nil, keys)...)
	t.Logf("kube-apiserver and its clients show what etcd holds: %v (%v after the restore ended)",
		converged, time.Since(start).Round(time.Millisecond))
	c.logWatchEvidence(t, mark)
	c.writesSucceed(ctx, t, ns)
	keys = append(keys, cmKey(ns, "after-restore"))
	converge(ctx, t, convergeTimeout, etcdNow, c.views(inf, nil, keys)...)
}

// raiseCorrupt raises a CORRUPT alarm through etcd's Maintenance API, as etcd's corruption
// checks do.
func raiseCorrupt(ctx context.Context, t *testing.T, c *cluster) {
	t.Helper()
	st, err := c.etcd.Status(ctx, c.m.clientURL)
	if err != nil {
		t.Fatalf("etcd status: %v", err)
	}
	_, err = pb.NewMaintenanceClient(c.etcd.ActiveConnection()).Alarm(ctx, &pb.AlarmRequest{
		Action: pb.AlarmRequest_ACTIVATE, MemberID: st.Header.MemberId, Alarm: pb.AlarmType_CORRUPT})
	if err != nil {
		t.Fatalf("raise a CORRUPT alarm: %v", err)
	}
}
