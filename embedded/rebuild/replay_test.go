package rebuild

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/lease"
	"go.etcd.io/etcd/server/v3/storage/backend"
	"go.etcd.io/etcd/server/v3/storage/mvcc"
	"go.uber.org/zap"

	"github.com/etcdbr/etcdbr/embedded"
	"github.com/etcdbr/etcdbr/internal/deltatest"
	"github.com/etcdbr/etcdbr/internal/embeddedtest"
	"github.com/etcdbr/etcdbr/internal/etcdtest"
	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// replayFixture is a source member's full snapshot (a file, with its sha256) and the deltas
// recorded after it (in a file store), with the source's data at every revision.
type replayFixture struct {
	snapPath string
	full     catalog.Snapshot // describes snapPath (not in the store)
	store    *snapstore.Store
	storeDir string
	deltas   []catalog.Snapshot
	dumps    map[int64]etcdtest.Dump // revision -> the source's data
	ttls     deltatest.LeaseTTLs
	last     int64
	// timeTarget is a moment after revision timeRev was observed and before the next one.
	timeTarget time.Time
	timeRev    int64
	// hashKV is the source's HashKV at revision last.
	hashKV *clientv3.HashKVResponse
}

// TestReplayDeltas builds one fixture (a source member, its full snapshot, its deltas) for
// all its parts.
func TestReplayDeltas(t *testing.T) {
	t.Parallel()
	f, err := buildFixture(t)
	require.NoError(t, err)
	t.Run("targets", func(t *testing.T) { testReplayTargets(t, f) })
	t.Run("same db as etcdutl's restore of the replayed snapshot", func(t *testing.T) { testReplayOrder(t, f) })
	t.Run("same db as etcd's own store writes", func(t *testing.T) { testReplaySameAsMVCC(t, f) })
	t.Run("unknown lease TTL", func(t *testing.T) { testReplayUnknownLeaseTTL(t, f) })
	t.Run("rejects", func(t *testing.T) { testReplayRejects(t, f) })
	t.Run("a fetched db moved into the member is etcdutl's copy", func(t *testing.T) { testAdoptedSnapshot(t, f) })
}

func buildFixture(t *testing.T) (*replayFixture, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	cfg := embeddedtest.NewConfig(t)
	e, err := embedded.Start(ctx, cfg, nil)
	if err != nil {
		return nil, err
	}
	defer e.Close()
	cli := e.Client()

	// Before the full snapshot: keys, some with a lease that a delta later uses again.
	l, err := cli.Grant(ctx, 3600)
	if err != nil {
		return nil, err
	}
	for i := range 30 {
		opts := []clientv3.OpOption{}
		if i%5 == 0 {
			opts = append(opts, clientv3.WithLease(l.ID))
		}
		if _, err := cli.Put(ctx, "/churn/k"+string(rune('a'+i%26))+"-pre", "before the full", opts...); err != nil {
			return nil, err
		}
	}
	f := &replayFixture{dumps: map[int64]etcdtest.Dump{}, storeDir: filepath.Join(dir, "store")}
	f.snapPath = filepath.Join(dir, "full.db")
	if err := saveSnapshot(ctx, cfg, f.snapPath); err != nil {
		return nil, err
	}
	resp, err := cli.Get(ctx, "x")
	if err != nil {
		return nil, err
	}
	fullRev := resp.Header.Revision
	f.full = catalog.Snapshot{Kind: catalog.KindFull, Revision: fullRev, Time: time.Now(), Key: catalog.FullName(fullRev, time.Now(), false)}
	if f.store, err = snapstore.Open(ctx, "file://"+f.storeDir, snapstore.Options{}); err != nil {
		return nil, err
	}
	t.Cleanup(func() { f.store.Close() })

	// The first delta starts before the full snapshot, as a taker's may.
	rec := deltatest.Start(ctx, cli, f.store, fullRev-2, deltatest.Options{})
	defer rec.Stop()
	cut := fullRev - 3
	churn := deltatest.Churn{Seed: 7, Ops: 400, Keys: 60}
	res, err := churn.Run(ctx, cli, func(op int, rev int64) error {
		if op == 200 { // a time target between two revisions
			if err := rec.WaitFor(ctx, rev); err != nil {
				return err
			}
			f.timeRev, f.timeTarget = rev, time.Now()
			time.Sleep(5 * time.Millisecond)
		}
		if rev-cut >= 37 {
			d, err := rec.Cut(ctx, rev)
			if err != nil {
				return err
			}
			f.deltas = append(f.deltas, d)
			cut = rev
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if res.Revision > cut {
		d, err := rec.Cut(ctx, res.Revision)
		if err != nil {
			return nil, err
		}
		f.deltas = append(f.deltas, d)
	}
	res.TTLs[int64(l.ID)] = l.TTL
	f.last, f.ttls = res.Revision, deltatest.ExpectedTTLs(res.TTLs, rec.TTLs(), MinLeaseTTL(cfg))
	if f.hashKV, err = hashKV(ctx, cfg, f.last); err != nil {
		return nil, err
	}
	for rev := fullRev; rev <= f.last; rev++ {
		d, err := etcdtest.Take(ctx, cli, rev)
		if err != nil {
			return nil, err
		}
		f.dumps[rev] = d
	}
	return f, nil
}

// saveSnapshot streams the member's snapshot over its client URL (db and sha256) into path.
func saveSnapshot(ctx context.Context, cfg *embed.Config, path string) error {
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{cfg.AdvertiseClientUrls[0].String()}, DialTimeout: 10 * time.Second})
	if err != nil {
		return err
	}
	defer c.Close()
	rc, err := c.Snapshot(ctx)
	if err != nil {
		return err
	}
	defer rc.Close()
	out, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, rc); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// hashKV is the member's HashKV at rev, over its client URL.
func hashKV(ctx context.Context, cfg *embed.Config, rev int64) (*clientv3.HashKVResponse, error) {
	ep := cfg.AdvertiseClientUrls[0].String()
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: 10 * time.Second})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.HashKV(ctx, ep, rev)
}

