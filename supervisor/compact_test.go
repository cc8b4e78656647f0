package supervisor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/storage/schema"

	"github.com/etcdbr/etcdbr/backup"
	"github.com/etcdbr/etcdbr/embedded"
	"github.com/etcdbr/etcdbr/embedded/rebuild"
	"github.com/etcdbr/etcdbr/internal/deltatest"
	"github.com/etcdbr/etcdbr/internal/embeddedtest"
	"github.com/etcdbr/etcdbr/internal/etcdtest"
	"github.com/etcdbr/etcdbr/internal/faultstore"
	"github.com/etcdbr/etcdbr/internal/storetest"
	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// compactFixture is a store with one full snapshot, taken after an etcd compaction, and a
// chain of deltas after it from a real member: puts, overwrites, deletes and range deletes,
// multi-op transactions, leases granted, attached, moved, revoked and one that expired,
// and another etcd compaction in the middle of the chain; with the member's data at a
// revision inside the chain and at its end.
type compactFixture struct {
	dir          string // the file store's directory
	full         catalog.Snapshot
	deltas       []catalog.Snapshot
	mid          int64 // a revision inside a delta
	atMid, final etcdtest.Dump
	compacted    int64 // the etcd compaction before the full snapshot
	ttls         deltatest.LeaseTTLs
}

func buildCompactFixture(t *testing.T) *compactFixture {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cfg := embeddedtest.NewConfig(t)
	e, err := embedded.Start(ctx, cfg, nil)
	require.NoError(t, err)
	defer e.Close()
	cli := e.Client()
	f := &compactFixture{dir: filepath.Join(t.TempDir(), "store")}
	store, err := snapstore.Open(ctx, "file://"+f.dir, snapstore.Options{})
	require.NoError(t, err)
	defer store.Close()

	rev, err := etcdtest.Workload{Seed: 5, Keys: 300, Overwrites: 100, Deletes: 20, LeasedKeys: 10}.Run(ctx, cli)
	require.NoError(t, err)
	f.compacted = rev - 60
	_, err = cli.Compact(ctx, f.compacted, clientv3.WithCompactPhysical())
	require.NoError(t, err)
	f.full, err = backup.FullFromBackend(ctx, e.Server().Backend(), store)
	require.NoError(t, err)
	// The first delta starts before the full snapshot, as a taker's often does.
	rec := deltatest.Start(ctx, cli, store, f.full.Revision-3, deltatest.Options{})
	defer rec.Stop()
	cut := f.full.Revision - 4
	res, err := deltatest.Churn{Seed: 17, Ops: 260, Keys: 70, Expiring: 1}.Run(ctx, cli, func(op int, rev int64) error {
		switch {
		case op >= 100 && f.mid == 0:
			f.mid = rev
			if f.atMid, err = etcdtest.Take(ctx, cli, 0); err != nil {
				return err
			}
		case op >= 160 && op < 170:
			// An etcd compaction inside the chain: deltas hold events, so a restore never
			// sees it; the compacted full snapshot must not either.
			if _, err := cli.Compact(ctx, rev-10); err != nil {
				return err
			}
		}
		if rev-cut >= 25 {
			d, err := rec.Cut(ctx, rev)
			if err != nil {
				return err
			}
			f.deltas = append(f.deltas, d)
			cut = rev
		}
		return nil
	})
	require.NoError(t, err)
	d, err := rec.Cut(ctx, res.Revision)
	require.NoError(t, err)
	f.deltas = append(f.deltas, d)
	f.final, err = etcdtest.Take(ctx, cli, 0)
	require.NoError(t, err)
	granted, err := deltatest.GrantedTTLs(ctx, cli, res.TTLs)
	require.NoError(t, err)
	f.ttls = deltatest.ExpectedTTLs(granted, rec.TTLs(), rebuild.MinLeaseTTL(cfg))
	require.Greater(t, len(f.deltas), 6)
	require.Less(t, f.full.Revision, f.mid)
	require.Less(t, f.mid, f.final.Revision)
	return f
}

// copyStore gives a test its own copy of the fixture's store, opened with opts.
func (f *compactFixture) copyStore(t *testing.T, opts snapstore.Options) (*snapstore.Store, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "store")
	require.NoError(t, os.CopyFS(dir, os.DirFS(f.dir)))
	s, err := snapstore.Open(context.Background(), "file://"+dir, opts)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s, dir
}

// compactOpts are the options of the tests' compactions: no wait for garbage collection
// (none runs), the scratch dir in the test's temporary dir.
func compactOpts(t *testing.T, target catalog.Target, lg *slog.Logger) CompactOptions {
	return CompactOptions{Target: target, SpoolDir: t.TempDir(), LockSettle: time.Millisecond, Log: lg}
}

