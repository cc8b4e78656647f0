package backup

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3client"
	"go.uber.org/zap"

	"github.com/etcdbr/etcdbr/internal/embeddedtest"
	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// inProcess returns an in-process client of e, as the supervisor uses.
func inProcess(t *testing.T, e *embed.Etcd) *clientv3.Client {
	t.Helper()
	cli := v3client.New(e.Server)
	t.Cleanup(func() { cli.Close() })
	return cli
}

// Deltas taken while writes go on cover every revision exactly once, and every revision
// holds exactly the source's events, with the leases they reference.
func TestDeltasCoverEveryRevision(t *testing.T) {
	eachSource(t, func(t *testing.T, src eventSource) {
		e := startEtcd(t)
		cli := inProcess(t, e)
		store := memStore(t)
		log, logs := testLog(t)
		start := revisionOf(t, cli)

		run := startDeltasReady(t, deltaConfig(src, e, cli, store, log), logs)
		want := newLeaseWant()
		var last int64
		for round := 0; round < 5; round++ {
			last = churn(t, cli, fmt.Sprintf("/r%d", round), 120, want)
			// The round's writes are in the store before the next round's begin: every round
			// ends in a delta of its own.
			waitFor(t, fmt.Sprintf("the deltas to reach the last write of round %d", round), func() bool { return newestDelta(t, store) >= last })
		}
		run.stop(t, nil)

		deltas := checkChain(t, store, cli, start+1, last, *want)
		require.Greater(t, len(deltas), 3, "one delta per period with writes")
		require.Empty(t, listKind(t, store, catalog.KindFull), "an empty store's chain starts without a full snapshot")
		multi := 0
		for _, d := range deltas {
			for _, r := range d.revs {
				if len(r.Events) > 1 {
					multi++
				}
			}
		}
		require.Positive(t, multi, "transactions and range deletes make revisions of several events")
	})
}

// Without writes no delta is written; on stop the events seen so far are uploaded as a
// final delta that covers the last write.
func TestDeltasFinalOnStop(t *testing.T) {
	eachSource(t, func(t *testing.T, src eventSource) {
		e := startEtcd(t)
		cli := inProcess(t, e)
		store := memStore(t)
		log, logs := testLog(t)
		cfg := deltaConfig(src, e, cli, store, log)
		cfg.Period = 50 * time.Millisecond
		start := revisionOf(t, cli)

		run := startDeltasReady(t, cfg, logs)
		quiet := quietPeriods(logs)
		waitFor(t, "several periods without writes", func() bool { return quietPeriods(logs) >= quiet+3 })
		require.Empty(t, listKind(t, store, catalog.KindDelta), "a delta without writes")

		cfg.Period = time.Hour
		run.stop(t, nil)
		run = startDeltasReady(t, cfg, logs) // no periodic upload: only the final one
		want := newLeaseWant()
		last := churn(t, cli, "/final", 50, want)
		run.stop(t, nil)

		deltas := checkChain(t, store, cli, start+1, last, *want)
		require.Len(t, deltas, 1, "one final delta")
	})
}

// Cancelling with a cause wrapping ErrSkipped (leadership lost) drops the events instead of
// uploading them; the next run continues the chain from the store without a gap.
func TestDeltasSkippedStopDropsThenContinues(t *testing.T) {
	eachSource(t, func(t *testing.T, src eventSource) {
		e := startEtcd(t)
		cli := inProcess(t, e)
		store := memStore(t)
		log, logs := testLog(t)
		cfg := deltaConfig(src, e, cli, store, log)
		cfg.Period = time.Hour
		seen := &progressSeen{}
		cfg.Observer = seen
		start := revisionOf(t, cli)

		run := startDeltasReady(t, cfg, logs)
		want := newLeaseWant()
		dropped := churn(t, cli, "/a", 30, want)
		waitFor(t, "the taker to receive the last write", func() bool { return seen.last.Load() >= dropped })
		run.stop(t, fmt.Errorf("not the leader any more: %w", ErrSkipped))
		require.Empty(t, listKind(t, store, catalog.KindDelta))
		require.Contains(t, logs.String(), "without a final delta")
		require.Contains(t, logs.String(), fmt.Sprintf("dropped_from=%d dropped_to=%d", start+1, dropped))

		// The store is still empty: the next run starts at the member's current revision, so
		// anchor the chain with a full snapshot first, as the runner does.
		full, err := FullFromBackend(context.Background(), e.Server.Backend(), store)
		require.NoError(t, err)
		require.Greater(t, full.Revision, start)
		run = startDeltasReady(t, cfg, logs)
		last := churn(t, cli, "/b", 30, want)
		run.stop(t, nil)
		checkChain(t, store, cli, full.Revision+1, last, *want)
	})
}

