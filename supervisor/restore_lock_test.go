package supervisor

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/etcdbr/etcdbr/embedded/rebuild"
	"github.com/etcdbr/etcdbr/internal/embeddedtest"
	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// protectedMsg is what Restore logs (at debug level) once its lock names the plan's
// objects, before it reads any of them.
const protectedMsg = "the restore lock names what the restore reads"

// hookHandler logs to a buffer and calls hook, on the logging goroutine, for every record
// whose message is msg: a restore waits while the hook runs.
type hookHandler struct {
	slog.Handler
	msg  string
	hook func(n int) // n counts the records seen, from 1
	mu   *sync.Mutex
	n    *int
}

func newHookLogger(buf *embeddedtest.SyncBuffer, msg string, hook func(n int)) *slog.Logger {
	return slog.New(hookHandler{Handler: slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}),
		msg: msg, hook: hook, mu: &sync.Mutex{}, n: new(int)})
}

func (h hookHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h hookHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == h.msg && h.hook != nil {
		h.mu.Lock()
		*h.n++
		n := *h.n
		h.mu.Unlock()
		h.hook(n)
	}
	return h.Handler.Handle(ctx, r)
}

func (h hookHandler) WithAttrs(as []slog.Attr) slog.Handler {
	h.Handler = h.Handler.WithAttrs(as)
	return h
}

func (h hookHandler) WithGroup(name string) slog.Handler {
	h.Handler = h.Handler.WithGroup(name)
	return h
}

// lockKeys returns the objects the store's only restore lock names.
func lockKeys(t *testing.T, s *snapstore.Store) []string {
	t.Helper()
	locks, err := s.RestoreLocks(context.Background())
	require.NoError(t, err)
	require.Len(t, locks, 1)
	require.False(t, locks[0].Pending(), "the lock names the plan's objects")
	return locks[0].Keys
}

// requireNoLock checks that no restore lock is left in the store.
func requireNoLock(t *testing.T, s *snapstore.Store) {
	t.Helper()
	locks, err := s.RestoreLocks(context.Background())
	require.NoError(t, err)
	require.Empty(t, locks, "the restore left its lock in the store")
}

func storeKeys(t *testing.T, s *snapstore.Store) []string {
	t.Helper()
	var keys []string
	for _, kind := range []catalog.Kind{catalog.KindFull, catalog.KindDelta} {
		snaps, err := s.List(context.Background(), kind)
		require.NoError(t, err)
		for _, snap := range snaps {
			keys = append(keys, snap.Key)
		}
	}
	return keys
}

// deleteKey deletes the object key from the store, as a garbage collection that does not
// honour restore locks would.
func deleteKey(t *testing.T, s *snapstore.Store, key string) {
	t.Helper()
	snap, ok := catalog.ParseName(key)
	require.True(t, ok, key)
	snap.Key = key
	require.NoError(t, s.Delete(context.Background(), snap))
}

var limit1 = catalog.Policy{Kind: catalog.PolicyLimit, MaxBackups: 1}