// memberState is what etcd reports after starting on a restored data dir, and what the
// restored db holds (read before etcd starts: etcd's start changes its meta bucket).
type memberState struct {
	dump                etcdtest.Dump
	hash                uint32
	compactRev, hashRev int64
	keyBucket, leaseBkt map[string]string
	finished, scheduled string
}

// restoreAndRead restores the store to target into a new data dir, starts etcd on it and
// reads its state.
func restoreAndRead(t *testing.T, store *snapstore.Store, target catalog.Target) (memberState, RestoreResult) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := embeddedtest.NewConfig(t)
	res, err := Restore(ctx, store, cfg, target, rebuild.RestoreOptions{}, embeddedtest.Logger(t))
	require.NoError(t, err)
	var st memberState
	buckets := readBuckets(t, filepath.Join(cfg.Dir, "member", "snap", "db"))
	st.keyBucket, st.leaseBkt = buckets[string(schema.Key.Name())], buckets[string(schema.Lease.Name())]
	meta := buckets[string(schema.Meta.Name())]
	st.finished, st.scheduled = meta[string(schema.FinishedCompactKeyName)], meta[string(schema.ScheduledCompactKeyName)]
	e, err := embedded.Start(ctx, cfg, nil)
	require.NoError(t, err)
	defer e.Close()
	st.dump, err = etcdtest.Take(ctx, e.Client(), 0)
	require.NoError(t, err)
	st.hash, st.compactRev, st.hashRev = memberHashKV(t, ctx, cfg)
	return st, res
}

// memberHashKV is the member's HashKV at its current revision.
func memberHashKV(t *testing.T, ctx context.Context, cfg *embed.Config) (hash uint32, compactRev, rev int64) {
	t.Helper()
	ep := cfg.AdvertiseClientUrls[0].String()
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: 10 * time.Second})
	require.NoError(t, err)
	defer c.Close()
	resp, err := c.HashKV(ctx, ep, 0)
	require.NoError(t, err)
	return resp.Hash, resp.CompactRevision, resp.Header.Revision
}

