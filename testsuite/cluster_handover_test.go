package testsuite

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdbr/etcdbr/internal/etcdtest"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// objectLogged matches the object of a "full snapshot taken" or "delta taken" log line.
var objectLogged = regexp.MustCompile(`msg="(?:full snapshot|delta) taken".* object=(\S+)`)

// uploaded is every object member i's etcdbr logged as taken, in order.
func (c *cluster) uploaded(i int) []string {
	var keys []string
	for _, line := range strings.Split(c.procs[i].Output(), "\n") {
		if m := objectLogged.FindStringSubmatch(line); m != nil {
			keys = append(keys, m[1])
		}
	}
	return keys
}

// leaderAmong waits until the running members of among agree on a leader that is one of
// them, and returns its index.
func (c *cluster) leaderAmong(timeout time.Duration, among ...int) int {
	c.t.Helper()
	var lead int
	waitFor(c.t, fmt.Sprintf("members %v to agree on a leader among them", among), timeout, func() bool {
		var leader uint64
		lead = -1
		for _, i := range among {
			st, err := c.memberStatus(i)
			if err != nil || st.Leader == 0 || (leader != 0 && st.Leader != leader) {
				return false
			}
			leader = st.Leader
			if st.Header.MemberId == st.Leader {
				lead = i
			}
		}
		return lead >= 0
	})
	return lead
}

// deltaAnswer is the answer of POST /v1/snapshots/delta.
type deltaAnswer struct {
	Revision int64       `json:"revision"`
	Deltas   []apiObject `json:"deltas"`
}

// storeKeys is every backup object's key in the store, sorted.
func storeKeys(t testing.TB, url string) []string {
	t.Helper()
	keys := slices.Concat(names(fulls(t, url)), names(deltas(t, url)))
	slices.Sort(keys)
	return keys
}

// checkStoreChain checks the store's listing as a restore plans it (catalog.CheckChain)
// and covers every revision from the first full snapshot exactly once (checkChain); it
// returns the chain's deltas.
func checkStoreChain(t testing.TB, url string) []catalog.Snapshot {
	t.Helper()
	if problems := catalog.CheckChain(fulls(t, url), deltas(t, url)); len(problems) > 0 {
		t.Fatalf("the store's chain has problems: %v", problems)
	}
	return checkChain(t, url)
}

// churnWriter writes until halted: overwrites of a few keys (versions), puts attached to a
// lease, deletes; it remembers the revision and time of each acknowledged write.
type churnWriter struct {
	stop, done chan struct{}
	mu         sync.Mutex
	acks       []ack
}

func startChurnWriter(cli *clientv3.Client, prefix string, lease clientv3.LeaseID) *churnWriter {
	w := &churnWriter{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for i := 0; ; i++ {
			select {
			case <-w.stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			key := fmt.Sprintf("%s/%d", prefix, i%40)
			var rev int64
			switch {
			case i%11 == 0:
				if resp, err := cli.Delete(ctx, key); err == nil {
					rev = resp.Header.Revision
				}
			case i%7 == 0:
				if resp, err := cli.Put(ctx, key, fmt.Sprintf("leased %d", i), clientv3.WithLease(lease)); err == nil {
					rev = resp.Header.Revision
				}
			default:
				if resp, err := cli.Put(ctx, key, fmt.Sprintf("value %d", i)); err == nil {
					rev = resp.Header.Revision
				}
			}
			cancel()
			if rev == 0 {
				continue // no leader for a moment: the write is not acknowledged
			}
			w.mu.Lock()
			w.acks = append(w.acks, ack{rev, time.Now()})
			w.mu.Unlock()
		}
	}()
	return w
}

func (w *churnWriter) halt() {
	close(w.stop)
	<-w.done
}

// lastAck is the newest acknowledged write.
func (w *churnWriter) lastAck() ack {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.acks) == 0 {
		return ack{}
	}
	return w.acks[len(w.acks)-1]
}

// firstAckAfter is the first write acknowledged after at.
func (w *churnWriter) firstAckAfter(at time.Time) (ack, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, a := range w.acks {
		if a.at.After(at) {
			return a, true
		}
	}
	return ack{}, false
}

