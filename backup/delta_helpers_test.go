package backup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/etcdbr/etcdbr/embedded"
	"github.com/etcdbr/etcdbr/internal/embeddedtest"
	"github.com/etcdbr/etcdbr/internal/etcdtest"
	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// testLog returns a logger that keeps its lines, printed if the test fails.
func testLog(t *testing.T) (*slog.Logger, *embeddedtest.SyncBuffer) {
	t.Helper()
	buf := &embeddedtest.SyncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", buf.String())
		}
	})
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

// waitFor polls cond until it holds or a minute passed.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// quietPeriods counts the delta periods that ended without new revisions, as the takers
// logging into logs report them.
func quietPeriods(logs *embeddedtest.SyncBuffer) int {
	return strings.Count(logs.String(), "delta period ended without new revisions")
}

// progressSeen is an Observer that keeps the last revision the taker reported receiving.
type progressSeen struct {
	nopObserver
	last atomic.Int64
}

// DeltaProgress records p.Last.
func (o *progressSeen) DeltaProgress(p DeltaProgress) { o.last.Store(p.Last) }

// deltaRun is a RunDeltas in a goroutine.
type deltaRun struct {
	cancel context.CancelCauseFunc
	done   chan error
}

// startDeltas runs RunDeltas with cfg until stop is called (or the test ends).
func startDeltas(t *testing.T, cfg DeltaConfig) *deltaRun {
	t.Helper()
	ctx, cancel := context.WithCancelCause(context.Background())
	r := &deltaRun{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- RunDeltas(ctx, cfg) }()
	t.Cleanup(func() { r.stop(t, nil) })
	return r
}

// chainStarts counts the log lines that start or continue a delta chain.
func chainStarts(logs *embeddedtest.SyncBuffer) int {
	n := 0
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, "delta chain") && strings.Contains(line, " from=") {
			n++
		}
	}
	return n
}

// startDeltasReady starts RunDeltas and waits until it knows where its chain starts, so
// that the test's writes come after that point.
func startDeltasReady(t *testing.T, cfg DeltaConfig, logs *embeddedtest.SyncBuffer) *deltaRun {
	t.Helper()
	before := chainStarts(logs)
	r := startDeltas(t, cfg)
	waitFor(t, "the delta chain to start", func() bool { return chainStarts(logs) > before })
	return r
}

// stop cancels the run with cause and waits for RunDeltas to return.
func (r *deltaRun) stop(t *testing.T, cause error) {
	t.Helper()
	if r.done == nil {
		return
	}
	r.cancel(cause)
	select {
	case err := <-r.done:
		require.NoError(t, err)
	case <-time.After(time.Minute):
		t.Fatal("RunDeltas did not return after its context ended")
	}
	r.done = nil
}

// eventSource is where a taker under test reads events: etcd's watch through its client (as
// the sidecar does) or the in-process member's backend (as etcdbr run does).
type eventSource string

const (
	watchSource   eventSource = "watch"
	backendSource eventSource = "backend"
)

// eachSource runs test once with each event source.
func eachSource(t *testing.T, test func(t *testing.T, src eventSource)) {
	for _, src := range []eventSource{watchSource, backendSource} {
		t.Run(string(src), func(t *testing.T) { test(t, src) })
	}
}

// deltaConfig is a taker of member e's events (read from src) into store with a short period.
func deltaConfig(src eventSource, e *embed.Etcd, cli *clientv3.Client, store *snapstore.Store, log *slog.Logger) DeltaConfig {
	if e == nil {
		return DeltaConfig{Store: store, Client: cli, Period: 100 * time.Millisecond, Log: log,
			RetryMin: 20 * time.Millisecond, RetryMax: 200 * time.Millisecond}
	}
	var events func(context.Context, int64) clientv3.WatchChan
	if src == backendSource {
		events = embedded.ServerEvents(e.Server, log)
	}
	return DeltaConfig{
		Store:  store,
		Client: cli,
		Period: 100 * time.Millisecond,
		Full: func(ctx context.Context) (catalog.Snapshot, error) {
			return FullFromBackend(ctx, e.Server.Backend(), store)
		},
		Log:      log,
		RetryMin: 20 * time.Millisecond,
		RetryMax: 200 * time.Millisecond,
		Events:   events,
	}
}

func listKind(t *testing.T, store *snapstore.Store, kind catalog.Kind) []catalog.Snapshot {
	t.Helper()
	list, err := store.List(context.Background(), kind)
	require.NoError(t, err)
	return list
}