// readBuckets reads every bucket of the bbolt db at path: bucket -> key -> value.
func readBuckets(t *testing.T, path string) map[string]map[string]string {
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

// longLeases leaves out of a dump the leases that may expire while a test reads it (those
// granted with a short TTL; their keys are compared all the same).
func longLeases(d etcdtest.Dump) etcdtest.Dump {
	out := d
	out.Leases = map[int64]int64{}
	for id, ttl := range d.Leases {
		if ttl >= 60 {
			out.Leases[id] = ttl
		}
	}
	return out
}

// requireSameMember checks that two restored members hold the same data and report the
// same revision, compaction and HashKV.
func requireSameMember(t *testing.T, chain, compacted memberState) {
	t.Helper()
	diff := etcdtest.Diff(longLeases(chain.dump), longLeases(compacted.dump), 20)
	require.Empty(t, diff, "the compacted full snapshot restores other data than the chain:\n%s", strings.Join(diff, "\n"))
	assert.Equal(t, chain.keyBucket, compacted.keyBucket, "the key buckets differ")
	assert.Equal(t, chain.leaseBkt, compacted.leaseBkt, "the lease buckets (IDs and TTLs) differ")
	assert.Equal(t, chain.finished, compacted.finished, "the finished compaction differs")
	assert.Equal(t, chain.scheduled, compacted.scheduled, "the scheduled compaction differs")
	assert.Equal(t, chain.hashRev, compacted.hashRev, "etcd reports another revision")
	assert.Equal(t, chain.compactRev, compacted.compactRev, "etcd reports another compaction revision")
	assert.Equal(t, chain.hash, compacted.hash, "HashKV differs")
}

// TestCompact compacts real chains: the new full snapshot restores to the same data and
// HashKV as the chain it replaces, with nothing left to replay, at the newest point and at a
// revision inside the chain; encrypted like any new object; and a store that cannot be
// compacted as it is (no full snapshot, a damaged delta, a revision outside the window, a
// history crossed, an encrypted chain without a key to encrypt to) is refused with an error
// that says why, leaving the store as it was.
func TestCompact(t *testing.T) {
	t.Parallel()
	f := buildCompactFixture(t)
	ctx := context.Background()

	for _, tc := range []struct {
		name   string
		target catalog.Target
		want   etcdtest.Dump
	}{
		{"the newest point", catalog.Target{}, f.final},
		{"a revision inside the chain", catalog.Target{Revision: f.mid}, f.atMid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			store, _ := f.copyStore(t, snapstore.Options{})
			chain, before := restoreAndRead(t, store, tc.target)
			require.NotEmpty(t, before.Deltas, "the chain's restore replayed nothing")

			var logs embeddedtest.SyncBuffer
			lg := slog.New(slog.NewTextHandler(&logs, nil))
			res, err := Compact(ctx, store, compactOpts(t, tc.target, lg))
			require.NoError(t, err, logs.String())
			requireNoLock(t, store)
			assert.Empty(t, res.Nothing)
			assert.Equal(t, tc.want.Revision, res.Full.Revision)
			assert.Equal(t, f.full.Key, res.Chain.Full.Key)
			assert.Equal(t, tc.want.Revision-f.full.Revision, res.Chain.Revisions)
			assert.Equal(t, before.Deltas, res.Deltas, "the compaction read another chain than the restore")
			assert.Equal(t, res.Replay.Time.UTC().Truncate(time.Millisecond), res.Full.Time, "named at the time its revision was observed")
			assert.Contains(t, logs.String(), "backup chain compacted")
			fulls, err := store.List(ctx, catalog.KindFull)
			require.NoError(t, err)
			require.Len(t, fulls, 2, "the compaction adds one full snapshot and deletes nothing")
			deltas, err := store.List(ctx, catalog.KindDelta)
			require.NoError(t, err)
			require.Len(t, deltas, len(f.deltas))

			compacted, after := restoreAndRead(t, store, tc.target)
			assert.Equal(t, res.Full.Key, after.Snapshot.Key, "the restore did not start from the compacted full snapshot")
			assert.Empty(t, after.Deltas, "the restore replayed deltas after the compacted full snapshot")
			assert.Zero(t, after.Replay.Revisions)
			requireSameMember(t, chain, compacted)
			assert.Equal(t, f.compacted, compacted.compactRev, "the full snapshot's compaction")
			diff := deltatest.Compare(tc.want, compacted.dump, f.ttls, 20)
			require.Empty(t, diff, "the compacted full snapshot differs from the source:\n%s", strings.Join(diff, "\n"))

			// Once more: nothing left to compact.
			again, err := Compact(ctx, store, compactOpts(t, tc.target, lg))
			require.NoError(t, err)
			assert.Contains(t, again.Nothing, res.Full.Key)
			assert.Empty(t, again.Full.Key)
		})
	}

	t.Run("encrypted", func(t *testing.T) {
		t.Parallel()
		id, err := age.GenerateX25519Identity()
		require.NoError(t, err)
		plain, _ := f.copyStore(t, snapstore.Options{})
		dir := filepath.Join(t.TempDir(), "encrypted")
		enc, err := snapstore.Open(ctx, "file://"+dir, snapstore.Options{Recipients: []age.Recipient{id.Recipient()}, Identities: []age.Identity{id}})
		require.NoError(t, err)
		defer enc.Close()
		for _, s := range append([]catalog.Snapshot{f.full}, f.deltas...) {
			_, err := snapstore.Copy(ctx, plain, enc, s)
			require.NoError(t, err)
		}
		readOnly, err := snapstore.Open(ctx, "file://"+dir, snapstore.Options{Identities: []age.Identity{id}})
		require.NoError(t, err)
		defer readOnly.Close()
		_, err = Compact(ctx, readOnly, compactOpts(t, catalog.Target{}, nil))
		require.ErrorIs(t, err, ErrCompactionRefused)
		assert.Contains(t, err.Error(), "no key to encrypt the compacted full snapshot to")

		res, err := Compact(ctx, enc, compactOpts(t, catalog.Target{}, nil))
		require.NoError(t, err)
		assert.True(t, res.Full.Encrypted)
		assert.True(t, strings.HasSuffix(res.Full.Key, ".db.zst.age"), res.Full.Key)
		raw, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(res.Full.Key)))
		require.NoError(t, err)
		assert.True(t, bytes.HasPrefix(raw, []byte("age-encryption.org/v1")), "the object is not age-encrypted")
		checkData(t, restoreTo(t, enc, catalog.Target{}), f.final, f.ttls)
	})

	refusals := []struct {
		name   string
		target catalog.Target
		change func(t *testing.T, s *snapstore.Store, dir string) []string // returns what the error must say
		is     error
	}{
		{name: "no full snapshot", change: func(t *testing.T, s *snapstore.Store, _ string) []string {
			require.NoError(t, s.Delete(ctx, f.full))
			return []string{"the store has no full snapshot"}
		}, is: catalog.ErrNoChain},
		{name: "a revision after the newest", target: catalog.Target{Revision: f.final.Revision + 1},
			change: func(*testing.T, *snapstore.Store, string) []string {
				return []string{"revision " + itoa(f.final.Revision+1) + " is not in the store", "the newest revision is " + itoa(f.final.Revision)}
			}, is: catalog.ErrNoChain},
		{name: "a revision before the full snapshot", target: catalog.Target{Revision: f.full.Revision - 1},
			change: func(*testing.T, *snapstore.Store, string) []string {
				return []string{"before the oldest full snapshot", f.full.Key}
			}, is: catalog.ErrNoChain},
		{name: "a time", target: catalog.Target{Time: time.Now()},
			change: func(*testing.T, *snapstore.Store, string) []string { return []string{"give a revision"} }},
		{name: "across the start of a history", change: func(t *testing.T, s *snapstore.Store, _ string) []string {
			require.NoError(t, s.RecordHistory(ctx, catalog.History{Start: f.mid, Began: time.Now(), Revision: 7, Served: f.mid - 1000}))
			return []string{"would cross revision " + itoa(f.mid), "compact up to revision " + itoa(f.mid-1)}
		}, is: catalog.ErrHistoryBoundary},
	}
	for _, tc := range refusals {
		t.Run("refused: "+tc.name, func(t *testing.T) {
			t.Parallel()
			store, dir := f.copyStore(t, snapstore.Options{})
			want := tc.change(t, store, dir)
			before := storeKeys(t, store)
			_, err := Compact(ctx, store, compactOpts(t, tc.target, nil))
			require.Error(t, err)
			t.Log(err)
			if tc.target.Time.IsZero() {
				assert.ErrorIs(t, err, ErrCompactionRefused)
			}
			if tc.is != nil {
				assert.ErrorIs(t, err, tc.is)
			}
			for _, s := range want {
				assert.Contains(t, err.Error(), s)
			}
			assert.Equal(t, before, storeKeys(t, store), "a refused compaction changed the store")
			requireNoLock(t, store)
		})
	}

	t.Run("refused: another tool's store", func(t *testing.T) {
		t.Parallel()
		foreign, err := snapstore.Open(ctx, "file://"+t.TempDir()+"?layout=etcd-backup-restore", snapstore.Options{})
		require.NoError(t, err)
		defer foreign.Close()
		_, err = Compact(ctx, foreign, compactOpts(t, catalog.Target{}, nil))
		require.ErrorIs(t, err, ErrCompactionRefused)
		require.ErrorIs(t, err, snapstore.ErrReadOnly)
		assert.Contains(t, err.Error(), "etcdbr copy --from")
	})

	t.Run("refused: a damaged delta", func(t *testing.T) {
		t.Parallel()
		store, dir := f.copyStore(t, snapstore.Options{})
		bad := f.deltas[3]
		flipByte(t, dir, bad)
		spool := t.TempDir()
		opts := compactOpts(t, catalog.Target{}, nil)
		opts.SpoolDir = spool
		_, err := Compact(ctx, store, opts)
		require.ErrorIs(t, err, ErrCompactionRefused)
		t.Log(err)
		assert.Contains(t, err.Error(), bad.Key)
		assert.Contains(t, err.Error(), "failed verification")
		assert.True(t, errors.Is(err, snapstore.ErrCorrupt), "%v", err)
		fulls, err := store.List(ctx, catalog.KindFull)
		require.NoError(t, err)
		assert.Len(t, fulls, 1, "a failed compaction left a full snapshot")
		requireNoLock(t, store)
		left, err := os.ReadDir(spool)
		require.NoError(t, err)
		assert.Empty(t, left, "the scratch dir is left behind")
		// The damage is recorded, and the next compaction refuses before reading anything.
		damaged, err := store.DamagedIn(ctx, f.deltas)
		require.NoError(t, err)
		require.Contains(t, damaged, bad.Key)
		assert.Equal(t, "compact", damaged[bad.Key].By)
		_, err = Compact(ctx, store, compactOpts(t, catalog.Target{}, nil))
		require.ErrorIs(t, err, ErrCompactionRefused)
		assert.Contains(t, err.Error(), "records them as damaged: "+bad.Key+" (found by compact")
	})
}