// A restore holds a lock while it runs: garbage collection at that moment keeps what the
// restore reads (the data restored equals the source's at the target), a garbage collection
// planned before the restore started stops before deleting, and the lock is gone when the
// restore ends, whatever the outcome. Objects that disappear anyway (a garbage collection
// without locks) make the restore list the store again and plan again, or fail naming them.
func TestRestoreLock(t *testing.T) {
	t.Parallel()
	f := buildStoreFixture(t)
	var afterF2 []catalog.Snapshot
	for _, d := range f.deltas {
		if d.From > f.f2.Revision {
			afterF2 = append(afterF2, d)
		}
	}
	require.GreaterOrEqual(t, len(afterF2), 4, "the fixture has too few deltas after its second full snapshot")

	t.Run("garbage collection while the restore reads", func(t *testing.T) {
		t.Parallel()
		ctx := context.Background()
		store, _ := f.copyStore(t)
		// A garbage collection that planned before the restore announced itself.
		l, err := store.ListForGC(ctx)
		require.NoError(t, err)
		early, err := catalog.PlanGC(l, limit1, time.Now())
		require.NoError(t, err)
		require.Contains(t, keysOf(early.Delete), f.f1.Key)

		var logs embeddedtest.SyncBuffer
		ran := false
		lg := newHookLogger(&logs, protectedMsg, func(int) {
			ran = true
			reads := lockKeys(t, store)
			require.Equal(t, f.f1.Key, reads[0], "a restore to a revision between the full snapshots reads the older one")

			res, err := store.ApplyGC(ctx, early, snapstore.ApplyOptions{})
			require.NoError(t, err)
			assert.Contains(t, res.Stopped, "started or changed what it reads during the run")
			assert.Zero(t, res.DeletedFulls+res.DeletedDeltas, "a run planned before the restore deleted objects")

			l, err := store.ListForGC(ctx)
			require.NoError(t, err)
			plan, err := catalog.PlanGC(l, limit1, time.Now())
			require.NoError(t, err)
			require.Len(t, plan.Locks, 1)
			require.NotEmpty(t, plan.Delete, "the policy deletes what the restore does not read")
			for _, k := range reads {
				assert.NotContains(t, keysOf(plan.Delete), k)
			}
			res, err = store.ApplyGC(ctx, plan, snapstore.ApplyOptions{})
			require.NoError(t, err)
			require.Empty(t, res.Stopped)
			require.Equal(t, len(plan.Delete), res.DeletedFulls+res.DeletedDeltas)
			left := storeKeys(t, store)
			for _, k := range reads {
				require.Contains(t, left, k, "garbage collection deleted an object the restore reads")
			}
		})
		cfg := embeddedtest.NewConfig(t)
		res, err := Restore(ctx, store, cfg, catalog.Target{Revision: f.mid}, rebuild.RestoreOptions{}, lg)
		require.NoError(t, err, logs.String())
		require.True(t, ran, "the restore did not log %q", protectedMsg)
		assert.Equal(t, f.f1.Key, res.Snapshot.Key)
		assert.Equal(t, f.mid, res.Revision)
		requireNoLock(t, store)
		checkData(t, cfg, f.atMid, f.ttls)

		// Released, the lock protects nothing: the next run deletes the older chain.
		l, err = store.ListForGC(ctx)
		require.NoError(t, err)
		plan, err := catalog.PlanGC(l, limit1, time.Now())
		require.NoError(t, err)
		require.Contains(t, keysOf(plan.Delete), f.f1.Key)
	})

	t.Run("the planned full snapshot disappears: an older one restores", func(t *testing.T) {
		t.Parallel()
		store, _ := f.copyStore(t)
		var logs embeddedtest.SyncBuffer
		lg := newHookLogger(&logs, protectedMsg, func(n int) {
			if n == 1 {
				reads := lockKeys(t, store)
				require.Equal(t, f.f2.Key, reads[0])
				deleteKey(t, store, f.f2.Key)
			}
		})
		cfg := embeddedtest.NewConfig(t)
		res, err := Restore(context.Background(), store, cfg, catalog.Target{}, rebuild.RestoreOptions{}, lg)
		require.NoError(t, err, logs.String())
		assert.Equal(t, f.f1.Key, res.Snapshot.Key)
		assert.Equal(t, f.final.Revision, res.Revision)
		assert.Empty(t, res.Excluded, "a missing object is not a corrupt one")
		assert.Contains(t, logs.String(), "is gone from the store")
		assert.Contains(t, logs.String(), f.f2.Key)
		assert.NotContains(t, logs.String(), "failed verification")
		requireNoLock(t, store)
		checkData(t, cfg, f.final, f.ttls)
	})

	t.Run("a planned delta disappears: a copy of it restores", func(t *testing.T) {
		t.Parallel()
		store, dir := f.copyStore(t)
		d := afterF2[1]
		copyName := catalog.DeltaName(d.From, d.Revision, d.Time.Add(time.Second), false)
		b, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(d.Key)))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, filepath.FromSlash(copyName)), b, 0o600))
		var logs embeddedtest.SyncBuffer
		var deleted string
		lg := newHookLogger(&logs, protectedMsg, func(n int) {
			reads := lockKeys(t, store)
			if n == 1 {
				// The plan reads one of the copies; it goes before the replay reaches it.
				i := slices.IndexFunc(reads, func(k string) bool { return k == d.Key || k == copyName })
				require.GreaterOrEqual(t, i, 0)
				deleted = reads[i]
				deleteKey(t, store, deleted)
			} else {
				assert.NotContains(t, reads, deleted)
			}
		})
		cfg := embeddedtest.NewConfig(t)
		res, err := Restore(context.Background(), store, cfg, catalog.Target{}, rebuild.RestoreOptions{}, lg)
		require.NoError(t, err, logs.String())
		assert.Equal(t, f.f2.Key, res.Snapshot.Key)
		assert.Equal(t, f.final.Revision, res.Revision)
		assert.Contains(t, logs.String(), "is gone from the store")
		requireNoLock(t, store)
		checkData(t, cfg, f.final, f.ttls)
	})

	t.Run("a planned delta disappears and nothing else reaches the target", func(t *testing.T) {
		t.Parallel()
		store, _ := f.copyStore(t)
		d := afterF2[1]
		var logs embeddedtest.SyncBuffer
		lg := newHookLogger(&logs, protectedMsg, func(n int) {
			if n == 1 {
				require.Contains(t, lockKeys(t, store), d.Key)
				deleteKey(t, store, d.Key)
			}
		})
		cfg := embeddedtest.NewConfig(t)
		_, err := Restore(context.Background(), store, cfg, catalog.Target{}, rebuild.RestoreOptions{}, lg)
		require.Error(t, err)
		t.Log(err)
		for _, s := range []string{"no delta holds revision " + itoa(d.From), "cannot be reached",
			"disappeared from the store while it ran", d.Key} {
			assert.Contains(t, err.Error(), s)
		}
		assert.NotContains(t, err.Error(), "failed verification")
		assert.NoDirExists(t, cfg.Dir, "a failed restore left a data dir")
		requireNoLock(t, store)
	})

	t.Run("objects keep disappearing", func(t *testing.T) {
		t.Parallel()
		store, _ := f.copyStore(t)
		var logs embeddedtest.SyncBuffer
		var deleted []string
		lg := newHookLogger(&logs, protectedMsg, func(int) {
			reads := lockKeys(t, store)
			last := reads[len(reads)-1] // the newest delta: each listing plans a shorter chain
			deleted = append(deleted, last)
			deleteKey(t, store, last)
		})
		cfg := embeddedtest.NewConfig(t)
		_, err := Restore(context.Background(), store, cfg, catalog.Target{}, rebuild.RestoreOptions{}, lg)
		require.Error(t, err)
		t.Log(err)
		require.Len(t, deleted, maxReplans+1)
		assert.Contains(t, err.Error(), "planned again 3 times")
		for _, k := range deleted {
			assert.Contains(t, err.Error(), k)
		}
		assert.NoDirExists(t, cfg.Dir, "a failed restore left a data dir")
		requireNoLock(t, store)
	})

	t.Run("cancelled while it reads", func(t *testing.T) {
		t.Parallel()
		store, _ := f.copyStore(t)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var logs embeddedtest.SyncBuffer
		lg := newHookLogger(&logs, protectedMsg, func(int) { cancel() })
		cfg := embeddedtest.NewConfig(t)
		_, err := Restore(ctx, store, cfg, catalog.Target{}, rebuild.RestoreOptions{}, lg)
		require.ErrorIs(t, err, context.Canceled)
		assert.NoDirExists(t, cfg.Dir, "a cancelled restore left a data dir")
		requireNoLock(t, store)
	})

	t.Run("a store where no lock can be written", func(t *testing.T) {
		t.Parallel()
		store, dir := f.copyStore(t)
		// locks/ cannot be a directory: writing a lock fails, as with read-only credentials.
		require.NoError(t, os.WriteFile(filepath.Join(dir, "locks"), []byte("not a directory"), 0o600))
		var logs embeddedtest.SyncBuffer
		lg := slog.New(slog.NewTextHandler(&logs, nil))
		cfg := embeddedtest.NewConfig(t)
		res, err := Restore(context.Background(), store, cfg, catalog.Target{}, rebuild.RestoreOptions{}, lg)
		require.NoError(t, err, logs.String())
		assert.Equal(t, f.final.Revision, res.Revision)
		assert.Contains(t, logs.String(), "cannot announce the restore in the store")
		assert.Contains(t, logs.String(), "may delete the backups this restore reads")
		checkData(t, cfg, f.final, f.ttls)
	})
}

func keysOf(ds []catalog.Decision) []string {
	keys := make([]string, len(ds))
	for i, d := range ds {
		keys[i] = d.Snapshot.Key
	}
	return keys
}