// newestDelta returns the newest delta's last revision (0 without deltas).
func newestDelta(t *testing.T, store *snapstore.Store) int64 {
	t.Helper()
	list := listKind(t, store, catalog.KindDelta)
	if len(list) == 0 {
		return 0
	}
	return list[len(list)-1].Revision
}

// revisionOf returns the member's current revision.
func revisionOf(t *testing.T, cli *clientv3.Client) int64 {
	t.Helper()
	resp, err := cli.Get(context.Background(), "probe", clientv3.WithCountOnly())
	require.NoError(t, err)
	return resp.Header.Revision
}

// decodedDelta is a delta read back: its leases (in order) and revisions.
type decodedDelta struct {
	snap   catalog.Snapshot
	leases []snapstore.Lease
	revs   []snapstore.Revision
}

// readDelta reads and decodes a delta, checking that its payload's range is its name's.
func readDelta(t *testing.T, store *snapstore.Store, snap catalog.Snapshot) decodedDelta {
	t.Helper()
	r, err := store.Open(context.Background(), snap)
	require.NoError(t, err)
	defer r.Close()
	dec, err := snapstore.NewDeltaDecoder(r)
	require.NoError(t, err, snap.Key)
	require.Equal(t, snap.From, dec.From(), snap.Key)
	require.Equal(t, snap.Revision, dec.To(), snap.Key)
	d := decodedDelta{snap: snap}
	for {
		l, rev, err := dec.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err, snap.Key)
		if l != nil {
			d.leases = append(d.leases, *l)
			continue
		}
		cp := *rev
		cp.Events = append([]*mvccpb.Event(nil), rev.Events...)
		d.revs = append(d.revs, cp)
	}
	return d
}

// history returns the source's events of revisions from..to, read by a fresh watch from
// etcd's own history, grouped by revision.
func history(t *testing.T, cli *clientv3.Client, from, to int64) map[int64][]*mvccpb.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	evs := map[int64][]*mvccpb.Event{}
	last := from - 1
	for resp := range cli.Watch(ctx, "", clientv3.WithPrefix(), clientv3.WithRev(from)) {
		require.NoError(t, resp.Err())
		for _, ev := range resp.Events {
			evs[ev.Kv.ModRevision] = append(evs[ev.Kv.ModRevision], (*mvccpb.Event)(ev))
			last = ev.Kv.ModRevision
		}
		if last >= to {
			break
		}
	}
	require.GreaterOrEqual(t, last, to, "the source's history ends early")
	return evs
}

// leaseWant says which TTL a delta may record for each lease: the granted one, or 0 for a
// lease that was revoked (it may be gone when the taker looks it up).
type leaseWant struct {
	ttl     map[int64]int64
	revoked map[int64]bool
}

// checkChain checks the deltas in the store that reach past from-1: together they cover
// from..to exactly once, in order; every revision holds exactly the source's events; every
// lease an event references is recorded in the same delta before it, with its TTL; and the
// key space rebuilt from the events equals the source's at `to`.
func checkChain(t *testing.T, store *snapstore.Store, cli *clientv3.Client, from, to int64, want leaseWant) []decodedDelta {
	t.Helper()
	var deltas []catalog.Snapshot
	for _, d := range listKind(t, store, catalog.KindDelta) {
		if d.Revision >= from {
			deltas = append(deltas, d)
		}
	}
	require.NotEmpty(t, deltas, "no delta reaches revision %d", from)
	next := from
	for _, d := range deltas {
		require.Equal(t, next, d.From, "delta %s does not continue the chain at revision %d (deltas: %v)", d.Key, next, keys(deltas))
		next = d.Revision + 1
	}
	require.Equal(t, to, next-1, "the chain ends at %d, want %d", next-1, to)

	src := history(t, cli, from, to)
	kvs := map[string]*mvccpb.KeyValue{}
	if from > 1 {
		before, err := etcdtest.Take(context.Background(), cli, from-1)
		require.NoError(t, err)
		kvs = before.KVs
	}
	var out []decodedDelta
	for _, snap := range deltas {
		d := readDelta(t, store, snap)
		require.Len(t, d.revs, int(snap.Revision-snap.From+1), snap.Key)
		leases := map[int64]int64{}
		for _, l := range d.leases {
			leases[l.ID] = l.TTL
		}
		for _, r := range d.revs {
			require.False(t, r.Time.After(snap.Time.Add(time.Millisecond)), "revision %d observed after its delta %s was named", r.Revision, snap.Key)
			wantEvs := src[r.Revision]
			require.Equal(t, len(wantEvs), len(r.Events), "revision %d in %s", r.Revision, snap.Key)
			for i, ev := range r.Events {
				require.Equal(t, eventString(wantEvs[i]), eventString(ev), "revision %d event %d in %s", r.Revision, i, snap.Key)
				if id := eventLease(ev); id != 0 {
					ttl, ok := leases[id]
					require.True(t, ok, "lease %x of revision %d not recorded in %s", id, r.Revision, snap.Key)
					if !(ttl == 0 && want.revoked[id]) {
						require.Equal(t, want.ttl[id], ttl, "TTL of lease %x in %s", id, snap.Key)
					}
				}
				switch ev.Type {
				case mvccpb.PUT:
					kvs[string(ev.Kv.Key)] = ev.Kv
				case mvccpb.DELETE:
					delete(kvs, string(ev.Kv.Key))
				}
			}
		}
		out = append(out, d)
	}
	at, err := etcdtest.Take(context.Background(), cli, to)
	require.NoError(t, err)
	rebuilt := etcdtest.Dump{Revision: to, KVs: kvs}
	at.Leases = nil
	if diff := etcdtest.Diff(at, rebuilt, 20); len(diff) > 0 {
		t.Fatalf("the key space rebuilt from the deltas differs from the source's at revision %d:\n%s", to, strings.Join(diff, "\n"))
	}
	return out
}

