package testsuite

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdbr/etcdbr/internal/etcdtest"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

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

	out := c.clusterRestore()
	if !strings.Contains(out, "done") {
		t.Fatalf("etcdbr cluster restore did not report the end:\n%s", out)
	}
	restoredRev := c.servePoint(want)
	if restoredRev <= rev+catalog.DefaultUnbackedRevisions {
		t.Errorf("restored revision %d: want it raised past %d (the store's newest plus the unbacked bound)", restoredRev, rev+catalog.DefaultUnbackedRevisions)
	}
	st, err := c.memberStatus(0)
	if err != nil {
		t.Fatal(err)
	}
	if st.Header.ClusterId == oldStatus.Header.ClusterId {
		t.Errorf("the restored cluster has the old cluster ID %x", st.Header.ClusterId)
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
	if id, _, err := s.ClusterID(ctx); err != nil || id != fmt.Sprintf("%x", st.Header.ClusterId) {
		t.Errorf("the store records cluster %s (%v), want the restored %x", id, err, st.Header.ClusterId)
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