// restoreTo restores the store to target into a new data dir and returns its config.
func restoreTo(t *testing.T, store *snapstore.Store, target catalog.Target) *embed.Config {
	t.Helper()
	cfg := embeddedtest.NewConfig(t)
	_, err := Restore(context.Background(), store, cfg, target, rebuild.RestoreOptions{}, embeddedtest.Logger(t))
	require.NoError(t, err)
	return cfg
}

// A compaction's scratch dir is named for its process; etcdbr run's compactions first remove
// the scratch dirs of processes that no longer run and this process's own, never another
// running process's (an etcdbr compact given the same spool dir) or anything else.
func TestCompactSpoolCleaning(t *testing.T) {
	dir := t.TempDir()
	done := exec.Command("true")
	require.NoError(t, done.Run())
	dead := done.Process.Pid
	names := map[string]bool{ // name -> kept
		fmt.Sprintf("etcdbr-compact-%d-1", os.Getpid()): false,
		fmt.Sprintf("etcdbr-compact-%d-2", dead):        false,
		"etcdbr-compact-1-3":                            true, // init runs
		"etcdbr-compact-x":                              true,
		"other":                                         true,
	}
	for n := range names {
		require.NoError(t, os.Mkdir(filepath.Join(dir, n), 0o700))
	}
	spool, err := makeSpool(dir, false, nil)
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(filepath.Base(spool), fmt.Sprintf("etcdbr-compact-%d-", os.Getpid())), spool)
	for n := range names {
		assert.DirExists(t, filepath.Join(dir, n), "without cleaning")
	}
	require.NoError(t, os.Remove(spool))
	spool, err = makeSpool(dir, true, embeddedtest.Logger(t))
	require.NoError(t, err)
	for n, kept := range names {
		if kept {
			assert.DirExists(t, filepath.Join(dir, n))
		} else {
			assert.NoDirExists(t, filepath.Join(dir, n))
		}
	}
	assert.DirExists(t, spool)
}