// SIGKILL the leader while it takes deltas under a write load: the new leader's deltas
// continue the store's chain exactly (no gap, no overlap, every event the cluster's own),
// and a restore to a revision written during the handover (acknowledged after the kill,
// uploaded by the new leader) equals the surviving cluster's data at that revision.
func TestClusterLeaderKilledChainContinues(t *testing.T) {
	t.Parallel()
	store := "file://" + t.TempDir() + "/store"
	c := newCluster(t, 3, store, "--delta-snapshot-period", "1s")
	c.startAll()
	old := c.leader(time.Minute)
	ctx := context.Background()
	cli := c.clientAll()
	lease, err := cli.Grant(ctx, 3600)
	if err != nil {
		t.Fatal(err)
	}
	w := startChurnWriter(cli, "handover", lease.ID)
	defer func() {
		select {
		case <-w.stop:
		default:
			w.halt()
		}
	}()
	waitFor(t, "the leader's deltas under the write load", 2*time.Minute, func() bool {
		return c.procs[old].count(`msg="delta taken"`) >= 3
	})
	c.kill(old)
	killed := time.Now()

	var survivors []int
	for i := range c.members {
		if i != old {
			survivors = append(survivors, i)
		}
	}
	lead := c.leaderAmong(time.Minute, survivors...)
	c.procs[lead].waitLine("delta taken", 2*time.Minute)
	w.halt()
	last := w.lastAck()
	waitStoreRevision(t, store, last.rev, time.Minute)

	chain := checkStoreChain(t, store)
	survivor := c.client(lead)
	checkDeltaContent(t, store, survivor, chain)
	byOld, byNew := c.uploaded(old), c.uploaded(lead)
	var oldLast, newFirst *catalog.Snapshot
	for i, d := range chain {
		switch {
		case slices.Contains(byOld, d.Key):
			if newFirst != nil {
				t.Fatalf("the killed leader's %s follows the new leader's %s in the chain", d.Key, newFirst.Key)
			}
			oldLast = &chain[i]
		case slices.Contains(byNew, d.Key) && newFirst == nil:
			newFirst = &chain[i]
		}
	}
	if oldLast == nil || newFirst == nil {
		t.Fatalf("the chain %v holds no delta of the killed leader (%v) or none of the new one (%v)", names(chain), byOld, byNew)
	}
	t.Logf("the killed leader's last delta %s, the new leader's first %s", oldLast.Key, newFirst.Key)

	during, ok := w.firstAckAfter(killed)
	if !ok || during.rev <= oldLast.Revision {
		t.Fatalf("no write acknowledged after the kill past the killed leader's last delta (%v, %+v)", ok, during)
	}
	want, err := etcdtest.Take(ctx, survivor, during.rev)
	if err != nil {
		t.Fatal(err)
	}
	m := newMember(t, t.TempDir())
	args := append([]string{"restore", "--data-dir", m.DataDir, "--store", store, "--to-revision", fmt.Sprint(during.rev),
		"--exact", "--keep-store-cluster", "--"}, m.etcdFlags()...)
	if code, out := runToExit(t, args); code != 0 {
		t.Fatalf("etcdbr restore to revision %d: exit %d\n%s", during.rev, code, out)
	}
	got := dumpDataDir(t, m, m.DataDir)
	if diff := etcdtest.Diff(want, got, 20); len(diff) > 0 {
		t.Fatalf("the restore to revision %d (written during the handover) differs from the cluster's data there:\n%s",
			during.rev, strings.Join(diff, "\n"))
	}
	if len(want.KVs) == 0 || len(want.Leases) == 0 {
		t.Fatalf("nothing to compare: %d keys, %d leases", len(want.KVs), len(want.Leases))
	}
}