// copyFile copies the fixture's snapshot: a replay changes its db in place.
func copyFile(t *testing.T, src string) string {
	t.Helper()
	b, err := os.ReadFile(src)
	require.NoError(t, err)
	dst := filepath.Join(t.TempDir(), "snapshot.db")
	require.NoError(t, os.WriteFile(dst, b, 0o600))
	return dst
}

// planFor plans a restore of the fixture to target.
func (f *replayFixture) planFor(t *testing.T, target catalog.Target) catalog.RestorePlan {
	t.Helper()
	p, err := catalog.PlanRestore([]catalog.Snapshot{f.full}, f.deltas, target, nil)
	require.NoError(t, err)
	return p
}

func (f *replayFixture) replayOptions(p catalog.RestorePlan, lg *slog.Logger) ReplayOptions {
	return ReplayOptions{Deltas: p.Deltas, Open: f.store.Open, Stop: p.Target, Reach: p.MinRevision, MustPassTime: p.EndsAtGap, Log: lg}
}

// checkMember starts etcd on cfg and compares its data with the source's at rev.
func (f *replayFixture) checkMember(t *testing.T, cfg *embed.Config, rev int64) {
	t.Helper()
	e := embeddedtest.MustStart(t, embedded.Start, cfg)
	got, err := etcdtest.Take(context.Background(), e.Client(), 0)
	require.NoError(t, err)
	diff := deltatest.Compare(f.dumps[rev], got, f.ttls, 20)
	require.Empty(t, diff, "restored data differs from the source's at revision %d:\n%s", rev, strings.Join(diff, "\n"))
}

// The deltas replayed into the full snapshot give exactly the source's data at every kind
// of target: the full snapshot's own revision, just after it, the end of a delta, inside
// one, a time, the latest point; with and without a revision bump.
func testReplayTargets(t *testing.T, f *replayFixture) {
	require.Greater(t, len(f.deltas), 5)
	fullRev := f.full.Revision
	mid := f.deltas[2].From + (f.deltas[2].Revision-f.deltas[2].From)/2
	for _, tc := range []struct {
		name    string
		target  catalog.Target
		wantRev int64
	}{
		{"full snapshot's revision", catalog.Target{Revision: fullRev}, fullRev},
		{"just after the full snapshot", catalog.Target{Revision: fullRev + 1}, fullRev + 1},
		{"end of a delta", catalog.Target{Revision: f.deltas[1].Revision}, f.deltas[1].Revision},
		{"inside a delta", catalog.Target{Revision: mid}, mid},
		{"a time", catalog.Target{Time: f.timeTarget}, f.timeRev},
		{"latest", catalog.Target{}, f.last},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := f.planFor(t, tc.target)
			cfg := embeddedtest.NewConfig(t)
			res, err := BuildDataDir(context.Background(), copyFile(t, f.snapPath), cfg,
				RestoreOptions{WantRevision: fullRev, Replay: f.replayOptions(p, embeddedtest.Logger(t))}, embeddedtest.Logger(t))
			require.NoError(t, err)
			assert.Equal(t, tc.wantRev, res.Revision)
			if len(p.Deltas) > 0 {
				assert.Equal(t, fullRev, res.Replay.FromRevision)
				assert.Equal(t, tc.wantRev, res.Replay.Revision)
				assert.Equal(t, tc.wantRev-fullRev, res.Replay.Revisions)
				assert.Equal(t, int64(3), res.Replay.Skipped, "the first delta holds the full snapshot's revision and the 2 before")
				assert.Equal(t, !tc.target.Time.IsZero(), res.Replay.PassedTime)
				assert.LessOrEqual(t, res.Replay.Deltas, len(p.Deltas))
			}
			f.checkMember(t, cfg, tc.wantRev)
		})
	}

	// The deltas are read ahead of the writes, but never past the one that holds the target:
	// a damaged delta after it is not even opened, so it cannot fail the restore.
	for _, target := range []int64{f.deltas[1].Revision, mid} {
		t.Run(fmt.Sprintf("a damaged delta after the target %d", target), func(t *testing.T) {
			t.Parallel()
			p := f.planFor(t, catalog.Target{Revision: target})
			last := slices.Index(f.deltas, p.Deltas[len(p.Deltas)-1])
			opts := f.replayOptions(p, embeddedtest.Logger(t))
			opts.Deltas = f.deltas // the damaged one too
			open := flipped(t, f, f.deltas[3], 0.5)
			var mu sync.Mutex
			var opened []int
			opts.Open = func(ctx context.Context, d catalog.Snapshot) (io.ReadCloser, error) {
				mu.Lock()
				opened = append(opened, slices.Index(f.deltas, d))
				mu.Unlock()
				return open(ctx, d)
			}
			cfg := embeddedtest.NewConfig(t)
			res, err := BuildDataDir(context.Background(), copyFile(t, f.snapPath), cfg, RestoreOptions{Replay: opts}, embeddedtest.Logger(t))
			require.NoError(t, err)
			assert.Equal(t, target, res.Revision)
			assert.Equal(t, last+1, res.Replay.Deltas)
			mu.Lock()
			assert.Equal(t, last, slices.Max(opened), "deltas opened: %v", opened)
			mu.Unlock()
			f.checkMember(t, cfg, target)
		})
	}

	t.Run("revision bump after the replay", func(t *testing.T) {
		t.Parallel()
		p := f.planFor(t, catalog.Target{Revision: mid})
		cfg := embeddedtest.NewConfig(t)
		res, err := BuildDataDir(context.Background(), copyFile(t, f.snapPath), cfg,
			RestoreOptions{RevisionBump: 1000, MarkCompacted: true, Replay: f.replayOptions(p, embeddedtest.Logger(t))}, embeddedtest.Logger(t))
		require.NoError(t, err)
		assert.Equal(t, mid, res.Replay.Revision)
		assert.Equal(t, mid+1000, res.Revision)
		e := embeddedtest.MustStart(t, embedded.Start, cfg)
		got, err := etcdtest.Take(context.Background(), e.Client(), 0)
		require.NoError(t, err)
		want := f.dumps[mid]
		want.Revision = mid + 1000
		assert.Empty(t, deltatest.Compare(want, got, f.ttls, 20))
		_, err = e.Client().Get(context.Background(), "x", clientv3.WithRev(mid))
		require.ErrorIs(t, err, rpctypes.ErrCompacted)
	})
}

