package testsuite

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdbr/etcdbr/supervisor"
)

// A member whose data dir was lost, or whose db is corrupt, comes back through etcd's learner
// path on its own, under write load, the leader included: each comes back as a learner, is
// promoted, and then every member holds the same data at the same revision; no acknowledged
// write is lost. Every restart gives etcd --initial-cluster-state=new, as a StatefulSet's
// members have: a member with no data never founds a cluster of its own while its peers run.
//
// The follower is first killed right after its learner entry was added and before its etcd
// started (a failpoint): the leader's etcdbr removes the learner that never starts after
// --learner-timeout, and the member, started again, finishes the job.
func TestClusterReplacesMembersThroughLearners(t *testing.T) {
	t.Parallel()
	store := "file://" + t.TempDir() + "/store"
	c := newCluster(t, 3, store, "--delta-snapshot-period", "1s", "--learner-timeout", "8s")
	c.startAll()
	leader := c.leader(time.Minute)
	clusterID := c.clusterID(leader)
	w := startAckWriter(t, c.clientAll())

	// A follower's data dir lost; its first restart dies once its learner was added.
	f := (leader + 1) % 3
	old := c.idOf(f)
	c.kill(f)
	c.wipe(f)
	p := c.restartWith(f, c.args(f, "new"), "ETCDBR_FAILPOINT="+supervisor.FailpointBeforeJoin)
	p.wait(time.Minute)
	if st := p.cmd.ProcessState; st.String() != "signal: killed" {
		t.Fatalf("member %s was not killed at %s: %v", c.members[f].Name, supervisor.FailpointBeforeJoin, st)
	}
	c.procs[leader].waitLine("removing a learner that makes no progress", time.Minute)
	c.rejoins(f, c.args(f, "new"), clusterID, old)
	c.sameData(w)

	// A follower's db corrupt.
	leader = c.leader(time.Minute)
	f = (leader + 2) % 3
	old = c.idOf(f)
	c.kill(f)
	if err := os.Truncate(filepath.Join(c.members[f].DataDir, "member", "snap", "db"), 8192); err != nil {
		t.Fatal(err)
	}
	c.rejoins(f, c.args(f, "new"), clusterID, old)
	if aside, _ := filepath.Glob(c.members[f].DataDir + ".etcdbr-old-*"); len(aside) != 1 {
		t.Errorf("the corrupt data dir was not kept aside: %v", aside)
	}
	c.sameData(w)

	// The leader's data dir lost.
	leader = c.leader(time.Minute)
	old = c.idOf(leader)
	c.kill(leader)
	c.wipe(leader)
	c.rejoins(leader, c.args(leader, "new"), clusterID, old)
	c.sameData(w)

	w.check(t, c.clientAll())
}

// In a cluster of five, two members wiped at once both end up voters: one learner at a
// time, the second waiting for the first to be promoted.
func TestClusterOfFiveTwoWipedAtOnce(t *testing.T) {
	t.Parallel()
	store := "file://" + t.TempDir() + "/store"
	c := newCluster(t, 5, store, "--delta-snapshot-period", "1s")
	c.startAll()
	leader := c.leader(time.Minute)
	clusterID := c.clusterID(leader)
	w := startAckWriter(t, c.clientAll())

	a, b := (leader+1)%5, (leader+3)%5
	old := map[int]uint64{a: c.idOf(a), b: c.idOf(b)}
	for _, i := range []int{a, b} {
		c.kill(i)
		c.wipe(i)
	}
	learners := c.watchLearners()
	for _, i := range []int{a, b} {
		c.start(i, c.args(i, "new"))
	}
	for _, i := range []int{a, b} {
		c.waitVoter(i, old[i], 2*time.Minute)
	}
	if n := learners(); n > 1 {
		t.Errorf("%d learners at once, want at most 1", n)
	}
	for _, i := range []int{a, b} {
		if c.procs[i].count("added this member to the cluster as a learner") == 0 {
			t.Errorf("member %s did not join as a learner", c.members[i].Name)
		}
		if id := c.clusterID(i); id != clusterID {
			t.Errorf("member %s is in cluster %x, want %x", c.members[i].Name, id, clusterID)
		}
	}
	c.sameData(w)
	w.check(t, c.clientAll())
}

