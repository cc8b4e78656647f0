package testsuite

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/types"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdbr/etcdbr/embedded"
	"github.com/etcdbr/etcdbr/embedded/datadir"
	"github.com/etcdbr/etcdbr/internal/etcdtest"
	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// idStatus is as much of GET /v1/status as the cluster record tests read.
type idStatus struct {
	Etcd struct {
		ClusterID string `json:"cluster_id"`
	} `json:"etcd"`
	Backups struct {
		StoreCluster    string `json:"store_cluster"`
		ClusterMismatch string `json:"cluster_mismatch"`
	} `json:"backups"`
	LastError *struct {
		Message string `json:"message"`
	} `json:"last_error"`
}

// clusterOf is the cluster ID etcd reports (etcd's hex form, as etcdctl prints it).
func clusterOf(t testing.TB, cli *clientv3.Client) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, "cluster-id-probe")
	if err != nil {
		t.Fatal(err)
	}
	return types.ID(resp.Header.ClusterId).String()
}

// configCluster is the cluster ID a new member or a restore creates from etcd flags.
func configCluster(t testing.TB, flags []string) string {
	t.Helper()
	cfg, err := embedded.ParseFlags(flags)
	if err != nil {
		t.Fatal(err)
	}
	id, err := embedded.ClusterIDFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// clusterRecord reads the store's cluster record; ok is false when it has none.
func clusterRecord(t testing.TB, url string) (snapstore.ClusterRecord, bool) {
	t.Helper()
	ctx := context.Background()
	s := openStore(t, url)
	defer s.Close()
	rec, ok, err := s.ClusterRecord(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return rec, ok
}

// storeState describes everything in a store: every backup object (name and size) and the
// cluster record.
func storeState(t testing.TB, url string) string {
	t.Helper()
	var b strings.Builder
	for _, list := range [][]catalog.Snapshot{fulls(t, url), deltas(t, url)} {
		for _, s := range list {
			fmt.Fprintf(&b, "%s %d\n", s.Key, s.Size)
		}
	}
	rec, ok := clusterRecord(t, url)
	fmt.Fprintf(&b, "cluster record %v: %+v\n", ok, rec)
	return b.String()
}

// runWith is `etcdbr run` for a data dir and a store with the given etcd flags.
func runWith(dataDir, store string, flags []string, extra ...string) []string {
	args := append([]string{"run", "--data-dir", dataDir, "--store", store}, extra...)
	return append(append(args, "--"), flags...)
}

// restoreWith is `etcdbr restore` into a data dir from a store with the given etcd flags.
func restoreWith(dataDir, store string, flags []string, extra ...string) []string {
	args := append([]string{"restore", "--data-dir", dataDir, "--store", store}, extra...)
	return append(append(args, "--"), flags...)
}

// putKeys writes n keys under prefix and returns the last revision.
func putKeys(t testing.TB, cli *clientv3.Client, prefix string, n int) int64 {
	t.Helper()
	var rev int64
	for i := range n {
		resp, err := cli.Put(context.Background(), fmt.Sprintf("%s-%04d", prefix, i), strings.Repeat("v", 64))
		if err != nil {
			t.Fatal(err)
		}
		rev = resp.Header.Revision
	}
	return rev
}

// TestClusterRecordBackupsClaimTheStore: `etcdbr run` records its cluster in the store with its
// first backup; a second cluster (its own data dir and --initial-cluster-token) that reaches
// the same store (it was unreachable when that member started, so that the start-up check
// could not see it) uploads nothing into it, full or delta, and its readiness, status and
// metrics say why; the sidecar refuses it likewise.
func TestClusterRecordBackupsClaimTheStore(t *testing.T) {
	srv := startStoppableS3(t)
	srv.setEnv(t)
	dir := t.TempDir()

	// Cluster A backs up into the store, which then records A.
	a := newMember(t, filepath.Join(dir, "a"))
	addrA := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := start(t, a.runArgs(srv.url, "--full-snapshot-schedule", "@daily", "--delta-snapshot-period", "1s", "--listen-api", addrA))
	cli := client(t, a.ClientURL)
	idA := clusterOf(t, cli)
	waitStoreRevision(t, srv.url, putKeys(t, cli, "a", 50), time.Minute)
	rec, ok := clusterRecord(t, srv.url)
	if !ok || rec.ClusterID != idA || len(rec.Previous) != 0 {
		t.Fatalf("the store records %+v (ok %v), want cluster %s", rec, ok, idA)
	}
	var st idStatus
	newAPI(t, "http://"+addrA).call(http.MethodGet, "/v1/status", "", &st)
	if st.Etcd.ClusterID != idA || st.Backups.StoreCluster != idA || st.Backups.ClusterMismatch != "" {
		t.Fatalf("status of cluster A: %+v", st)
	}
	cli.Close()
	p.stop()
	if id, err := datadir.ReadIDs(a.DataDir, ""); err != nil || id.ClusterID != idA {
		t.Fatalf("data dir of A: cluster %q (%v), etcd said %s", id.ClusterID, err, idA)
	}

	// Cluster B, with data of its own.
	b := newMember(t, filepath.Join(dir, "b"))
	bFlags := append(b.etcdFlags(), "--initial-cluster-token=cluster-b")
	p = start(t, runWith(b.DataDir, "file://"+filepath.Join(dir, "b-store"), bFlags, "--full-snapshot-schedule", "@daily"))
	cli = client(t, b.ClientURL)
	idB := clusterOf(t, cli)
	if idB == idA {
		t.Fatalf("both clusters have ID %s", idA)
	}
	putKeys(t, cli, "b", 50)
	cli.Close()
	p.stop()

	before := storeState(t, srv.url)
	srv.stop()
	addrB := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	// At debug level the runner logs each full snapshot it skips, and why.
	p = start(t, runWith(b.DataDir, srv.url, bFlags, "--full-snapshot-schedule", "@every 1s", "--delta-snapshot-period", "1s",
		"--listen-api", addrB, "--log-level", "debug"))
	p.waitLine("the store cannot be read; starting on the valid data dir", 2*time.Minute)
	cli = client(t, b.ClientURL)
	srv.restart()
	api := newAPI(t, "http://"+addrB)
	waitFor(t, "the status to report the store of another cluster", 2*time.Minute, func() bool {
		api.call(http.MethodGet, "/v1/status", "", &st)
		return st.Backups.ClusterMismatch != ""
	})
	for _, s := range []string{idA, idB, "no backups", "own store"} {
		if !strings.Contains(st.Backups.ClusterMismatch, s) {
			t.Errorf("status: cluster_mismatch %q lacks %q", st.Backups.ClusterMismatch, s)
		}
	}
	if st.Backups.StoreCluster != idA || st.LastError == nil || !strings.Contains(st.LastError.Message, idA) {
		t.Errorf("status: store_cluster %q (want %s), last_error %+v", st.Backups.StoreCluster, idA, st.LastError)
	}
	var ready apiReady
	if code := api.call(http.MethodGet, "/readyz", "", &ready); code != http.StatusServiceUnavailable ||
		!strings.Contains(ready.Failed, "backup: ") || !strings.Contains(ready.Failed, idA) {
		t.Errorf("readyz: %d %+v, want the backup check failed naming cluster %s", code, ready, idA)
	}
	if v := value(t, scrape(t, "http://"+addrB), "etcdbr_store_cluster_mismatch"); v != 1 {
		t.Errorf("etcdbr_store_cluster_mismatch = %v, want 1", v)
	}
	var refused apiErr
	if code := api.call(http.MethodPost, "/v1/snapshots/full", "", &refused); code != http.StatusConflict || !strings.Contains(refused.Error, idA) {
		t.Errorf("a full snapshot on request: %d %+v, want 409 naming cluster %s", code, refused, idA)
	}
	refused = apiErr{}
	if code := api.call(http.MethodPost, "/v1/snapshots/delta", "", &refused); code != http.StatusConflict || !strings.Contains(refused.Error, idA) {
		t.Errorf("deltas on request: %d %+v, want 409 naming cluster %s", code, refused, idA)
	}
	// Writes, then several full snapshot attempts that read the store's record again and are
	// refused (the delta taker waits for the same claim). The first refusal seen may be of an
	// attempt begun before the writes ended; the ones after it began after them.
	putKeys(t, cli, "b-after", 50)
	skipped := p.count("full snapshot skipped", idA)
	waitFor(t, "three more full snapshot attempts refused", time.Minute, func() bool {
		return p.count("full snapshot skipped", idA) >= skipped+3
	})
	if after := storeState(t, srv.url); after != before {
		t.Fatalf("cluster B changed the store of cluster A:\nbefore:\n%s\nafter:\n%s", before, after)
	}

	// The sidecar of cluster B refuses the store likewise.
	code, out := runToExit(t, []string{"snapshot", "--once", "--endpoints", b.ClientURL, "--store", srv.url})
	if code != 1 || !strings.Contains(out, idA) || !strings.Contains(out, idB) || !strings.Contains(out, "own store") {
		t.Errorf("etcdbr snapshot of cluster B into A's store: exit %d, want 1 naming both clusters\n%s", code, out)
	}
	cli.Close()
	p.stop()
	if n := strings.Count(p.Output(), "refusing to back up into the store of another cluster"); n != 1 {
		t.Errorf("the refusal was logged %d times, want once", n)
	}
	if after := storeState(t, srv.url); after != before {
		t.Fatalf("cluster B changed the store of cluster A:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// TestClusterRecordRestoreAnotherCluster: a restore whose etcd flags create another cluster than
// the one the store belongs to (another token, other peer URLs) is refused, by `etcdbr
// restore` and by `etcdbr run`, with nothing changed; with --force-restore it restores
// exactly, the store then belongs to the new cluster (the old one in its history), and the
// new cluster's backups continue the store. --keep-store-cluster restores a copy and leaves
// the record as it is. The store's own member whose peer URLs moved is restored and followed
// without a flag. Cluster A turns the takeover by a new machine off (--store-takeover-after
// 0), so that `etcdbr run` with no data dir is refused however long A has been gone
// (TestStoreTakeoverNewMachine: the takeover).
func TestClusterRecordRestoreAnotherCluster(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	store := "file://" + filepath.Join(dir, "store")

	a := newMember(t, filepath.Join(dir, "a"))
	p := start(t, a.runArgs(store, "--full-snapshot-schedule", "@daily", "--delta-snapshot-period", "1s", "--store-takeover-after", "0"))
	cli := client(t, a.ClientURL)
	idA := clusterOf(t, cli)
	rev, err := etcdtest.Workload{Seed: 11, Keys: 2000, Overwrites: 200, Deletes: 100, LeasedKeys: 20}.Run(ctx, cli)
	if err != nil {
		t.Fatal(err)
	}
	want, err := etcdtest.Take(ctx, cli, 0)
	if err != nil {
		t.Fatal(err)
	}
	waitStoreRevision(t, store, rev, time.Minute)
	waitFor(t, "A's liveness record", time.Minute, func() bool { _, ok := aliveRecord(t, store, idA); return ok })
	cli.Close()
	p.stop()
	before := storeState(t, store)
	if rec, ok := clusterRecord(t, store); !ok || rec.ClusterID != idA {
		t.Fatalf("the store records %+v, want cluster %s", rec, idA)
	}

	b := newMember(t, filepath.Join(dir, "b"))
	bFlags := append(b.etcdFlags(), "--initial-cluster-token=cluster-b")
	idB := configCluster(t, bFlags)
	if idB == idA {
		t.Fatalf("both configurations create cluster %s", idA)
	}
	refused := func(t *testing.T, what string, code int, out string) {
		t.Helper()
		if code != 1 {
			t.Fatalf("%s: exit %d, want 1\n%s", what, code, out)
		}
		for _, s := range []string{idA, idB, "--initial-cluster-token", "--force-restore", "nothing was changed"} {
			if !strings.Contains(out, s) {
				t.Errorf("%s: the error lacks %q\n%s", what, s, out)
			}
		}
		if after := storeState(t, store); after != before {
			t.Fatalf("%s changed the store:\nbefore:\n%s\nafter:\n%s", what, before, after)
		}
		if leftovers, _ := filepath.Glob(b.DataDir + ".*"); len(leftovers) > 0 {
			t.Fatalf("%s left files beside the data dir: %v", what, leftovers)
		}
	}

	t.Log("refused without --force-restore")
	code, out := runToExit(t, restoreWith(b.DataDir, store, bFlags))
	refused(t, "etcdbr restore", code, out)
	if !strings.Contains(out, "--keep-store-cluster") {
		t.Errorf("etcdbr restore: the error does not offer --keep-store-cluster\n%s", out)
	}
	if _, err := os.Stat(b.DataDir); !os.IsNotExist(err) {
		t.Fatalf("etcdbr restore created the data dir (%v)", err)
	}
	code, out = runToExit(t, runWith(b.DataDir, store, bFlags))
	refused(t, "etcdbr run on no data dir", code, out)
	if !strings.Contains(out, "cluster "+idA+" turned automatic takeover of its store off") {
		t.Errorf("etcdbr run on no data dir: the refusal does not say that cluster A turned the takeover off\n%s", out)
	}
	if _, err := os.Stat(b.DataDir); !os.IsNotExist(err) {
		t.Fatalf("etcdbr run created the data dir (%v)", err)
	}
	// A corrupt data dir whose cluster cannot be read (no WAL): refused, and left as it is.
	copyTree(t, a.DataDir, b.DataDir)
	if err := os.RemoveAll(filepath.Join(b.DataDir, "member", "wal")); err != nil {
		t.Fatal(err)
	}
	sum := treeSum(t, b.DataDir)
	code, out = runToExit(t, runWith(b.DataDir, store, bFlags))
	refused(t, "etcdbr run on a corrupt data dir", code, out)
	if treeSum(t, b.DataDir) != sum {
		t.Fatal("etcdbr run changed the corrupt data dir it refused to restore")
	}
	if err := os.RemoveAll(b.DataDir); err != nil { // the test's damaged copy
		t.Fatal(err)
	}

	t.Log("--force-restore")
	code, out = runToExit(t, restoreWith(b.DataDir, store, bFlags, "--force-restore"))
	if code != 0 || !strings.Contains(out, fmt.Sprintf("the store now belongs to cluster %s (it belonged to cluster %s)", idB, idA)) {
		t.Fatalf("etcdbr restore --force-restore: exit %d\n%s", code, out)
	}
	if id, err := datadir.ReadIDs(b.DataDir, ""); err != nil || id.ClusterID != idB {
		t.Fatalf("the restored data dir is cluster %q (%v), want %s", id.ClusterID, err, idB)
	}
	rec, _ := clusterRecord(t, store)
	if rec.ClusterID != idB || len(rec.Previous) != 1 || rec.Previous[0].ClusterID != idA || rec.Previous[0].Replaced.IsZero() {
		t.Fatalf("the store records %+v, want cluster %s after %s", rec, idB, idA)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p = start(t, runWith(b.DataDir, store, bFlags, "--full-snapshot-schedule", "@daily", "--delta-snapshot-period", "1s", "--listen-api", addr))
	cli = client(t, b.ClientURL)
	if id := clusterOf(t, cli); id != idB {
		t.Fatalf("the restored member serves cluster %s, want %s", id, idB)
	}
	got, err := etcdtest.Take(ctx, cli, 0)
	if err != nil {
		t.Fatal(err)
	}
	// An offline restore cannot know what the member served after the store's newest
	// revision: a new history.
	if diff := etcdtest.Diff(newHistory(want, want.Revision), got, 20); len(diff) > 0 {
		t.Fatalf("restored data differs from the source:\n%s", strings.Join(diff, "\n"))
	}
	// Its backups continue the store.
	waitStoreRevision(t, store, putKeys(t, cli, "b", 100), time.Minute)
	var st idStatus
	newAPI(t, "http://"+addr).call(http.MethodGet, "/v1/status", "", &st)
	if st.Backups.StoreCluster != idB || st.Backups.ClusterMismatch != "" {
		t.Fatalf("status of the restored member: %+v", st)
	}
	wantB, err := etcdtest.Take(ctx, cli, 0)
	if err != nil {
		t.Fatal(err)
	}
	cli.Close()
	p.stop()
	before = storeState(t, store)

	t.Log("--keep-store-cluster")
	c := newMember(t, filepath.Join(dir, "c"))
	cFlags := append(c.etcdFlags(), "--initial-cluster-token=cluster-c")
	code, out = runToExit(t, restoreWith(c.DataDir, store, cFlags, "--keep-store-cluster"))
	if code != 0 {
		t.Fatalf("etcdbr restore --keep-store-cluster: exit %d\n%s", code, out)
	}
	if id, err := datadir.ReadIDs(c.DataDir, ""); err != nil || id.ClusterID != configCluster(t, cFlags) {
		t.Fatalf("the copy is cluster %q (%v), want %s", id.ClusterID, err, configCluster(t, cFlags))
	}
	if after := storeState(t, store); after != before {
		t.Fatalf("--keep-store-cluster changed the store:\nbefore:\n%s\nafter:\n%s", before, after)
	}

	t.Log("the store's own member, whose peer URLs moved")
	d := newMember(t, filepath.Join(dir, "d"))
	dFlags := append(d.etcdFlags(), "--initial-cluster-token=cluster-b")
	idD := configCluster(t, dFlags)
	copyTree(t, b.DataDir, d.DataDir)
	if err := os.Truncate(filepath.Join(d.DataDir, "member", "snap", "db"), 8192); err != nil {
		t.Fatal(err)
	}
	p = start(t, runWith(d.DataDir, store, dFlags, "--full-snapshot-schedule", "@daily", "--delta-snapshot-period", "1s"))
	cli = client(t, d.ClientURL)
	if id := clusterOf(t, cli); id != idD || idD == idB {
		t.Fatalf("the restored member serves cluster %s, want %s (not %s)", id, idD, idB)
	}
	got, err = etcdtest.Take(ctx, cli, 0)
	if err != nil {
		t.Fatal(err)
	}
	if diff := etcdtest.Diff(newHistory(wantB, wantB.Revision), got, 20); len(diff) > 0 {
		t.Fatalf("restored data differs from the source:\n%s", strings.Join(diff, "\n"))
	}
	rec, _ = clusterRecord(t, store)
	if rec.ClusterID != idD || len(rec.Previous) != 2 || rec.Previous[0].ClusterID != idB || rec.Previous[1].ClusterID != idA {
		t.Fatalf("the store records %+v, want cluster %s after %s and %s", rec, idD, idB, idA)
	}
	waitStoreRevision(t, store, putKeys(t, cli, "d", 20), time.Minute)
	cli.Close()
	p.stop()
}