// BuildDataDir replays into the member etcdutl's restore built from the full snapshot, and
// applies the revision bump itself: the member's db holds exactly, bucket by bucket and byte
// by byte, what etcdutl's restore (with the bump) of the replayed snapshot db holds.
func testReplayOrder(t *testing.T, f *replayFixture) {
	p := f.planFor(t, catalog.Target{})
	for _, tc := range []struct {
		name    string
		bump    uint64
		compact CompactReplay
	}{{"bump 0", 0, CompactAlways}, {"bump 1000, compacted", 1000, CompactAlways}, {"bump 1000, never compacted", 1000, CompactNever}} {
		bump := tc.bump
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			cfg := embeddedtest.NewConfig(t)
			opts := RestoreOptions{RevisionBump: bump, MarkCompacted: bump > 0, CompactReplay: tc.compact}

			// The other order: replay into the snapshot db, then etcdutl's restore of it.
			replayed := stripped(t, f)
			_, err := ReplayDeltas(ctx, replayed, f.replayOptions(p, embeddedtest.Logger(t)))
			require.NoError(t, err)
			other := *cfg
			other.Dir = filepath.Join(t.TempDir(), "other")
			rc, dirs, err := prepareRestore(replayed, &other, opts)
			require.NoError(t, err)
			rc.SkipHashCheck = true
			require.NoError(t, runRestore(zapLogger(&other), rc))
			otherDB := filepath.Join(dirs.stagedData(), "member", "snap", "db")
			if bump > 0 && tc.compact == CompactAlways {
				// A restore that bumps writes the db compacted at the bumped revision: what
				// etcd's own compaction there leaves of etcdutl's.
				compactWithEtcd(t, otherDB)
			}

			opts.Replay = f.replayOptions(p, embeddedtest.Logger(t))
			res, err := BuildDataDir(ctx, copyFile(t, f.snapPath), cfg, opts, embeddedtest.Logger(t))
			require.NoError(t, err)
			assert.Equal(t, f.last+int64(bump), res.Revision)

			want := dumpBuckets(t, otherDB)
			got := dumpBuckets(t, filepath.Join(cfg.Dir, "member", "snap", "db"))
			require.NotEmpty(t, want["key"])
			require.Equal(t, len(want), len(got), "buckets")
			for name, kvs := range want {
				assert.Equal(t, kvs, got[name], "bucket %q", name)
			}
		})
	}
}

// The deltas are written into the db directly, as etcd's mvcc store writes them: the db
// holds exactly, bucket by bucket and byte by byte, what a replay through etcd's own store
// and lessor (the oracle, test-only) writes, with and without a revision bump; etcd starts
// on it and its HashKV at the last revision is the source member's.
func testReplaySameAsMVCC(t *testing.T, f *replayFixture) {
	t.Parallel()
	p := f.planFor(t, catalog.Target{})
	requireRichHistory(t, f, p.Deltas)
	// compact: a replay that ends in a bump writes the db compacted at the bumped revision,
	// bucket by bucket and byte for byte what etcd's own compaction leaves of the replay
	// through etcd's store; one whose bump turns out 0 writes what the replay without
	// compaction writes.
	for _, tc := range []struct {
		bump    int64
		compact bool
	}{{0, false}, {1000, false}, {0, true}, {1000, true}} {
		name := fmt.Sprintf("bump %d", tc.bump)
		if tc.compact {
			name = "compacted, " + name
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			opts := f.replayOptions(p, embeddedtest.Logger(t))
			opts.MinLeaseTTL = defaultMinLeaseTTL
			oracle := stripped(t, f)
			bumpBy := func(int64) int64 { return tc.bump }
			want, err := replayDeltas(ctx, oracle, opts, replayExtras{bump: bumpBy, writer: openMVCCWriter})
			require.NoError(t, err)
			compacted := tc.compact && tc.bump > 0
			if compacted {
				compactWithEtcd(t, oracle)
			}
			direct := stripped(t, f)
			// The spool freed after every few records read: freeing what was not read yet
			// would change what is written.
			got, err := replayDeltas(ctx, direct, opts, replayExtras{bump: bumpBy, compact: tc.compact, spoolRelease: 3000})
			require.NoError(t, err)
			assert.Equal(t, f.last, got.Revision)
			want.Duration, got.Duration = 0, 0
			assert.Equal(t, want, got)
			wantDB, gotDB := dumpBuckets(t, oracle), dumpBuckets(t, direct)
			if compacted {
				// Fewer entries than revisions replayed: the compaction took some away.
				require.Less(t, len(wantDB["key"]), int(f.last-f.full.Revision))
			} else {
				require.Greater(t, len(wantDB["key"]), int(f.last-f.full.Revision))
			}
			require.NotEmpty(t, wantDB["lease"])
			require.Equal(t, len(wantDB), len(gotDB), "buckets")
			for name, kvs := range wantDB {
				assert.Equal(t, kvs, gotDB[name], "bucket %q", name)
			}
			entries, err := os.ReadDir(filepath.Dir(direct))
			require.NoError(t, err)
			require.Len(t, entries, 1, "the spool and the compacted db are gone, the db replaced: %v", entries)
			// bbolt's own check: every page reachable or free, the freelist right.
			db, err := bolt.Open(direct, 0o600, nil)
			require.NoError(t, err)
			defer db.Close()
			require.NoError(t, db.View(func(tx *bolt.Tx) error {
				for err := range tx.Check() {
					return err
				}
				return nil
			}))
		})
	}
	t.Run("etcd starts on it with the source's HashKV", func(t *testing.T) {
		t.Parallel()
		cfg := embeddedtest.NewConfig(t)
		_, err := BuildDataDir(context.Background(), copyFile(t, f.snapPath), cfg,
			RestoreOptions{Replay: f.replayOptions(p, embeddedtest.Logger(t))}, embeddedtest.Logger(t))
		require.NoError(t, err)
		embeddedtest.MustStart(t, embedded.Start, cfg)
		got, err := hashKV(context.Background(), cfg, f.last)
		require.NoError(t, err)
		assert.Equal(t, f.hashKV.Hash, got.Hash, "HashKV at revision %d", f.last)
		assert.Equal(t, f.hashKV.CompactRevision, got.CompactRevision)
		assert.Equal(t, f.hashKV.HashRevision, got.HashRevision)
	})
}

