package testsuite

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// newestRevision is the newest revision in a store: its newest full snapshot's or delta's.
func newestRevision(t testing.TB, url string) int64 {
	t.Helper()
	var rev int64
	for _, list := range [][]catalog.Snapshot{fulls(t, url), deltas(t, url)} {
		if n := len(list); n > 0 {
			rev = max(rev, list[n-1].Revision)
		}
	}
	return rev
}

// waitStoreRevision waits until the store's newest revision is at least rev.
func waitStoreRevision(t testing.TB, url string, rev int64, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for newestRevision(t, url) < rev {
		if time.Now().After(deadline) {
			t.Fatalf("the store %s does not reach revision %d after %v (newest %d)", url, rev, timeout, newestRevision(t, url))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// memberRevision returns the member's current revision.
func memberRevision(t testing.TB, cli *clientv3.Client) int64 {
	t.Helper()
	resp, err := cli.Get(context.Background(), "probe", clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return resp.Header.Revision
}

// checkChain checks by the objects' names that the deltas after the store's first full
// snapshot cover every revision from it to the store's newest exactly once (the first of
// them may start before the full snapshot's revision), and returns those deltas.
func checkChain(t testing.TB, url string) []catalog.Snapshot {
	t.Helper()
	fs := fulls(t, url)
	if len(fs) == 0 {
		t.Fatalf("no full snapshot in %s", url)
	}
	next := fs[0].Revision + 1
	var chain []catalog.Snapshot
	for _, d := range deltas(t, url) {
		if d.Revision < next {
			continue // before the first full snapshot
		}
		if d.From > next || (len(chain) > 0 && d.From != next) {
			t.Fatalf("revision %d is not covered exactly once: the next delta is %s (chain so far %v)", next, d.Key, names(chain))
		}
		chain = append(chain, d)
		next = d.Revision + 1
	}
	if newest := newestRevision(t, url); next-1 < newest {
		t.Fatalf("the deltas end at revision %d, the store's newest revision is %d", next-1, newest)
	}
	return chain
}

func names(snaps []catalog.Snapshot) []string {
	out := make([]string, len(snaps))
	for i, s := range snaps {
		out[i] = s.Key
	}
	return out
}

// checkDeltaContent decodes every delta of chain and checks each revision's events against
// the member's own history, read with a fresh watch.
func checkDeltaContent(t testing.TB, url string, cli *clientv3.Client, chain []catalog.Snapshot) {
	t.Helper()
	if len(chain) == 0 {
		t.Fatal("no deltas")
	}
	from, to := chain[0].From, chain[len(chain)-1].Revision
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	want := map[int64][]string{}
	for resp := range cli.Watch(ctx, "", clientv3.WithPrefix(), clientv3.WithRev(from)) {
		if err := resp.Err(); err != nil {
			t.Fatal(err)
		}
		last := int64(0)
		for _, ev := range resp.Events {
			want[ev.Kv.ModRevision] = append(want[ev.Kv.ModRevision], eventString((*mvccpb.Event)(ev)))
			last = ev.Kv.ModRevision
		}
		if last >= to {
			break
		}
	}
	s := openStore(t, url)
	defer s.Close()
	for _, d := range chain {
		r, err := s.Open(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		dec, err := snapstore.NewDeltaDecoder(r)
		if err != nil {
			t.Fatalf("%s: %v", d.Key, err)
		}
		for {
			_, rev, err := dec.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", d.Key, err)
			}
			if rev == nil {
				continue
			}
			got := make([]string, len(rev.Events))
			for i, ev := range rev.Events {
				got[i] = eventString(ev)
			}
			if !slices.Equal(want[rev.Revision], got) {
				t.Fatalf("%s: revision %d holds\n%s\nthe member's history has\n%s", d.Key, rev.Revision,
					strings.Join(got, "\n"), strings.Join(want[rev.Revision], "\n"))
			}
		}
		r.Close()
	}
}

func eventString(ev *mvccpb.Event) string {
	kv := ev.Kv
	return fmt.Sprintf("%s key=%q value=%q create=%d mod=%d version=%d lease=%x",
		ev.Type, kv.Key, kv.Value, kv.CreateRevision, kv.ModRevision, kv.Version, kv.Lease)
}

// writer puts keys until stopped and remembers the revision and time of each acknowledged
// write.
type writer struct {
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	acks []ack
	n    atomic.Int64
}

type ack struct {
	rev int64
	at  time.Time
}

func startWriter(cli *clientv3.Client, prefix string, every time.Duration) *writer {
	w := &writer{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for i := 0; ; i++ {
			select {
			case <-w.stop:
				return
			case <-time.After(every):
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			resp, err := cli.Put(ctx, fmt.Sprintf("%s/%d", prefix, i%200), fmt.Sprintf("value %d", i))
			cancel()
			if err == nil {
				w.mu.Lock()
				w.acks = append(w.acks, ack{resp.Header.Revision, time.Now()})
				w.mu.Unlock()
				w.n.Add(1)
			}
		}
	}()
	return w
}

func (w *writer) halt() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

// lastAck returns the newest acknowledged write.
func (w *writer) lastAck() ack {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.acks) == 0 {
		return ack{}
	}
	return w.acks[len(w.acks)-1]
}

// ackOf returns the acknowledged write with the highest revision at or below rev.
func (w *writer) ackOf(rev int64) (ack, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for i := len(w.acks) - 1; i >= 0; i-- {
		if w.acks[i].rev <= rev {
			return w.acks[i], true
		}
	}
	return ack{}, false
}

// noNewRevisions is what the delta taker logs (at debug level) for a period that ends without
// new revisions, and so without a delta.
const noNewRevisions = "delta period ended without new revisions"

// TestDeltaSnapshots: with writes a delta appears every period; without writes none; on
// SIGTERM a final delta covers the last write; the deltas continue the full snapshot's chain
// and hold exactly the member's history.
func TestDeltaSnapshots(t *testing.T) {
	dir := t.TempDir()
	m := newMember(t, dir)
	store := "file://" + filepath.Join(dir, "store")
	// At debug level the taker logs each period that ends without new revisions.
	p := start(t, m.runArgs(store, "--full-snapshot-schedule", "@daily", "--delta-snapshot-period", "1s", "--log-level", "debug"))
	cli := client(t, m.ClientURL)
	waitFull(t, store, 1, time.Minute)

	w := startWriter(cli, "/periodic", 20*time.Millisecond)
	waitFor(t, "three deltas of the periodic writes", time.Minute, func() bool { return len(deltas(t, store)) >= 3 })
	w.halt()
	last := w.lastAck()
	waitStoreRevision(t, store, last.rev, time.Minute)

	quiet := deltas(t, store)
	quietPeriods := p.count(noNewRevisions)
	waitFor(t, "three periods without writes", time.Minute, func() bool { return p.count(noNewRevisions) >= quietPeriods+3 })
	if got := deltas(t, store); len(got) != len(quiet) {
		t.Fatalf("deltas were written without writes: %v", names(got[len(quiet):]))
	}

	resp, err := cli.Put(context.Background(), "/final", "the last write")
	if err != nil {
		t.Fatal(err)
	}
	p.stop()
	if newest := newestRevision(t, store); newest != resp.Header.Revision {
		t.Fatalf("after SIGTERM the store ends at revision %d, the last write was %d", newest, resp.Header.Revision)
	}
	if !strings.Contains(p.Output(), "final delta uploaded") {
		t.Fatalf("no final delta in the log:\n%s", p.Output())
	}

	// The member's history is still there: start it again (with deltas off) to read it.
	p = start(t, m.runArgs(store, "--full-snapshot-schedule", "@daily", "--delta-snapshot-period", "0"))
	cli = client(t, m.ClientURL)
	chain := checkChain(t, store)
	checkDeltaContent(t, store, cli, chain)
	p.stop()
}

// TestDeltaChainSurvivesSIGKILL: SIGKILL while deltas are taken under a steady write load,
// then start again: the chain continues with no gap and no overlap, and the store catches up
// with the member's revision.
func TestDeltaChainSurvivesSIGKILL(t *testing.T) {
	dir := t.TempDir()
	m := newMember(t, dir)
	store := "file://" + filepath.Join(dir, "store")
	args := m.runArgs(store, "--full-snapshot-schedule", "@daily", "--delta-snapshot-period", "1s")
	p := start(t, args)
	cli := client(t, m.ClientURL)
	waitFull(t, store, 1, time.Minute)

	w := startWriter(cli, "/load", 5*time.Millisecond)
	waitFor(t, "four deltas of the load", time.Minute, func() bool { return len(deltas(t, store)) >= 4 })
	// Mid-period: the writer has acknowledged writes that the store does not hold yet.
	waitFor(t, "writes the store does not hold yet", time.Minute, func() bool {
		return w.lastAck().rev >= newestRevision(t, store)+20
	})
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	p.wait(time.Minute)
	w.halt()
	acked := w.lastAck()
	stored := newestRevision(t, store)
	if covered, ok := w.ackOf(stored); ok {
		t.Logf("at SIGKILL the store held revision %d, the last acknowledged write was %d: a restore of the latest point "+
			"would lose %d revisions, the writes of the last %v (period 1s)",
			stored, acked.rev, acked.rev-stored, killed.Sub(covered.at).Round(time.Millisecond))
	}
	if stored >= acked.rev {
		t.Fatalf("the store already held every write at SIGKILL (%d >= %d): the kill did not happen while deltas were taken", stored, acked.rev)
	}

	before := len(deltas(t, store))
	p = start(t, args)
	cli = client(t, m.ClientURL)
	w = startWriter(cli, "/after", 5*time.Millisecond)
	// The restarted taker continues the chain, then takes deltas of the load.
	waitFor(t, "three deltas after the restart", time.Minute, func() bool { return len(deltas(t, store)) >= before+3 })
	w.halt()
	target := memberRevision(t, cli)
	waitStoreRevision(t, store, target, time.Minute)
	if !strings.Contains(p.Output(), fmt.Sprintf("from=%d", stored+1)) {
		t.Fatalf("the restarted taker does not continue from revision %d:\n%s", stored+1, p.Output())
	}
	chain := checkChain(t, store)
	checkDeltaContent(t, store, cli, chain)
	p.stop()
}

// TestDeltaSidecar: `etcdbr snapshot` against an external etcd runs until SIGTERM, takes a
// full snapshot and deltas, and uploads a final delta covering the last write; --once takes
// one full snapshot and exits.
func TestDeltaSidecar(t *testing.T) {
	dir := t.TempDir()
	ext := newMember(t, dir)
	etcd := start(t, ext.runArgs("file://"+filepath.Join(dir, "own-store"), "--full-snapshot-schedule", "@daily", "--delta-snapshot-period", "0"))
	cli := client(t, ext.ClientURL)

	store := "file://" + filepath.Join(dir, "sidecar-store")
	sidecar := start(t, []string{"snapshot", "--endpoints", ext.ClientURL, "--store", store,
		"--full-snapshot-schedule", "@daily", "--delta-snapshot-period", "1s"})
	waitFull(t, store, 1, time.Minute)
	w := startWriter(cli, "/sidecar", 10*time.Millisecond)
	waitFor(t, "two deltas of the sidecar", time.Minute, func() bool { return len(deltas(t, store)) >= 2 })
	w.halt()
	resp, err := cli.Put(context.Background(), "/final", "the last write")
	if err != nil {
		t.Fatal(err)
	}
	sidecar.stop()
	if newest := newestRevision(t, store); newest != resp.Header.Revision {
		t.Fatalf("after SIGTERM the sidecar's store ends at revision %d, the last write was %d", newest, resp.Header.Revision)
	}
	chain := checkChain(t, store)
	checkDeltaContent(t, store, cli, chain)

	once := "file://" + filepath.Join(dir, "once-store")
	code, out := runToExit(t, []string{"snapshot", "--once", "--endpoints", ext.ClientURL, "--store", once})
	list := fulls(t, once)
	if code != 0 || len(list) != 1 || list[0].Revision != resp.Header.Revision || len(deltas(t, once)) != 0 {
		t.Fatalf("--once: exit %d, fulls %v, deltas %v\n%s", code, names(list), names(deltas(t, once)), out)
	}
	etcd.stop()
}