// A new run continues the chain from the store's newest revision: the writes made while no
// taker ran are read from etcd's history.
func TestDeltasContinueAfterRestart(t *testing.T) {
	eachSource(t, func(t *testing.T, src eventSource) {
		e := startEtcd(t)
		cli := inProcess(t, e)
		store := memStore(t)
		log, logs := testLog(t)
		cfg := deltaConfig(src, e, cli, store, log)
		start := revisionOf(t, cli)
		want := newLeaseWant()

		run := startDeltasReady(t, cfg, logs)
		churn(t, cli, "/one", 100, want)
		run.stop(t, nil)
		first := newestDelta(t, store)

		churn(t, cli, "/gap", 100, want) // nobody watches
		run = startDeltasReady(t, cfg, logs)
		last := churn(t, cli, "/two", 100, want)
		waitFor(t, "the deltas to reach the last write", func() bool { return newestDelta(t, store) >= last })
		run.stop(t, nil)

		require.Contains(t, logs.String(), "continuing the delta chain")
		require.Contains(t, logs.String(), fmt.Sprintf("from=%d", first+1))
		checkChain(t, store, cli, start+1, last, *want)
		require.Empty(t, listKind(t, store, catalog.KindFull), "a continued chain needs no full snapshot")
	})
}

// When etcd compacted the revisions the chain needs, a full snapshot starts a new chain.
func TestDeltasAfterCompactionStartNewChain(t *testing.T) {
	eachSource(t, func(t *testing.T, src eventSource) {
		e := startEtcd(t)
		cli := inProcess(t, e)
		store := memStore(t)
		log, logs := testLog(t)
		cfg := deltaConfig(src, e, cli, store, log)
		want := newLeaseWant()

		run := startDeltasReady(t, cfg, logs)
		churn(t, cli, "/one", 40, want)
		run.stop(t, nil)
		old := newestDelta(t, store)

		compactAt := churn(t, cli, "/gap", 40, want)
		_, err := cli.Compact(context.Background(), compactAt)
		require.NoError(t, err)

		run = startDeltasReady(t, cfg, logs)
		waitFor(t, "a full snapshot", func() bool { return len(listKind(t, store, catalog.KindFull)) == 1 })
		full := listKind(t, store, catalog.KindFull)[0]
		require.GreaterOrEqual(t, full.Revision, compactAt)
		last := churn(t, cli, "/two", 40, want)
		run.stop(t, nil)

		require.Contains(t, logs.String(), "compacted")
		require.Contains(t, logs.String(), "new delta chain")
		checkChain(t, store, cli, full.Revision+1, last, *want)
		for _, d := range listKind(t, store, catalog.KindDelta) {
			require.True(t, d.Revision <= old || d.From > full.Revision, "delta %s spans the break", d.Key)
		}
	})
}

// A member behind the store (restored to an older point, or another history) never writes a
// delta that overlaps the store's: it takes a full snapshot, waits until it passes the
// store's newest revision, takes another and starts the chain from that one.
func TestDeltasMemberBehindStore(t *testing.T) {
	eachSource(t, func(t *testing.T, src eventSource) {
		store := memStore(t)
		want := newLeaseWant()

		a := startEtcd(t)
		acli := inProcess(t, a)
		log, logs := testLog(t)
		run := startDeltasReady(t, deltaConfig(src, a, acli, store, log), logs)
		storeRev := churn(t, acli, "/a", 200, want)
		run.stop(t, nil)
		require.Equal(t, storeRev, newestDelta(t, store))
		oldDeltas := listKind(t, store, catalog.KindDelta)

		b := startEtcd(t)
		bcli := inProcess(t, b)
		log, logs = testLog(t)
		churn(t, bcli, "/b", 20, want)
		run = startDeltas(t, deltaConfig(src, b, bcli, store, log))
		waitFor(t, "a full snapshot of the member behind", func() bool { return len(listKind(t, store, catalog.KindFull)) == 1 })
		require.Less(t, listKind(t, store, catalog.KindFull)[0].Revision, storeRev)
		waitFor(t, "the suspension", func() bool { return strings.Contains(logs.String(), "deltas are suspended") })

		// Writes below the store's newest revision make no delta: once the taker anchored the
		// new chain past them, the store holds no delta that starts at or before the anchor
		// but the old ones.
		for revisionOf(t, bcli) < storeRev-5 {
			churn(t, bcli, "/b2", 8, want)
		}
		churn(t, bcli, "/b3", 10, want) // past the store's newest
		waitFor(t, "the full snapshot that anchors the new chain", func() bool { return len(listKind(t, store, catalog.KindFull)) == 2 })
		require.Equal(t, oldDeltas, deltasUpTo(t, store, listKind(t, store, catalog.KindFull)[1].Revision))
		last := churn(t, bcli, "/b4", 60, want)
		waitFor(t, "the deltas of the new chain", func() bool { return newestDelta(t, store) >= last })
		run.stop(t, nil)

		fulls := listKind(t, store, catalog.KindFull)
		require.Len(t, fulls, 2)
		anchor := fulls[1]
		require.Greater(t, anchor.Revision, storeRev)
		for _, d := range listKind(t, store, catalog.KindDelta) {
			require.True(t, d.Revision <= storeRev || d.From > anchor.Revision, "delta %s overlaps the store's or precedes its anchor", d.Key)
		}
		checkChain(t, store, bcli, anchor.Revision+1, last, *want)
		require.Equal(t, oldDeltas, deltasUpTo(t, store, anchor.Revision), "a delta of the writes below the store's newest revision")
	})
}