// requireRichHistory checks that the deltas hold what the comparison with etcd's store
// must cover: revisions of several events with puts and deletes (multi-op transactions,
// range deletes, lease revocations), puts with a lease, overwrites, re-creations.
func requireRichHistory(t *testing.T, f *replayFixture, deltas []catalog.Snapshot) {
	t.Helper()
	var multi, multiDelete, leased, overwrite, recreate int
	for _, d := range deltas {
		rc, err := f.store.Open(context.Background(), d)
		require.NoError(t, err)
		dec, err := snapstore.NewDeltaDecoder(rc)
		require.NoError(t, err)
		for {
			_, rev, err := dec.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			require.NoError(t, err)
			if rev == nil {
				continue
			}
			deletes := 0
			for _, ev := range rev.Events {
				switch {
				case ev.Type == mvccpb.DELETE:
					deletes++
				case ev.Kv.Lease != 0:
					leased++
				case ev.Kv.Version > 1:
					overwrite++
				case ev.Kv.CreateRevision == rev.Revision && ev.Kv.Version == 1 && strings.HasPrefix(string(ev.Kv.Key), "/churn/k0"):
					recreate++
				}
			}
			if len(rev.Events) > 1 {
				multi++
				if deletes > 1 || (deletes > 0 && deletes < len(rev.Events)) {
					multiDelete++
				}
			}
		}
		require.NoError(t, rc.Close())
	}
	t.Logf("revisions of several events %d (with deletes %d), lease puts %d, overwrites %d, creations %d", multi, multiDelete, leased, overwrite, recreate)
	require.Positive(t, multi)
	require.Positive(t, multiDelete)
	require.Positive(t, leased)
	require.Positive(t, overwrite)
	require.Positive(t, recreate)
}

// dumpBuckets reads every bucket of the bbolt db at path: bucket -> key -> value.
func dumpBuckets(t *testing.T, path string) map[string]map[string]string {
	t.Helper()
	db, err := bolt.Open(path, 0o400, &bolt.Options{ReadOnly: true})
	require.NoError(t, err)
	defer db.Close()
	out := map[string]map[string]string{}
	require.NoError(t, db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			kvs := map[string]string{}
			out[string(name)] = kvs
			return b.ForEach(func(k, v []byte) error {
				kvs[string(k)] = string(v)
				return nil
			})
		})
	}))
	return out
}

// A lease whose TTL the taker could not learn is granted with the member's minimum TTL,
// derived from its election timeout, and the log says so.
func testReplayUnknownLeaseTTL(t *testing.T, f *replayFixture) {
	t.Parallel()
	store := openStore(t)
	const id = 0x7a11
	rev := f.full.Revision + 1
	writeRaw(t, store, rev, rev, []snapstore.Lease{{ID: id, TTL: 0}}, []snapstore.Revision{{Revision: rev, Time: time.Now(), Events: []*mvccpb.Event{
		{Type: mvccpb.PUT, Kv: &mvccpb.KeyValue{Key: []byte("/leased"), Value: []byte("v"), CreateRevision: rev, ModRevision: rev, Version: 1, Lease: id}},
	}}})
	deltas, err := store.List(context.Background(), catalog.KindDelta)
	require.NoError(t, err)

	cfg := embeddedtest.NewConfig(t)
	cfg.ElectionMs = 3000 // minimum lease TTL: ceil(1.5 * 3s) = 5s
	require.Equal(t, int64(5), MinLeaseTTL(cfg))
	var logs bytes.Buffer
	lg := slog.New(slog.NewTextHandler(&logs, nil))
	res, err := BuildDataDir(context.Background(), copyFile(t, f.snapPath), cfg,
		RestoreOptions{Replay: ReplayOptions{Deltas: deltas, Open: store.Open, Log: lg}}, lg)
	require.NoError(t, err)
	assert.Equal(t, 1, res.Replay.Leases)
	assert.Equal(t, 1, res.Replay.UnknownTTL)
	assert.Contains(t, logs.String(), "minimum TTL")
	assert.Contains(t, logs.String(), "7a11")

	e := embeddedtest.MustStart(t, embedded.Start, cfg)
	ttl, err := e.Client().TimeToLive(context.Background(), id, clientv3.WithAttachedKeys())
	require.NoError(t, err)
	assert.Equal(t, int64(5), ttl.GrantedTTL)
	require.Len(t, ttl.Keys, 1)
	assert.Equal(t, "/leased", string(ttl.Keys[0]))
}

