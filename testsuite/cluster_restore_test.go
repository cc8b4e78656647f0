package testsuite

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdbr/etcdbr/internal/etcdtest"
	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// restoreStatus is GET /v1/status as far as the cluster restore tests read it.
type restoreStatus struct {
	Cluster *struct {
		Quorum       *bool  `json:"quorum"`
		QuorumRepair string `json:"quorum_repair"`
	} `json:"cluster"`
	ClusterRestore *struct {
		Intent  catalog.Intent           `json:"intent"`
		Members []catalog.MemberProgress `json:"members"`
	} `json:"cluster_restore"`
}

// apiGet reads path from the API at addr as JSON into v (when not nil) and returns the
// status code and the body.
func apiGet(t testing.TB, addr, path string, v any) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if v != nil {
		if err := json.Unmarshal(body, v); err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
	}
	return resp.StatusCode, string(body)
}

// waitStatus waits until member i's GET /v1/status satisfies ok.
func (c *cluster) waitStatus(i int, what string, ok func(restoreStatus) bool) restoreStatus {
	c.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var st restoreStatus
		apiGet(c.t, c.apis[i], "/v1/status", &st)
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("member %s's status does not show %s after 2 minutes", c.members[i].Name, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// clusterRestore runs `etcdbr cluster restore` against the cluster's store with args, to
// its end, and returns its output; it fails the test unless it exits 0.
func (c *cluster) clusterRestore(args ...string) string {
	c.t.Helper()
	p := start(c.t, append([]string{"cluster", "restore", "--store", c.store}, args...))
	if code := p.wait(5 * time.Minute); code != 0 {
		c.t.Fatalf("etcdbr cluster restore exited %d:\n%s", code, p.Output())
	}
	return p.Output()
}

// servePoint checks that every member serves want (every key with its value, create and mod
// revision, version and lease; every lease) and the same HashKV at the same revision, and
// returns that revision.
func (c *cluster) servePoint(want etcdtest.Dump) int64 {
	c.t.Helper()
	ctx := context.Background()
	var rev int64
	var hash uint32
	for i := range c.members {
		cli := c.client(i)
		got, err := etcdtest.Take(ctx, cli, 0)
		if err != nil {
			c.t.Fatal(err)
		}
		if rev == 0 {
			rev = got.Revision
		}
		got.Revision = want.Revision // the restored revision is bumped: compared below
		if d := etcdtest.Diff(want, got, 10); len(d) > 0 {
			c.t.Errorf("member %s serves other data than the restore point:\n%s", c.members[i].Name, strings.Join(d, "\n"))
		}
	}
	for i := range c.members {
		h, at, err := c.hashKV(i, rev)
		if err != nil {
			c.t.Fatal(err)
		}
		if i == 0 {
			hash = h
		} else if h != hash || at < rev {
			c.t.Errorf("member %s: HashKV %d at %d, member %s: %d at %d", c.members[i].Name, h, at, c.members[0].Name, hash, rev)
		}
	}
	return rev
}

// Two of three members lose their data dirs (quorum lost); `etcdbr cluster restore` brings
// all three back on the store's newest point: the same data, the same HashKV at the same
// revision, a new cluster, and a watcher that was caught up is told "compacted".
func TestClusterRestoreAfterQuorumLoss(t *testing.T) {
	t.Parallel()
	store := "file://" + t.TempDir() + "/store"
	c := newCluster(t, 3, store, "--delta-snapshot-period", "1s", "--cluster-restore-poll", "500ms")
	c.startAll()
	leader := c.leader(time.Minute)
	ctx := context.Background()
	cli := c.clientAll()
	rev, err := etcdtest.Workload{Seed: 7, Keys: 300, Overwrites: 200, Deletes: 40, LeasedKeys: 30}.Run(ctx, cli)
	if err != nil {
		t.Fatal(err)
	}
	waitStoreRevision(t, store, rev, 2*time.Minute)
	want, err := etcdtest.Take(ctx, c.client(leader), rev)
	if err != nil {
		t.Fatal(err)
	}
	oldStatus, err := c.memberStatus(leader)
	if err != nil {
		t.Fatal(err)
	}

	// A watcher caught up at rev, on every member's endpoint.
	wcli := c.clientAll()
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	watch := wcli.Watch(wctx, "", clientv3.WithFromKey(), clientv3.WithRev(rev+1))

	// The two followers lose their disks; the leader is left without a quorum.
	for i := range c.members {
		if i == leader {
			continue
		}
		c.kill(i)
		c.wipe(i)
		c.start(i, c.args(i, "new"))
	}
	for i := range c.members {
		if i != leader {
			c.procs[i].waitLine("step=wait", 2*time.Minute)
		}
	}
	// The member left says that the quorum is lost, and how to repair it.
	repair := "etcdbr cluster restore --store " + store
	st := c.waitStatus(leader, "the quorum lost", func(st restoreStatus) bool {
		return st.Cluster != nil && st.Cluster.Quorum != nil && !*st.Cluster.Quorum
	})
	if st.Cluster.QuorumRepair != repair {
		t.Errorf("status: quorum_repair %q, want %q", st.Cluster.QuorumRepair, repair)
	}
	if code, body := apiGet(t, c.apis[leader], "/readyz", nil); code != http.StatusServiceUnavailable || !strings.Contains(body, repair) {
		t.Errorf("/readyz without quorum: %d %s; want 503 naming %q", code, body, repair)
	}
	c.procs[leader].waitLine("repair=\"etcdbr cluster restore --store", time.Minute)

	out := c.clusterRestore()
	if !strings.Contains(out, "done") {
		t.Fatalf("etcdbr cluster restore did not report the end:\n%s", out)
	}
	restoredRev := c.servePoint(want)
	if restoredRev <= rev+catalog.DefaultUnbackedRevisions {
		t.Errorf("restored revision %d: want it raised past %d (the store's newest plus the unbacked bound)", restoredRev, rev+catalog.DefaultUnbackedRevisions)
	}
	ns, err := c.memberStatus(0)
	if err != nil {
		t.Fatal(err)
	}
	if ns.Header.ClusterId == oldStatus.Header.ClusterId {
		t.Errorf("the restored cluster has the old cluster ID %x", ns.Header.ClusterId)
	}
	for i := range c.members {
		if n := c.procs[i].count("cluster restore: this member's data dir is restored"); n != 1 {
			t.Errorf("member %s restored %d times, want 1", c.members[i].Name, n)
		}
	}
	// The store has a full snapshot of the restored cluster, and records it.
	s := openStore(t, store)
	defer s.Close()
	full, ok, err := s.Latest(ctx, catalog.KindFull)
	if err != nil || !ok || full.Revision < restoredRev {
		t.Errorf("newest full snapshot %v (%v, %v): want one at %d or later", full.Key, ok, err, restoredRev)
	}
	if id, _, err := s.ClusterID(ctx); err != nil || id != fmt.Sprintf("%x", ns.Header.ClusterId) {
		t.Errorf("the store records cluster %s (%v), want the restored %x", id, err, ns.Header.ClusterId)
	}
	if _, active, err := s.ActiveIntent(ctx); err != nil || active {
		t.Errorf("an intent is still active (%v) after the command reported its end", err)
	}

	// The watcher resumes at rev+1, before the restored cluster's compacted revision.
	deadline := time.After(2 * time.Minute)
	for compacted := false; !compacted; {
		select {
		case resp, open := <-watch:
			if !open {
				t.Fatal("the watch channel closed without a compaction")
			}
			if errors.Is(resp.Err(), rpctypes.ErrCompacted) {
				compacted = true
				if resp.CompactRevision <= rev {
					t.Errorf("compacted at %d, want past %d", resp.CompactRevision, rev)
				}
			} else if len(resp.Events) > 0 {
				t.Errorf("the watcher got %d events past the restore point (first at %d)", len(resp.Events), resp.Events[0].Kv.ModRevision)
			}
		case <-deadline:
			t.Fatal("the caught-up watcher was not told 'compacted' within 2 minutes")
		}
	}
}

// write is one write of a seqWriter: acknowledged (by which cluster, at which revision) or
// not.
type write struct {
	key     string
	ok      bool
	cluster uint64
	rev     int64
}

// seqWriter puts keys w/<n>, one after the other, and records every outcome in order.
type seqWriter struct {
	mu     sync.Mutex
	writes []write
	stop   func()
}

func startSeqWriter(t *testing.T, cli *clientv3.Client) *seqWriter {
	w := &seqWriter{}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ctx.Err() == nil; i++ {
			key := fmt.Sprintf("w/%06d", i)
			pctx, pcancel := context.WithTimeout(ctx, 3*time.Second)
			resp, err := cli.Put(pctx, key, "v")
			pcancel()
			if ctx.Err() != nil {
				return // cut off by the stop: the outcome is unknown
			}
			wr := write{key: key, ok: err == nil}
			if err == nil {
				wr.cluster, wr.rev = resp.Header.ClusterId, resp.Header.Revision
			}
			w.mu.Lock()
			w.writes = append(w.writes, wr)
			w.mu.Unlock()
			if err != nil {
				select {
				case <-ctx.Done():
				case <-time.After(50 * time.Millisecond):
				}
			}
		}
	})
	w.stop = func() { cancel(); wg.Wait() }
	t.Cleanup(w.stop)
	return w
}