// deltasUpTo lists the deltas in the store that start at or before revision rev.
func deltasUpTo(t *testing.T, store *snapstore.Store, rev int64) []catalog.Snapshot {
	t.Helper()
	var out []catalog.Snapshot
	for _, d := range listKind(t, store, catalog.KindDelta) {
		if d.From <= rev {
			out = append(out, d)
		}
	}
	return out
}

// A lease revoked before the taker sees the put that used it is recorded with TTL 0; a live
// lease with its granted TTL.
func TestDeltasLeaseGoneIsRecordedWithTTL0(t *testing.T) {
	eachSource(t, func(t *testing.T, src eventSource) {
		e := startEtcd(t)
		cli := inProcess(t, e)
		store := memStore(t)
		log, logs := testLog(t)
		ctx := context.Background()
		full, err := FullFromBackend(ctx, e.Server.Backend(), store)
		require.NoError(t, err)

		gone, err := cli.Grant(ctx, 300)
		require.NoError(t, err)
		live, err := cli.Grant(ctx, 400)
		require.NoError(t, err)
		_, err = cli.Put(ctx, "/gone", "v", clientv3.WithLease(gone.ID))
		require.NoError(t, err)
		_, err = cli.Put(ctx, "/live", "v", clientv3.WithLease(live.ID))
		require.NoError(t, err)
		_, err = cli.Revoke(ctx, gone.ID)
		require.NoError(t, err)
		last := revisionOf(t, cli)

		run := startDeltasReady(t, deltaConfig(src, e, cli, store, log), logs)
		run.stop(t, nil)
		deltas := checkChain(t, store, cli, full.Revision+1, last, leaseWant{ttl: map[int64]int64{int64(live.ID): 400}})
		require.Len(t, deltas, 1)
		require.ElementsMatch(t, []snapstore.Lease{{ID: int64(gone.ID), TTL: 0}, {ID: int64(live.ID), TTL: 400}}, deltas[0].leases)
	})
}

// breakableStore is a file store whose delta uploads fail while broken: the delta directory
// is replaced by a file.
type breakableStore struct {
	*snapstore.Store
	dir string
}