// Bad deltas fail the replay with an error that names the object, before anything is
// swapped in; corrupt or malformed ones are reported so that a restore can leave them out.
func testReplayRejects(t *testing.T, f *replayFixture) {
	t.Parallel()
	fullRev := f.full.Revision
	put := func(key string, rev, create, version, lease int64) *mvccpb.Event {
		return &mvccpb.Event{Type: mvccpb.PUT, Kv: &mvccpb.KeyValue{Key: []byte(key), Value: []byte("v"), CreateRevision: create, ModRevision: rev, Version: version, Lease: lease}}
	}
	one := func(rev int64, evs ...*mvccpb.Event) []snapstore.Revision {
		return []snapstore.Revision{{Revision: rev, Time: time.Now(), Events: evs}}
	}
	r1 := fullRev + 1

	tests := []struct {
		name  string
		setup func(t *testing.T) (deltas []catalog.Snapshot, open func(context.Context, catalog.Snapshot) (io.ReadCloser, error), stop catalog.Target, reach int64)
		bad   error // wrapped by the error, and the object is reported bad; nil: not an object's fault
		want  string
	}{
		{"a flipped byte", func(t *testing.T) ([]catalog.Snapshot, func(context.Context, catalog.Snapshot) (io.ReadCloser, error), catalog.Target, int64) {
			return f.deltas, flipped(t, f, f.deltas[2], 0.5), catalog.Target{}, f.last
		}, snapstore.ErrCorrupt, f.deltas[2].Key},
		{"a flipped byte after the target, in the delta that holds it", func(t *testing.T) ([]catalog.Snapshot, func(context.Context, catalog.Snapshot) (io.ReadCloser, error), catalog.Target, int64) {
			return f.deltas, flipped(t, f, f.deltas[1], 0.9), catalog.Target{Revision: f.deltas[1].From + 1}, f.deltas[1].From + 1
		}, snapstore.ErrCorrupt, f.deltas[1].Key},
		{"a delta of another history", func(t *testing.T) ([]catalog.Snapshot, func(context.Context, catalog.Snapshot) (io.ReadCloser, error), catalog.Target, int64) {
			s := openStore(t)
			// In the source this key existed already: here it is new, so its version differs.
			writeRaw(t, s, r1, r1, nil, one(r1, put("/churn/brand-new", r1, r1-5, 3, 0)))
			return list(t, s), s.Open, catalog.Target{}, r1
		}, snapstore.ErrMalformedDelta, "does not apply to the db as it did to the source"},
		{"a delete of a key that does not exist", func(t *testing.T) ([]catalog.Snapshot, func(context.Context, catalog.Snapshot) (io.ReadCloser, error), catalog.Target, int64) {
			s := openStore(t)
			writeRaw(t, s, r1, r1, nil, one(r1, &mvccpb.Event{Type: mvccpb.DELETE, Kv: &mvccpb.KeyValue{Key: []byte("/nope"), ModRevision: r1}}))
			return list(t, s), s.Open, catalog.Target{}, r1
		}, snapstore.ErrMalformedDelta, "the key does not exist"},
		{"a lease without its record", func(t *testing.T) ([]catalog.Snapshot, func(context.Context, catalog.Snapshot) (io.ReadCloser, error), catalog.Target, int64) {
			s := openStore(t)
			writeRaw(t, s, r1, r1, nil, one(r1, put("/leased", r1, r1, 1, 0x5151)))
			return list(t, s), s.Open, catalog.Target{}, r1
		}, snapstore.ErrMalformedDelta, "no lease record"},
		{"content that is not what the name says", func(t *testing.T) ([]catalog.Snapshot, func(context.Context, catalog.Snapshot) (io.ReadCloser, error), catalog.Target, int64) {
			s := openStore(t)
			w, err := s.Create(context.Background(), catalog.Snapshot{Kind: catalog.KindDelta, From: r1, Revision: r1 + 1, Time: time.Now()})
			require.NoError(t, err)
			enc, err := snapstore.NewDeltaEncoder(w, r1, r1)
			require.NoError(t, err)
			require.NoError(t, enc.Revision(one(r1, put("/k", r1, r1, 1, 0))[0]))
			require.NoError(t, enc.Close())
			_, err = w.Commit()
			require.NoError(t, err)
			return list(t, s), s.Open, catalog.Target{}, r1
		}, snapstore.ErrMalformedDelta, "its name says"},
		{"a missing delta", func(t *testing.T) ([]catalog.Snapshot, func(context.Context, catalog.Snapshot) (io.ReadCloser, error), catalog.Target, int64) {
			return []catalog.Snapshot{f.deltas[0], f.deltas[2]}, f.store.Open, catalog.Target{}, f.deltas[2].Revision
		}, nil, "continues at revision"},
		{"a delta that is gone", func(t *testing.T) ([]catalog.Snapshot, func(context.Context, catalog.Snapshot) (io.ReadCloser, error), catalog.Target, int64) {
			gone := f.deltas[0]
			gone.Key = catalog.DeltaName(gone.From, gone.Revision, gone.Time.Add(time.Hour), false)
			return []catalog.Snapshot{gone}, f.store.Open, catalog.Target{}, gone.Revision
		}, snapstore.ErrNotFound, "not found"},
		{"ending below what the store promised", func(t *testing.T) ([]catalog.Snapshot, func(context.Context, catalog.Snapshot) (io.ReadCloser, error), catalog.Target, int64) {
			return f.deltas[:2], f.store.Open, catalog.Target{}, f.deltas[2].Revision
		}, nil, "below revision " + strconv.FormatInt(f.deltas[2].Revision, 10) + ", the newest in the store"},
		{"a target revision the deltas do not reach", func(t *testing.T) ([]catalog.Snapshot, func(context.Context, catalog.Snapshot) (io.ReadCloser, error), catalog.Target, int64) {
			return f.deltas[:2], f.store.Open, catalog.Target{Revision: f.deltas[2].From}, 0
		}, nil, "not at the target revision"},
		{"a target revision before the full snapshot", func(t *testing.T) ([]catalog.Snapshot, func(context.Context, catalog.Snapshot) (io.ReadCloser, error), catalog.Target, int64) {
			return f.deltas, f.store.Open, catalog.Target{Revision: fullRev - 1}, 0
		}, nil, "after the target revision"},
	}
	for _, tc := range tests {
		for _, bump := range []uint64{0, 1000} { // bumped: the compacted replay
			t.Run(fmt.Sprintf("%s, bump %d", tc.name, bump), func(t *testing.T) {
				t.Parallel()
				testReplayRejected(t, f, bump, tc.setup, tc.bad, tc.want)
			})
		}
	}

	t.Run("a time the deltas do not pass before a gap", func(t *testing.T) {
		t.Parallel()
		_, err := ReplayDeltas(context.Background(), stripped(t, f), ReplayOptions{
			Deltas: f.deltas[:2], Open: f.store.Open, Stop: catalog.Target{Time: time.Now().Add(time.Hour)}, MustPassTime: true,
		})
		require.Error(t, err)
		assert.Contains(t, err.Error(), "the state at that time is not in the store")
	})

	t.Run("a full snapshot of another revision than its name", func(t *testing.T) {
		t.Parallel()
		cfg := embeddedtest.NewConfig(t)
		_, err := BuildDataDir(context.Background(), copyFile(t, f.snapPath), cfg, RestoreOptions{WantRevision: fullRev + 1}, embeddedtest.Logger(t))
		require.ErrorIs(t, err, ErrWrongRevision)
		assert.NoDirExists(t, cfg.Dir)
	})

	t.Run("a full disk", func(t *testing.T) {
		// The db on a file system that fills up while the deltas replay: the error is the
		// disk's, naming it, never the delta's (a restore would record an intact object as
		// damaged and leave it out of every plan after).
		t.Parallel()
		mnt := mountTmpfs(t, 4<<20)
		db := filepath.Join(mnt, "db")
		b, err := os.ReadFile(stripped(t, f))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(db, b, 0o600))
		s := bigDeltas(t, fullRev)
		_, err = ReplayDeltas(context.Background(), db, ReplayOptions{Deltas: list(t, s), Open: s.Open})
		require.Error(t, err)
		assert.Contains(t, err.Error(), "no space left on device")
		assert.NotErrorIs(t, err, snapstore.ErrMalformedDelta)
		assert.NotErrorIs(t, err, snapstore.ErrCorrupt)
		// The compacted replay fills the disk with its spool: the same.
		require.NoError(t, os.WriteFile(db, b, 0o600))
		_, err = replayDeltas(context.Background(), db, ReplayOptions{Deltas: list(t, s), Open: s.Open},
			replayExtras{compact: true, bump: func(int64) int64 { return 1000 }})
		require.Error(t, err)
		assert.Contains(t, err.Error(), "no space left on device")
		assert.NotErrorIs(t, err, snapstore.ErrMalformedDelta)
		assert.NotErrorIs(t, err, snapstore.ErrCorrupt)
		assert.NoFileExists(t, db+".spool")
		assert.NoFileExists(t, db+".compacted")
	})

	t.Run("room for the replay, not for the compacted db", func(t *testing.T) {
		// The compacted replay needs a spool and a second db beside the full snapshot's;
		// on a file system with room for the plain replay only, it replays into the full
		// snapshot's db instead and succeeds.
		t.Parallel()
		b, err := os.ReadFile(stripped(t, f))
		require.NoError(t, err)
		// The db and the 16 MiB the deltas add, with room to spare.
		db := filepath.Join(mountTmpfs(t, len(b)+24<<20), "db")
		require.NoError(t, os.WriteFile(db, b, 0o600))
		s := bigDeltas(t, fullRev)
		var logs bytes.Buffer
		res, err := replayDeltas(context.Background(), db, ReplayOptions{Deltas: list(t, s), Open: s.Open, Log: slog.New(slog.NewTextHandler(&logs, nil))},
			replayExtras{compact: true, bump: func(int64) int64 { return 1000 }})
		require.NoError(t, err, "logs:\n%s", logs.String())
		assert.Equal(t, r1+63, res.Revision)
		assert.Contains(t, logs.String(), "no room to write the replayed db compacted")
		got := dumpBuckets(t, db)
		for i := range 64 {
			assert.Contains(t, got["key"], string(mvcc.RevToBytes(mvcc.Revision{Main: r1 + int64(i)}, mvcc.NewRevBytes())))
		}
		// Replayed into the full snapshot's db: the bump's compaction scheduled, not done.
		assert.NotContains(t, got["meta"], "finishedCompactRev")
		assert.Contains(t, got["meta"], "scheduledCompactRev")
		assert.NoFileExists(t, db+".spool")
		assert.NoFileExists(t, db+".compacted")
	})

	t.Run("a cancelled replay", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := ReplayDeltas(ctx, stripped(t, f), ReplayOptions{Deltas: f.deltas, Open: f.store.Open})
		require.ErrorIs(t, err, context.Canceled)
	})
}