func (w *seqWriter) results() []write {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]write(nil), w.writes...)
}

// waitAcked waits until the writer has n more acknowledged writes than ack.
func (w *seqWriter) waitAcked(t *testing.T, cluster uint64, n int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		got := 0
		for _, wr := range w.results() {
			if wr.ok && wr.cluster == cluster {
				got++
			}
		}
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d writes acknowledged by cluster %x after 2 minutes, want %d", got, cluster, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A healthy cluster under write load goes back to an earlier revision: every member serves
// exactly the data of that revision (the revision raised and compacted), the old cluster
// accepts no write once frozen (before the intent is recorded) nor once the restored one
// has, and every write the restored cluster acknowledged is kept. An intent abandoned
// leaves the cluster accepting writes again.
func TestClusterRestoreToEarlierRevisionUnderLoad(t *testing.T) {
	t.Parallel()
	store := "file://" + t.TempDir() + "/store"
	c := newCluster(t, 3, store, "--delta-snapshot-period", "1s", "--cluster-restore-poll", "500ms")
	c.startAll()
	leader := c.leader(time.Minute)
	ctx := context.Background()
	cli := c.clientAll()
	target, err := etcdtest.Workload{Seed: 11, Keys: 200, Overwrites: 100, Deletes: 20, LeasedKeys: 20}.Run(ctx, cli)
	if err != nil {
		t.Fatal(err)
	}
	want, err := etcdtest.Take(ctx, c.client(leader), target)
	if err != nil {
		t.Fatal(err)
	}
	old, err := c.memberStatus(leader)
	if err != nil {
		t.Fatal(err)
	}
	w := startSeqWriter(t, cli)
	w.waitAcked(t, old.Header.ClusterId, 50) // writes after the target, which the restore takes back
	waitStoreRevision(t, store, target+50, 2*time.Minute)

	// The API refuses a cluster restore from a client that is not authenticated (this API
	// runs on loopback without credentials).
	resp, err := http.Post("http://"+c.apis[0]+"/v1/cluster-restore", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("POST /v1/cluster-restore without credentials: %s, want 403", resp.Status)
	}
	// An intent past its deadline before any member began is abandoned, and the cluster
	// goes on as it was: the freeze the command raised is lifted.
	p := start(t, []string{"cluster", "restore", "--store", store, "--to-revision", fmt.Sprint(target), "--deadline", "1ns",
		"--endpoints", c.clientURLs()})
	if code := p.wait(2 * time.Minute); code == 0 || !strings.Contains(p.Output(), "abandoned") || !strings.Contains(p.Output(), "cluster frozen at revision") {
		t.Fatalf("an intent past its deadline: exit %d, want the cluster frozen and the intent abandoned:\n%s", code, p.Output())
	}
	w.waitAcked(t, old.Header.ClusterId, len(w.results())+20)

	// The restore, the cluster frozen first; a second intent while it runs is refused.
	out := c.clusterRestore("--to-revision", fmt.Sprint(target), "--no-wait", "--endpoints", c.clientURLs())
	var frozen int64
	if _, err := fmt.Sscanf(out[strings.Index(out, "cluster frozen at revision"):], "cluster frozen at revision %d", &frozen); err != nil {
		t.Fatalf("the command did not say where it froze the cluster (%v):\n%s", err, out)
	}
	id := strings.Fields(out[strings.Index(out, "cluster restore ")+len("cluster restore "):])[0]
	code, second := runToExit(t, []string{"cluster", "restore", "--store", store})
	if code == 0 || !strings.Contains(second, "already running") {
		t.Errorf("a second intent while one runs: exit %d, want it refused:\n%s", code, second)
	}
	s := openStore(t, store)
	defer s.Close()
	end := waitIntentEnd(t, s, id, 5*time.Minute)
	if end.Outcome != catalog.OutcomeDone {
		t.Fatalf("cluster restore %s ended %s: %s", id, end.Outcome, end.Reason)
	}
	st, err := c.memberStatus(0)
	if err != nil {
		t.Fatal(err)
	}
	restored := st.Header.ClusterId
	if restored == old.Header.ClusterId {
		t.Fatalf("the restored cluster has the old cluster ID %x", restored)
	}
	w.waitAcked(t, restored, 20)
	w.stop()

	// The writes in order: the old cluster's acknowledgements, then the restored cluster's
	// (with refusals between while the members restore); never an old one after a restored
	// one: no member served old and restored data at once.
	writes := w.results()
	firstNew, lastOld := -1, -1
	for i, wr := range writes {
		switch {
		case !wr.ok:
		case wr.cluster == restored:
			if firstNew < 0 {
				firstNew = i
			}
		case wr.cluster == old.Header.ClusterId:
			lastOld = i
		default:
			t.Errorf("write %s acknowledged by cluster %x, neither the old (%x) nor the restored one (%x)", wr.key, wr.cluster, old.Header.ClusterId, restored)
		}
	}
	if lastOld > firstNew {
		t.Errorf("write %d was acknowledged by the old cluster after write %d by the restored one", lastOld, firstNew)
	}
	// No write was accepted after the freeze, which came before the intent: every write the
	// old cluster acknowledged is at or below the frozen revision.
	for _, wr := range writes {
		if wr.ok && wr.cluster == old.Header.ClusterId && wr.rev > frozen {
			t.Errorf("write %s acknowledged by the old cluster at revision %d, after the freeze at %d", wr.key, wr.rev, frozen)
		}
	}
	if firstNew < 0 {
		t.Fatal("the restored cluster acknowledged no write")
	}

	// Every member serves the target's data and, beside it, exactly the writes the restored
	// cluster acknowledged.
	var firstNewRev int64
	for _, wr := range writes[firstNew:] {
		if wr.ok && (firstNewRev == 0 || wr.rev < firstNewRev) {
			firstNewRev = wr.rev
		}
	}
	for i := range c.members {
		got, err := etcdtest.Take(ctx, c.client(i), 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, wr := range writes[firstNew:] {
			if wr.ok {
				if kv, ok := got.KVs[wr.key]; !ok || kv.ModRevision != wr.rev {
					t.Errorf("member %s lost write %s acknowledged at %d by the restored cluster", c.members[i].Name, wr.key, wr.rev)
				}
			}
		}
		for k, kv := range got.KVs {
			if kv.CreateRevision >= firstNewRev && strings.HasPrefix(k, "w/") {
				delete(got.KVs, k)
			}
		}
		got.Revision = want.Revision
		if d := etcdtest.Diff(want, got, 10); len(d) > 0 {
			t.Errorf("member %s does not serve revision %d's data:\n%s", c.members[i].Name, target, strings.Join(d, "\n"))
		}
	}
	if firstNewRev <= target+catalog.DefaultUnbackedRevisions {
		t.Errorf("the restored cluster's first write is at %d: want past %d (the revision raised)", firstNewRev, target+catalog.DefaultUnbackedRevisions)
	}
	c.sameData(nil)
}

// Members killed in the middle of a cluster restore (SIGKILL once etcd stopped and before
// the rebuild, and once the rebuilt data dir is in place and before etcd starts) and started
// again finish it with the others: every member serves the restore point.
func TestClusterRestoreMemberKilledMidway(t *testing.T) {
	t.Parallel()
	store := "file://" + t.TempDir() + "/store"
	c := newCluster(t, 3, store, "--delta-snapshot-period", "1s", "--cluster-restore-poll", "500ms")
	for i, fp := range []string{"", "cluster-restore-before-rebuild", "cluster-restore-after-rebuild"} {
		c.procs[i] = start(t, c.args(i, "new"), "ETCDBR_FAILPOINT="+fp)
	}
	for i := range c.members {
		c.client(i)
	}
	leader := c.leader(time.Minute)
	ctx := context.Background()
	rev, err := etcdtest.Workload{Seed: 5, Keys: 200, Overwrites: 50, LeasedKeys: 10}.Run(ctx, c.clientAll())
	if err != nil {
		t.Fatal(err)
	}
	waitStoreRevision(t, store, rev, 2*time.Minute)
	want, err := etcdtest.Take(ctx, c.client(leader), rev)
	if err != nil {
		t.Fatal(err)
	}

	cmd := start(t, []string{"cluster", "restore", "--store", store})
	for i := 1; i < 3; i++ {
		if code := c.procs[i].wait(3 * time.Minute); code == 0 {
			t.Fatalf("member %s exited 0, want killed at its failpoint", c.members[i].Name)
		}
	}
	// While they are down the restore cannot end: the first member's status shows it, member
	// by member.
	c.waitStatus(0, "the cluster restore with both killed members restoring or restored", func(st restoreStatus) bool {
		if st.ClusterRestore == nil {
			return false
		}
		phases := map[string]catalog.MemberPhase{}
		for _, p := range st.ClusterRestore.Members {
			phases[p.Member] = p.Phase
		}
		return phases["m1"] == catalog.PhaseRestoring && phases["m2"] == catalog.PhaseRestored
	})
	for i := 1; i < 3; i++ {
		c.start(i, c.args(i, "new"))
	}
	if code := cmd.wait(5 * time.Minute); code != 0 {
		t.Fatalf("etcdbr cluster restore exited %d:\n%s", code, cmd.Output())
	}
	c.servePoint(want)
	// The member killed before its rebuild rebuilt after the restart; the one killed after
	// it started on the rebuilt data dir.
	if n := c.procs[1].count("cluster restore: rebuilding this member's data dir"); n != 1 {
		t.Errorf("member %s rebuilt %d times after its restart, want 1", c.members[1].Name, n)
	}
	if n := c.procs[2].count("cluster restore: rebuilding this member's data dir"); n != 0 {
		t.Errorf("member %s rebuilt %d times after its restart, want 0 (its data dir was the restored one)", c.members[2].Name, n)
	}
}

// With --auto-restore-on-quorum-loss-after, a member that has seen the quorum lost that long,
// with nothing reaching the store meanwhile, records the cluster restore itself.
func TestClusterRestoreAutomaticOnQuorumLoss(t *testing.T) {
	t.Parallel()
	store := "file://" + t.TempDir() + "/store"
	c := newCluster(t, 3, store, "--delta-snapshot-period", "1s", "--cluster-restore-poll", "500ms",
		"--auto-restore-on-quorum-loss-after", "3s")
	c.startAll()
	leader := c.leader(time.Minute)
	ctx := context.Background()
	rev, err := etcdtest.Workload{Seed: 3, Keys: 100, Overwrites: 20, LeasedKeys: 5}.Run(ctx, c.clientAll())
	if err != nil {
		t.Fatal(err)
	}
	waitStoreRevision(t, store, rev, 2*time.Minute)
	want, err := etcdtest.Take(ctx, c.client(leader), rev)
	if err != nil {
		t.Fatal(err)
	}
	for i := range c.members {
		if i != leader {
			c.kill(i)
			c.wipe(i)
			c.start(i, c.args(i, "new"))
		}
	}
	c.procs[leader].waitLine("automatic cluster restore recorded", 3*time.Minute)
	out := c.procs[leader].Output()
	line := out[strings.Index(out, "automatic cluster restore recorded"):]
	id := strings.Fields(line[strings.Index(line, "intent=")+len("intent="):])[0]
	s := openStore(t, store)
	defer s.Close()
	end := waitIntentEnd(t, s, id, 5*time.Minute)
	if end.Outcome != catalog.OutcomeDone {
		t.Fatalf("the automatic cluster restore %s ended %s: %s", id, end.Outcome, end.Reason)
	}
	c.servePoint(want)
}

// A member down for the whole cluster restore: the others restore and serve without it, the
// intent is abandoned at its deadline, and when the member comes back with its old data dir
// it moves the dir aside (kept) and joins the restored cluster with no data.
func TestClusterRestoreMemberDownThroughout(t *testing.T) {
	t.Parallel()
	store := "file://" + t.TempDir() + "/store"
	c := newCluster(t, 3, store, "--delta-snapshot-period", "1s", "--cluster-restore-poll", "500ms")
	c.startAll()
	leader := c.leader(time.Minute)
	ctx := context.Background()
	rev, err := etcdtest.Workload{Seed: 5, Keys: 100, Overwrites: 20, LeasedKeys: 5}.Run(ctx, c.clientAll())
	if err != nil {
		t.Fatal(err)
	}
	waitStoreRevision(t, store, rev, 2*time.Minute)
	want, err := etcdtest.Take(ctx, c.client(leader), rev)
	if err != nil {
		t.Fatal(err)
	}
	down := (leader + 1) % 3
	c.kill(down)

	out := c.clusterRestore("--deadline", "40s", "--no-wait")
	id := strings.Fields(out[strings.Index(out, "cluster restore ")+len("cluster restore "):])[0]
	s := openStore(t, store)
	defer s.Close()
	end := waitIntentEnd(t, s, id, 5*time.Minute)
	if end.Outcome != catalog.OutcomeAbandoned || !strings.Contains(end.Reason, c.members[down].Name) {
		t.Fatalf("the intent ended %s (%s), want abandoned naming %s", end.Outcome, end.Reason, c.members[down].Name)
	}
	ps, err := s.IntentProgress(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	serving := 0
	for _, p := range ps {
		if p.Phase == catalog.PhaseServing {
			serving++
		}
	}
	if serving != 2 {
		t.Fatalf("progress %+v: want the two members that ran serving", ps)
	}

	c.start(down, c.args(down, "new"))
	c.procs[down].waitLine("moved aside (kept)", 2*time.Minute)
	c.servePoint(want)
}

// waitIntentEnd waits, at most within, until the store records the end of the cluster
// restore id, and returns that end.
func waitIntentEnd(t *testing.T, s *snapstore.Store, id string, within time.Duration) catalog.IntentEnd {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		end, ended, err := s.IntentEnd(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if ended {
			return end
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster restore %s has not ended after %s", id, within)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