func eventString(ev *mvccpb.Event) string {
	kv := ev.Kv
	return fmt.Sprintf("%s key=%q value=%q create=%d mod=%d version=%d lease=%x",
		ev.Type, kv.Key, kv.Value, kv.CreateRevision, kv.ModRevision, kv.Version, kv.Lease)
}

func keys(snaps []catalog.Snapshot) []string {
	out := make([]string, len(snaps))
	for i, s := range snaps {
		out[i] = s.Key
	}
	return out
}

// churn makes n operations of every kind a delta must carry: single puts and overwrites,
// multi-put transactions, single and range deletes, puts with leases, lease revocations
// (which delete the lease's keys). It returns the leases with their granted TTLs and the
// revision after the last write.
func churn(t *testing.T, cli *clientv3.Client, prefix string, n int, want *leaseWant) int64 {
	t.Helper()
	ctx := context.Background()
	var rev int64
	var lease clientv3.LeaseID
	for i := 0; i < n; i++ {
		var hdr int64
		switch i % 8 {
		case 0:
			resp, err := cli.Txn(ctx).Then(
				clientv3.OpPut(fmt.Sprintf("%s/t/%d/a", prefix, i), "a"),
				clientv3.OpPut(fmt.Sprintf("%s/t/%d/b", prefix, i), "b"),
				clientv3.OpPut(fmt.Sprintf("%s/t/%d/c", prefix, i), strings.Repeat("c", 300)),
			).Commit()
			require.NoError(t, err)
			hdr = resp.Header.Revision
		case 1:
			resp, err := cli.Delete(ctx, fmt.Sprintf("%s/t/%d/", prefix, i-1), clientv3.WithPrefix())
			require.NoError(t, err)
			hdr = resp.Header.Revision
		case 2:
			if lease == 0 || i%24 == 2 {
				ttl := int64(600 + i)
				l, err := cli.Grant(ctx, ttl)
				require.NoError(t, err)
				lease = l.ID
				want.ttl[int64(l.ID)] = ttl
			}
			resp, err := cli.Put(ctx, fmt.Sprintf("%s/leased/%d", prefix, i), "v", clientv3.WithLease(lease))
			require.NoError(t, err)
			hdr = resp.Header.Revision
		case 5:
			if i%40 == 5 && lease != 0 {
				_, err := cli.Revoke(ctx, lease)
				require.NoError(t, err)
				want.revoked[int64(lease)] = true
				lease = 0
				continue
			}
			fallthrough
		default:
			resp, err := cli.Put(ctx, fmt.Sprintf("%s/k/%d", prefix, i%37), fmt.Sprintf("v%d", i))
			require.NoError(t, err)
			hdr = resp.Header.Revision
		}
		rev = max(rev, hdr)
	}
	return revisionOfCtx(t, cli, rev)
}

// revisionOfCtx returns the member's revision, which is at least min.
func revisionOfCtx(t *testing.T, cli *clientv3.Client, atLeast int64) int64 {
	t.Helper()
	rev := revisionOf(t, cli)
	require.GreaterOrEqual(t, rev, atLeast)
	return rev
}

func newLeaseWant() *leaseWant {
	return &leaseWant{ttl: map[int64]int64{}, revoked: map[int64]bool{}}
}