// mountTmpfs mounts a tmpfs of size bytes (rounded up to MiB) of its own, unmounted at
// the end of the test: a file system to fill. It needs root: without, the test fails in CI
// and is skipped elsewhere.
func mountTmpfs(t *testing.T, size int) string {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("a full file system needs a tmpfs of its own: mount needs root, and CI runs as root")
		}
		t.Skip("a full file system needs a tmpfs of its own: mount needs root")
	}
	mnt := t.TempDir()
	opt := fmt.Sprintf("size=%dm", (size+1<<20-1)>>20)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", opt, "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount a tmpfs (%s): %v: %s", opt, err, out)
	}
	t.Cleanup(func() { _ = syscall.Unmount(mnt, syscall.MNT_DETACH) })
	return mnt
}

// bigDeltas is a store of one delta after revision from: 64 revisions of 256 KiB values,
// 16 MiB in a db, a few KiB in the store.
func bigDeltas(t *testing.T, from int64) *snapstore.Store {
	t.Helper()
	s := openStore(t)
	big := strings.Repeat("x", 256<<10)
	var revs []snapstore.Revision
	for i := range int64(64) {
		rev := from + 1 + i
		revs = append(revs, snapstore.Revision{Revision: rev, Time: time.Now(), Events: []*mvccpb.Event{{Type: mvccpb.PUT,
			Kv: &mvccpb.KeyValue{Key: fmt.Appendf(nil, "/big/%02d", i), Value: []byte(big), CreateRevision: rev, ModRevision: rev, Version: 1}}}})
	}
	writeRaw(t, s, from+1, from+64, nil, revs)
	return s
}