// TestCompactRereadsCorruptionInTransit: a compaction that reads the full snapshot damaged on
// the way (one byte flipped by the network, the object intact in the store) compacts once
// more and succeeds, recording nothing; the same object damaged at every read fails the
// compaction, which names it and records it damaged. Through faultstore's proxy in front
// of the S3 test server.
func TestCompactRereadsCorruptionInTransit(t *testing.T) {
	svc := storetest.RequireService(t, storetest.S3)
	f := buildCompactFixture(t)
	ctx := context.Background()
	bucket := storetest.NewBucketName()
	require.NoError(t, svc.CreateBucket(ctx, bucket))
	proxy, err := faultstore.Start(svc.Endpoint, nil)
	require.NoError(t, err)
	t.Cleanup(func() { proxy.Close() })
	src, err := snapstore.Open(ctx, "file://"+f.dir, snapstore.Options{})
	require.NoError(t, err)
	defer src.Close()

	for i, tc := range []struct {
		name  string
		times int // reads of the full snapshot that get the flipped byte; 0: every one
	}{
		{"damaged on the way once", 1},
		{"damaged in the store", 0},
	} {
		store, err := snapstore.Open(ctx, storetest.Service{Kind: storetest.S3, Endpoint: proxy.URL()}.URL(bucket, fmt.Sprintf("case%d", i)), snapstore.Options{})
		require.NoError(t, err)
		defer store.Close()
		sel, err := snapstore.SelectBackupCopies(ctx, src, store, time.Time{})
		require.NoError(t, err)
		_, err = snapstore.CopyBackups(ctx, src, store, sel, nil, nil)
		require.NoError(t, err)

		proxy.Set(faultstore.Rule{Ops: []faultstore.Op{faultstore.OpGet}, Key: f.full.Key, Times: tc.times,
			Fault: faultstore.Fault{Kind: faultstore.Corrupt, After: 100}})
		res, err := Compact(ctx, store, compactOpts(t, catalog.Target{}, embeddedtest.Logger(t)))
		faults := 0
		for _, r := range proxy.Requests() {
			if r.Fault == faultstore.Corrupt {
				faults++
			}
		}
		proxy.Clear()
		damaged, derr := store.DamagedIn(ctx, []catalog.Snapshot{f.full})
		require.NoError(t, derr)
		if tc.times == 1 {
			require.NoError(t, err, tc.name)
			assert.Equal(t, 1, faults, "%s: reads that got the fault", tc.name)
			assert.Equal(t, f.final.Revision, res.Full.Revision, tc.name)
			assert.Empty(t, damaged, "%s: an object damaged on the way is recorded damaged", tc.name)
			continue
		}
		require.ErrorIs(t, err, ErrCompactionRefused, tc.name)
		assert.Contains(t, err.Error(), f.full.Key)
		assert.GreaterOrEqual(t, faults, 2, "%s: the full snapshot is read twice before it is recorded", tc.name)
		require.Contains(t, damaged, f.full.Key, tc.name)
		assert.Equal(t, "compact", damaged[f.full.Key].By)
	}
}