// A leader cut off from its peers (its peer traffic dropped both ways by the proxies in
// front of the members' peer URLs) uploads nothing once the others elected a new leader:
// its pending delta is fenced (its log and etcdbr_snapshots_fenced_total say so), and every
// object in the store after the cut is the new leader's, whose first delta continues the
// store's chain exactly where the old leader's ended, with the revisions the old leader
// held but could not upload.
func TestClusterLeaderCutOffUploadsNothing(t *testing.T) {
	t.Parallel()
	store := "file://" + t.TempDir() + "/store"
	// Deltas only when the test asks (POST /v1/snapshots/delta): the old leader holds
	// revisions it has not uploaded when it is cut off.
	c := newCluster(t, 3, store, "--delta-snapshot-period", "10m")
	c.proxyPeers()
	c.startAll()
	old := c.leader(time.Minute)
	ids := make([]string, len(c.members))
	for i := range c.members {
		ids[i] = c.memberID(i)
	}
	ctx := context.Background()
	put := func(cli *clientv3.Client, prefix string, n int) int64 {
		var rev int64
		for i := range n {
			resp, err := cli.Put(ctx, fmt.Sprintf("%s/%d", prefix, i), fmt.Sprint(i))
			if err != nil {
				t.Fatal(err)
			}
			rev = resp.Header.Revision
		}
		return rev
	}
	flush := func(i int) deltaAnswer {
		var ans deltaAnswer
		if code := newAPI(t, "http://"+c.apis[i]).call(http.MethodPost, "/v1/snapshots/delta", "", &ans); code != http.StatusOK {
			t.Fatalf("POST /v1/snapshots/delta on %s: %d", c.members[i].Name, code)
		}
		return ans
	}

	oldCli := c.client(old)
	put(oldCli, "before", 20)
	flush(old)
	held := put(oldCli, "held", 20) // applied by the old leader, not uploaded
	before := storeKeys(t, store)
	storeNewest := newestRevision(t, store)
	if storeNewest >= held {
		t.Fatalf("the store holds revision %d already, want the old leader to hold %d", storeNewest, held)
	}

	c.cutOff(old, ids[old])
	// The old leader still believes it leads (until it misses its peers for an election
	// timeout): asked to upload what it holds, it tries, and its fence refuses.
	var refused apiErr
	code := newAPI(t, "http://"+c.apis[old]).call(http.MethodPost, "/v1/snapshots/delta", "", &refused)
	if code != http.StatusConflict || !strings.Contains(refused.Error, "refused by the fence") {
		t.Fatalf("the cut-off leader's flush answered %d: %s; want 409, refused by the fence", code, refused.Error)
	}
	c.procs[old].waitLine("delta upload fenced", time.Minute)

	var others []int
	for i := range c.members {
		if i != old {
			others = append(others, i)
		}
	}
	lead := c.leaderAmong(time.Minute, others...)
	first := flush(lead)
	if len(first.Deltas) == 0 {
		t.Fatal("the new leader's flush uploaded nothing")
	}
	if from := first.Deltas[0].From; from != storeNewest+1 {
		t.Fatalf("the new leader's first delta starts at revision %d, want %d (right after the store's newest)", from, storeNewest+1)
	}
	if first.Revision < held {
		t.Fatalf("the new leader's flush reached revision %d, want at least %d (what the old leader held)", first.Revision, held)
	}

	// What the store holds when the cut ends: every object that appeared during the cut is
	// the new leader's. After the heal any member may lead again (an election under load),
	// and its uploads are legitimate.
	atHeal := storeKeys(t, store)
	c.heal()
	waitFor(t, "the old leader to follow the new one", time.Minute, func() bool {
		st, err := c.memberStatus(old)
		return err == nil && fmt.Sprintf("%x", st.Leader) == ids[lead]
	})
	newCli := c.client(lead)
	flush(lead)
	after := put(newCli, "after", 20)
	flush(lead)
	waitStoreRevision(t, store, after, time.Minute)

	byOld := c.uploaded(old)
	for _, k := range byOld {
		if !slices.Contains(before, k) && slices.Contains(atHeal, k) {
			t.Errorf("the old leader uploaded %s while it was cut off", k)
		}
	}
	byNew := c.uploaded(lead)
	for _, k := range atHeal {
		if !slices.Contains(before, k) && !slices.Contains(byNew, k) {
			t.Errorf("%s appeared in the store during the cut, and the new leader did not upload it", k)
		}
	}
	fenced := value(t, scrape(t, "http://"+c.apis[old]), "etcdbr_snapshots_fenced_total", "kind", "delta")
	if fenced < 1 {
		t.Errorf("the old leader's etcdbr_snapshots_fenced_total{kind=\"delta\"} is %v", fenced)
	}
	if dropped := c.proxies[lead].droppedFrom(ids[old]) + c.proxies[old].droppedFrom(ids[lead]); dropped == 0 {
		t.Errorf("the proxies dropped no peer traffic between the old and the new leader")
	}
	chain := checkStoreChain(t, store)
	checkDeltaContent(t, store, newCli, chain)
}