// stripped is a copy of the fixture's snapshot db without its sha256.
func stripped(t *testing.T, f *replayFixture) string {
	t.Helper()
	b, err := os.ReadFile(f.snapPath)
	require.NoError(t, err)
	require.Equal(t, 32, len(b)%512, "the fixture's snapshot ends with its sha256")
	p := filepath.Join(t.TempDir(), "snapshot.db")
	require.NoError(t, os.WriteFile(p, b[:len(b)-32], 0o600))
	return p
}

func openStore(t *testing.T) *snapstore.Store {
	t.Helper()
	s, err := snapstore.Open(context.Background(), "file://"+t.TempDir(), snapstore.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s
}

func list(t *testing.T, s *snapstore.Store) []catalog.Snapshot {
	t.Helper()
	ds, err := s.List(context.Background(), catalog.KindDelta)
	require.NoError(t, err)
	return ds
}

// writeRaw stores one delta with exactly the given records: leases first.
func writeRaw(t *testing.T, s *snapstore.Store, from, to int64, leases []snapstore.Lease, revs []snapstore.Revision) {
	t.Helper()
	w, err := s.Create(context.Background(), catalog.Snapshot{Kind: catalog.KindDelta, From: from, Revision: to, Time: time.Now()})
	require.NoError(t, err)
	defer w.Abort()
	enc, err := snapstore.NewDeltaEncoder(w, from, to)
	require.NoError(t, err)
	for _, l := range leases {
		require.NoError(t, enc.Lease(l))
	}
	for _, r := range revs {
		require.NoError(t, enc.Revision(r))
	}
	require.NoError(t, enc.Close())
	_, err = w.Commit()
	require.NoError(t, err)
}

// flipped returns an Open that serves the fixture's objects, with one byte of d flipped at
// the given fraction of its compressed bytes.
func flipped(t *testing.T, f *replayFixture, d catalog.Snapshot, at float64) func(context.Context, catalog.Snapshot) (io.ReadCloser, error) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(f.storeDir, filepath.FromSlash(d.Key)))
	require.NoError(t, err)
	raw[int(float64(len(raw)-60)*at)] ^= 0x08 // stay clear of the 56-byte trailer
	s := openStore(t)
	dir := strings.TrimPrefix(s.URL(), "file://")
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "delta"), 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(dir, filepath.FromSlash(d.Key)), raw, 0o600))
	return func(ctx context.Context, snap catalog.Snapshot) (io.ReadCloser, error) {
		if snap.Key == d.Key {
			return s.Open(ctx, snap)
		}
		return f.store.Open(ctx, snap)
	}
}