// A member with no data dir founds no cluster while the store records its cluster, even
// when no peer answers: it waits, says why, and joins once a quorum of its peers is back.
// A member removed from the cluster while it runs joins again without a restart.
func TestClusterMemberWaitsForItsPeers(t *testing.T) {
	t.Parallel()
	store := "file://" + t.TempDir() + "/store"
	c := newCluster(t, 3, store, "--delta-snapshot-period", "1s")
	c.startAll()
	clusterID := c.clusterID(c.leader(time.Minute))
	old := c.idOf(0)
	cli := c.clientAll()
	for i := range 20 {
		if _, err := cli.Put(context.Background(), fmt.Sprintf("k%02d", i), "v"); err != nil {
			t.Fatal(err)
		}
	}
	s := openStore(t, store)
	deadline := time.Now().Add(time.Minute)
	for {
		if _, ok, err := s.ClusterID(context.Background()); err == nil && ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the store records no cluster after a minute")
		}
		time.Sleep(100 * time.Millisecond)
	}
	for i := range 3 {
		c.kill(i)
	}
	c.wipe(0)
	p := c.start(0, c.args(0, "new"))
	p.waitLine("the store records this cluster", time.Minute)
	if _, err := c.memberStatus(0); err == nil {
		t.Fatal("the member with no data serves while no peer answers")
	}
	for _, i := range []int{1, 2} {
		c.start(i, c.args(i, "new"))
	}
	c.waitVoter(0, old, 2*time.Minute)
	if id := c.clusterID(0); id != clusterID {
		t.Errorf("member m0 is in cluster %x, want %x", id, clusterID)
	}
	if p.count("added this member to the cluster as a learner") == 0 {
		t.Error("member m0 did not join as a learner")
	}
	for i := range 3 {
		c.client(i)
	}
	c.sameData(nil)

	// A member removed from the cluster while it runs (by a person here): its etcd stops,
	// and its etcdbr, still running, moves the data dir aside and joins again.
	old = c.idOf(1)
	deadline = time.Now().Add(time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := cli.MemberRemove(ctx, old)
		cancel()
		if err == nil {
			break
		}
		// etcd refuses a removal until every voter has been connected for 5s.
		if time.Now().After(deadline) || !strings.Contains(err.Error(), "unhealthy cluster") {
			t.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	c.procs[1].waitLine("this member had been removed from the cluster: it joined again as a learner", time.Minute)
	c.waitVoter(1, old, 2*time.Minute)
	if aside, _ := filepath.Glob(c.members[1].DataDir + ".etcdbr-old-*"); len(aside) != 1 {
		t.Errorf("the removed member's data dir was not kept aside: %v", aside)
	}
	c.sameData(nil)
}

// restartWith starts member i with args and extra environment variables.
func (c *cluster) restartWith(i int, args []string, env ...string) *proc {
	c.t.Helper()
	c.procs[i] = start(c.t, args, env...)
	return c.procs[i]
}

// rejoins starts member i again with args and waits until it is a voter of cluster id
// again, under a new member ID (its old one, old, stale), having joined as a learner.
func (c *cluster) rejoins(i int, args []string, id, old uint64) {
	c.t.Helper()
	start := time.Now()
	p := c.start(i, args)
	c.waitVoter(i, old, 2*time.Minute)
	if p.count("added this member to the cluster as a learner") == 0 {
		c.t.Errorf("member %s did not join as a learner", c.members[i].Name)
	}
	if got := c.clusterID(i); got != id {
		c.t.Errorf("member %s is in cluster %x, want %x: a second cluster", c.members[i].Name, got, id)
	}
	c.t.Logf("member %s: a voter again %v after its restart", c.members[i].Name, time.Since(start).Round(time.Millisecond))
}

// clusterID is the cluster member i reports.
func (c *cluster) clusterID(i int) uint64 {
	c.t.Helper()
	return c.ids(i).ClusterId
}

// idOf is member i's member ID.
func (c *cluster) idOf(i int) uint64 {
	c.t.Helper()
	return c.ids(i).MemberId
}

// ids is the response header of member i's status: its cluster and member IDs.
func (c *cluster) ids(i int) *etcdserverpb.ResponseHeader {
	c.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		st, err := c.memberStatus(i)
		if err == nil {
			return st.Header
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("member %s does not answer: %v", c.members[i].Name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// memberList is the cluster's member list, read linearizably through any member.
func (c *cluster) memberList(cli *clientv3.Client) (*clientv3.MemberListResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return cli.MemberList(ctx)
}

// waitVoter waits until member i started (published its name) and is a voter, under
// another member ID than old (its entry before it lost its data).
func (c *cluster) waitVoter(i int, old uint64, timeout time.Duration) {
	c.t.Helper()
	cli := c.clientAll()
	deadline := time.Now().Add(timeout)
	for {
		if resp, err := c.memberList(cli); err == nil {
			for _, m := range resp.Members {
				if m.Name == c.members[i].Name && m.ID != old && len(m.ClientURLs) > 0 && !m.IsLearner {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("member %s is not a voter after %v", c.members[i].Name, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// watchLearners follows the member list until the test ends; the returned func reports the
// most learners seen at once.
func (c *cluster) watchLearners() func() int {
	cli := c.clientAll()
	var mu sync.Mutex
	most := 0
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for ctx.Err() == nil {
			if resp, err := c.memberList(cli); err == nil {
				n := 0
				for _, m := range resp.Members {
					if m.IsLearner {
						n++
					}
				}
				mu.Lock()
				most = max(most, n)
				mu.Unlock()
			}
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	})
	c.t.Cleanup(func() { cancel(); wg.Wait() })
	return func() int {
		mu.Lock()
		defer mu.Unlock()
		return most
	}
}

// sameData checks that every member returns the same HashKV at the same revision: the
// lowest revision they all reached (while w, if any, goes on writing).
func (c *cluster) sameData(w *ackWriter) {
	c.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		rev, err := c.commonRevision()
		if err == nil {
			var hashes []uint32
			for i := range c.members {
				h, _, herr := c.hashKV(i, rev)
				if herr != nil {
					err = herr
					break
				}
				hashes = append(hashes, h)
			}
			if err == nil {
				for i, h := range hashes {
					if h != hashes[0] {
						c.t.Fatalf("HashKV at revision %d: member %s has %x, member %s %x", rev, c.members[i].Name, h, c.members[0].Name, hashes[0])
					}
				}
				acked := 0
				if w != nil {
					acked = w.count()
				}
				c.t.Logf("every member has HashKV %x at revision %d (%d writes acknowledged so far)", hashes[0], rev, acked)
				return
			}
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("no common HashKV after a minute: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// commonRevision is the lowest current revision of the members.
func (c *cluster) commonRevision() (int64, error) {
	var rev int64
	for i := range c.members {
		st, err := c.memberStatus(i)
		if err != nil {
			return 0, err
		}
		if rev == 0 || st.Header.Revision < rev {
			rev = st.Header.Revision
		}
	}
	return rev, nil
}

// ackWriter puts keys of its own, one after the other, until the test ends, and records every
// write etcd acknowledged.
type ackWriter struct {
	mu    sync.Mutex
	acked map[string]string
}

// startAckWriter starts writing through cli.
func startAckWriter(t *testing.T, cli *clientv3.Client) *ackWriter {
	w := &ackWriter{acked: map[string]string{}}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ctx.Err() == nil; i++ {
			key, val := fmt.Sprintf("acked/%06d", i), strconv.Itoa(i)
			pctx, pcancel := context.WithTimeout(ctx, 3*time.Second)
			_, err := cli.Put(pctx, key, val)
			pcancel()
			if err == nil {
				w.mu.Lock()
				w.acked[key] = val
				w.mu.Unlock()
			}
			select {
			case <-ctx.Done():
			case <-time.After(10 * time.Millisecond):
			}
		}
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
	return w
}

// count is how many writes were acknowledged so far.
func (w *ackWriter) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acked)
}

// check reads every acknowledged write back through cli (linearizably).
func (w *ackWriter) check(t *testing.T, cli *clientv3.Client) {
	t.Helper()
	w.mu.Lock()
	acked := make(map[string]string, len(w.acked))
	for k, v := range w.acked {
		acked[k] = v
	}
	w.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, "acked/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, kv := range resp.Kvs {
		got[string(kv.Key)] = string(kv.Value)
	}
	lost := 0
	for k, v := range acked {
		if got[k] != v {
			lost++
			if lost <= 5 {
				t.Errorf("acknowledged write %s=%s lost (read %q)", k, v, got[k])
			}
		}
	}
	if lost > 0 {
		t.Fatalf("%d of %d acknowledged writes lost", lost, len(acked))
	}
	t.Logf("all %d acknowledged writes read back", len(acked))
}