func newBreakableStore(t *testing.T) *breakableStore {
	t.Helper()
	dir := t.TempDir()
	s, err := snapstore.Open(context.Background(), "file://"+dir, snapstore.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return &breakableStore{Store: s, dir: dir}
}

func (b *breakableStore) breakDeltas(t *testing.T) {
	t.Helper()
	deltaDir := filepath.Join(b.dir, "delta")
	if _, err := os.Stat(deltaDir); err == nil {
		require.NoError(t, os.Rename(deltaDir, deltaDir+".aside"))
	}
	require.NoError(t, os.WriteFile(deltaDir, nil, 0o600))
}

func (b *breakableStore) repair(t *testing.T) {
	t.Helper()
	deltaDir := filepath.Join(b.dir, "delta")
	require.NoError(t, os.Remove(deltaDir))
	if _, err := os.Stat(deltaDir + ".aside"); err == nil {
		require.NoError(t, os.Rename(deltaDir+".aside", deltaDir))
	}
}

// Failed uploads keep the events and are retried; nothing is lost and the chain has no gap.
func TestDeltasUploadFailureIsRetried(t *testing.T) {
	eachSource(t, func(t *testing.T, src eventSource) {
		e := startEtcd(t)
		cli := inProcess(t, e)
		store := newBreakableStore(t)
		log, logs := testLog(t)
		start := revisionOf(t, cli)
		want := newLeaseWant()

		run := startDeltasReady(t, deltaConfig(src, e, cli, store.Store, log), logs)
		churn(t, cli, "/before", 40, want)
		waitFor(t, "a delta", func() bool { return newestDelta(t, store.Store) > start })

		store.breakDeltas(t)
		churn(t, cli, "/broken", 60, want)
		waitFor(t, "failed uploads", func() bool { return strings.Count(logs.String(), "delta upload failed") >= 3 })
		store.repair(t)
		last := churn(t, cli, "/after", 40, want)
		waitFor(t, "the deltas to reach the last write", func() bool { return newestDelta(t, store.Store) >= last })
		run.stop(t, nil)

		checkChain(t, store.Store, cli, start+1, last, *want)
	})
}

// When the buffer reaches the memory limit while uploads fail, the watch pauses; once the
// store works again, the taker catches up from etcd's history with no gap.
func TestDeltasMemoryLimitPausesWatch(t *testing.T) {
	eachSource(t, func(t *testing.T, src eventSource) {
		e := startEtcd(t)
		cli := inProcess(t, e)
		store := newBreakableStore(t)
		log, logs := testLog(t)
		cfg := deltaConfig(src, e, cli, store.Store, log)
		cfg.MemoryLimit = 32 << 10
		start := revisionOf(t, cli)
		want := newLeaseWant()

		run := startDeltasReady(t, cfg, logs)
		store.breakDeltas(t)
		churn(t, cli, "/a", 400, want) // far more than 32 KiB of events
		waitFor(t, "the pause", func() bool { return strings.Contains(logs.String(), "reached its memory limit") })
		store.repair(t)
		last := churn(t, cli, "/b", 100, want)
		waitFor(t, "the deltas to reach the last write", func() bool { return newestDelta(t, store.Store) >= last })
		run.stop(t, nil)

		require.Contains(t, logs.String(), "resuming the delta watch")
		checkChain(t, store.Store, cli, start+1, last, *want)
	})
}

// An external member that goes back in history under a running taker (restored from a
// backup, same URLs) breaks the chain instead of extending it with the new history: the
// taker takes a full snapshot and waits until the member passes the store's newest revision.
func TestDeltasExternalMemberWentBack(t *testing.T) {
	cfgA := embeddedtest.NewConfig(t)
	a, err := embed.StartEtcd(cfgA)
	require.NoError(t, err)
	<-a.Server.ReadyNotify()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{cfgA.ListenClientUrls[0].Host}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	require.NoError(t, err)
	defer cli.Close()
	store := memStore(t)
	log, logs := testLog(t)
	spool := t.TempDir()
	cfg := deltaConfig(watchSource, nil, cli, store, log)
	cfg.Full = func(ctx context.Context) (catalog.Snapshot, error) { return FullFromClient(ctx, cli, store, spool) }
	want := newLeaseWant()

	run := startDeltasReady(t, cfg, logs)
	storeRev := churn(t, cli, "/a", 150, want)
	waitFor(t, "the deltas to reach the last write", func() bool { return newestDelta(t, store) >= storeRev })
	a.Close()

	// The same member, restored to an older point: a new data dir, the same URLs.
	cfgB := embeddedtest.NewConfig(t)
	cfgB.ListenClientUrls, cfgB.AdvertiseClientUrls = cfgA.ListenClientUrls, cfgA.AdvertiseClientUrls
	cfgB.ListenPeerUrls, cfgB.AdvertisePeerUrls = cfgA.ListenPeerUrls, cfgA.AdvertisePeerUrls
	cfgB.InitialCluster = cfgA.InitialCluster
	b, err := embed.StartEtcd(cfgB)
	require.NoError(t, err)
	t.Cleanup(b.Close)
	<-b.Server.ReadyNotify()
	waitFor(t, "the chain to break", func() bool { return strings.Contains(logs.String(), "went back in history") })
	waitFor(t, "the suspension", func() bool { return strings.Contains(logs.String(), "deltas are suspended") })
	before := listKind(t, store, catalog.KindDelta)

	last := churn(t, cli, "/b", 220, want)
	require.Greater(t, last, storeRev)
	waitFor(t, "the new chain's deltas", func() bool { return newestDelta(t, store) >= last })
	run.stop(t, nil)

	fulls := listKind(t, store, catalog.KindFull)
	require.Len(t, fulls, 2)
	require.Less(t, fulls[0].Revision, storeRev)
	require.Greater(t, fulls[1].Revision, storeRev)
	for _, d := range listKind(t, store, catalog.KindDelta) {
		require.True(t, slices.Contains(before, d) || d.From > fulls[1].Revision, "delta %s extends the old chain with the new history", d.Key)
	}
	checkChain(t, store, cli, fulls[1].Revision+1, last, *want)
}