// A full snapshot of a member that holds no key yet is at revision 1, as etcd's store
// counts it: the deltas after it are written exactly as etcd's own store writes them.
func TestReplayIntoEmptySnapshot(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg := embeddedtest.NewConfig(t)
	e := embeddedtest.MustStart(t, embedded.Start, cfg)
	snap := filepath.Join(t.TempDir(), "full.db")
	require.NoError(t, saveSnapshot(ctx, cfg, snap))
	e.Close()
	raw, err := os.ReadFile(snap)
	require.NoError(t, err)

	put := func(key string, rev, create, version, lease int64) *mvccpb.Event {
		return &mvccpb.Event{Type: mvccpb.PUT, Kv: &mvccpb.KeyValue{Key: []byte(key), Value: []byte("v" + key), CreateRevision: create, ModRevision: rev, Version: version, Lease: lease}}
	}
	del := func(key string, rev int64) *mvccpb.Event {
		return &mvccpb.Event{Type: mvccpb.DELETE, Kv: &mvccpb.KeyValue{Key: []byte(key), ModRevision: rev}}
	}
	now := time.Now()
	store := openStore(t)
	writeRaw(t, store, 2, 5, []snapstore.Lease{{ID: 0x51, TTL: 60}}, []snapstore.Revision{
		{Revision: 2, Time: now, Events: []*mvccpb.Event{put("/a", 2, 2, 1, 0)}},
		{Revision: 3, Time: now, Events: []*mvccpb.Event{put("/a", 3, 2, 2, 0x51), put("/b", 3, 3, 1, 0), put("/c", 3, 3, 1, 0)}},
		{Revision: 4, Time: now, Events: []*mvccpb.Event{del("/a", 4), del("/b", 4)}},
		{Revision: 5, Time: now, Events: []*mvccpb.Event{put("/a", 5, 5, 1, 0), del("/c", 5)}},
	})
	dbs := map[string]string{}
	for name, writer := range map[string]func(string, ReplayOptions) (revisionWriter, error){"oracle": openMVCCWriter, "direct": nil} {
		path := filepath.Join(t.TempDir(), "db")
		require.NoError(t, os.WriteFile(path, raw[:len(raw)-32], 0o600))
		res, err := replayDeltas(ctx, path, ReplayOptions{Deltas: list(t, store), Open: store.Open, MinLeaseTTL: 2},
			replayExtras{writer: writer})
		require.NoError(t, err, name)
		assert.Equal(t, int64(1), res.FromRevision, name)
		assert.Equal(t, int64(5), res.Revision, name)
		dbs[name] = path
	}
	want, got := dumpBuckets(t, dbs["oracle"]), dumpBuckets(t, dbs["direct"])
	require.Len(t, want["key"], 8)
	require.Len(t, want["lease"], 1)
	assert.Equal(t, want, got)
}

func TestRevisionsToReplay(t *testing.T) {
	d := func(from, to int64) catalog.Snapshot {
		return catalog.Snapshot{Kind: catalog.KindDelta, From: from, Revision: to}
	}
	chain := []catalog.Snapshot{d(95, 120), d(121, 150), d(151, 200)}
	for _, tc := range []struct {
		name   string
		deltas []catalog.Snapshot
		from   int64
		stop   catalog.Target
		want   int64
	}{
		{"all, the first delta starting inside the db", chain, 100, catalog.Target{}, 100},
		{"to a revision", chain, 100, catalog.Target{Revision: 130}, 30},
		{"a time: the chain's end bounds it", chain, 100, catalog.Target{Time: time.Unix(1, 0)}, 100},
		{"no deltas", nil, 100, catalog.Target{}, 0},
		{"deltas the db holds", chain[:1], 130, catalog.Target{}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, revisionsToReplay(tc.deltas, tc.from, tc.stop))
		})
	}
}

// testReplayRejected restores the fixture's snapshot with the deltas of setup (a bump: the
// compacted replay) and checks that the restore fails as a rejected replay must: the error
// says want, names the bad object when bad says it is one, and nothing is left behind.
func testReplayRejected(t *testing.T, f *replayFixture, bump uint64,
	setup func(t *testing.T) ([]catalog.Snapshot, func(context.Context, catalog.Snapshot) (io.ReadCloser, error), catalog.Target, int64),
	bad error, want string) {
	t.Helper()
	deltas, open, stop, reach := setup(t)
	cfg := embeddedtest.NewConfig(t)
	_, err := BuildDataDir(context.Background(), copyFile(t, f.snapPath), cfg,
		RestoreOptions{RevisionBump: bump, MarkCompacted: bump > 0, CompactReplay: CompactAlways,
			Replay: ReplayOptions{Deltas: deltas, Open: open, Stop: stop, Reach: reach}},
		embeddedtest.Logger(t))
	require.Error(t, err)
	t.Log(err)
	assert.Contains(t, err.Error(), want)
	obj, isBad := BadObject(err)
	if bad == nil || errors.Is(bad, snapstore.ErrNotFound) {
		assert.False(t, isBad, "reported as a bad object: %s", obj.Key)
	} else {
		require.True(t, isBad, "not reported as a bad object")
		assert.ErrorIs(t, err, bad)
		assert.Contains(t, deltas, obj)
	}
	if bad != nil {
		assert.ErrorIs(t, err, bad)
	}
	assert.NoDirExists(t, cfg.Dir, "a failed restore built a data dir")
	assert.NoDirExists(t, StagingDir(cfg.Dir))
}

// compactWithEtcd opens the db at path with etcd's own backend, lessor and mvcc store,
// which resume the compaction the db has scheduled, and waits until etcd records it
// finished.
func compactWithEtcd(t *testing.T, path string) {
	t.Helper()
	lg := zap.NewNop()
	bcfg := backend.DefaultBackendConfig(lg)
	bcfg.Path = path
	bcfg.UnsafeNoFsync = true
	be := backend.New(bcfg)
	lessor := lease.NewLessor(lg, be, noCluster{}, lease.LessorConfig{MinLeaseTTL: defaultMinLeaseTTL})
	kv := mvcc.NewStore(lg, be, lessor, mvcc.StoreConfig{})
	rtx := be.ReadTx()
	rtx.RLock()
	scheduled, ok := mvcc.UnsafeReadScheduledCompact(rtx)
	rtx.RUnlock()
	require.True(t, ok, "the db has no compaction scheduled")
	require.Eventually(t, func() bool {
		be.ForceCommit()
		tx := be.ReadTx()
		tx.RLock()
		defer tx.RUnlock()
		finished, ok := mvcc.UnsafeReadFinishedCompact(tx)
		return ok && finished == scheduled
	}, time.Minute, 20*time.Millisecond, "etcd's compaction of revision %d did not finish", scheduled)
	require.NoError(t, kv.Close())
	lessor.Stop()
	require.NoError(t, be.Close())
}
