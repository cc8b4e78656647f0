package snapstore

import (
	"context"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// gcStore writes three generations of backups (a full snapshot and three deltas each, the
// first delta starting before its full snapshot) and returns them in List order.
func gcStore(t *testing.T, s *Store) (fulls, deltas []catalog.Snapshot) {
	t.Helper()
	start := time.Now().UTC().Add(-3 * time.Hour).Truncate(time.Millisecond)
	lastTo := int64(9)
	for g := range 3 {
		at := start.Add(time.Duration(g) * time.Hour)
		rev := lastTo + 2
		fulls = append(fulls, writeObject(t, s, catalog.Snapshot{Kind: catalog.KindFull, Revision: rev, Time: at}, compressible(2000)))
		for d := 1; d <= 3; d++ {
			from, to := lastTo+1, lastTo+5
			deltas = append(deltas, writeObject(t, s, catalog.Snapshot{Kind: catalog.KindDelta, From: from, Revision: to, Time: at.Add(time.Duration(d) * time.Minute)},
				randomBytes(300, uint64(to))))
			lastTo = to
		}
	}
	return fulls, deltas
}

func keysOfSnaps(snaps []catalog.Snapshot) []string {
	out := make([]string, len(snaps))
	for i, s := range snaps {
		out[i] = s.Key
	}
	return out
}

// listedKeys is every backup object's key in the store.
func listedKeys(t *testing.T, s *Store) []string {
	t.Helper()
	l, err := s.ListForGC(context.Background())
	require.NoError(t, err)
	keys := slices.Concat(keysOfSnaps(l.Fulls), keysOfSnaps(l.Deltas))
	slices.Sort(keys)
	return keys
}

var limit1 = catalog.Policy{Kind: catalog.PolicyLimit, MaxBackups: 1}

// Garbage collection on every kind of store: one listing finds the backups, locks and
// nothing else; the plan's objects are deleted in its order, and exactly the rest stays.
func TestGCOnStore(t *testing.T) {
	forEachKind(t, func(t *testing.T, kind storeKind) {
		ctx := context.Background()
		ts := newTestStore(t, kind)
		s := ts.open(t, Options{})
		fulls, deltas := gcStore(t, s)
		ts.putRaw(t, s, "notes.txt", []byte("another tool's file"))
		ts.putRaw(t, s, "full/"+strings.TrimPrefix(fulls[0].Key, "full/")+".1234.tmp", []byte("an upload in progress"))
		ts.putRaw(t, s, "locks/other.json", []byte("not a lock"))

		l, err := s.ListForGC(ctx)
		require.NoError(t, err)
		require.Equal(t, keysOfSnaps(fulls), keysOfSnaps(l.Fulls))
		require.Equal(t, keysOfSnaps(deltas), keysOfSnaps(l.Deltas))
		require.Empty(t, l.Locks)
		for _, f := range l.Fulls {
			require.Positive(t, f.Size, "sizes come from the listing")
		}

		plan, err := catalog.PlanGC(l, limit1, time.Now())
		require.NoError(t, err)
		// The newest full snapshot and its deltas stay (the first starts before it).
		wantKept := slices.Concat(keysOfSnaps(fulls[2:]), keysOfSnaps(deltas[6:]))
		slices.Sort(wantKept)
		var order []string
		res, err := s.ApplyGC(ctx, plan, ApplyOptions{Deleted: func(d catalog.Decision) { order = append(order, d.Snapshot.Key) }})
		require.NoError(t, err)
		require.Equal(t, keysOfSnaps(decisionSnaps(plan.Delete)), order, "deleted in the plan's order")
		require.Equal(t, GCResult{DeletedFulls: 2, DeletedDeltas: 6, Bytes: sizes(plan.Delete)}, res)
		require.Equal(t, wantKept, listedKeys(t, s))
		// Deltas go first, newest first, then the full snapshots.
		require.Equal(t, []string{deltas[5].Key, deltas[4].Key, deltas[3].Key, deltas[2].Key, deltas[1].Key, deltas[0].Key, fulls[1].Key, fulls[0].Key}, order)
		// Foreign objects are left alone.
		raw := ts.rawKeys(t, s)
		for _, k := range []string{"notes.txt", "locks/other.json"} {
			require.Contains(t, raw, k)
		}

		// Running again finds nothing to delete.
		l, err = s.ListForGC(ctx)
		require.NoError(t, err)
		plan, err = catalog.PlanGC(l, limit1, time.Now())
		require.NoError(t, err)
		require.Empty(t, plan.Delete)
	})
}

func decisionSnaps(ds []catalog.Decision) []catalog.Snapshot {
	out := make([]catalog.Snapshot, len(ds))
	for i, d := range ds {
		out[i] = d.Snapshot
	}
	return out
}

func sizes(ds []catalog.Decision) int64 {
	var n int64
	for _, d := range ds {
		n += d.Snapshot.Size
	}
	return n
}

// A restore announces itself with a lock: while it plans, garbage collection deletes
// nothing; once it names its objects, they (and their chain) stay; released, they go. A
// restore that starts between the plan and the deletions stops the run.
func TestGCRestoreLockOnStore(t *testing.T) {
	forEachKind(t, func(t *testing.T, kind storeKind) {
		ctx := context.Background()
		ts := newTestStore(t, kind)
		s := ts.open(t, Options{})
		fulls, deltas := gcStore(t, s)
		all := listedKeys(t, s)

		lock, err := s.AcquireRestoreLock(ctx, LockOptions{Purpose: "restore to revision 14", Settle: -1})
		require.NoError(t, err)
		l, err := s.ListForGC(ctx)
		require.NoError(t, err)
		require.Len(t, l.Locks, 1)
		got := l.Locks[0]
		require.True(t, got.Pending())
		require.Equal(t, lock.Held().ID, got.ID)
		require.Equal(t, "restore to revision 14", got.Purpose)
		require.False(t, got.ModTime.IsZero(), "the listing gives the lock's time")
		require.True(t, got.Live(time.Now()))
		plan, err := catalog.PlanGC(l, limit1, time.Now())
		require.NoError(t, err)
		require.Contains(t, plan.Paused, "is planning")
		require.Empty(t, plan.Delete)

		// The restore reads the first generation's full snapshot and its first delta.
		p, err := catalog.PlanRestore(fulls, deltas, catalog.Target{Revision: 14}, nil)
		require.NoError(t, err)
		require.Equal(t, []string{fulls[0].Key, deltas[0].Key}, catalog.PlanKeys(p))
		require.NoError(t, lock.Protect(ctx, catalog.PlanKeys(p)))
		l, err = s.ListForGC(ctx)
		require.NoError(t, err)
		require.Equal(t, catalog.PlanKeys(p), l.Locks[0].Keys)
		plan, err = catalog.PlanGC(l, limit1, time.Now())
		require.NoError(t, err)
		_, err = s.ApplyGC(ctx, plan, ApplyOptions{})
		require.NoError(t, err)
		kept := listedKeys(t, s)
		require.Contains(t, kept, fulls[0].Key)
		require.Contains(t, kept, deltas[0].Key)
		require.NotContains(t, kept, deltas[1].Key)
		require.NotContains(t, kept, fulls[1].Key)

		// Another restore starts after the plan was made: the run stops before deleting.
		l, err = s.ListForGC(ctx)
		require.NoError(t, err)
		require.NoError(t, lock.Release(ctx))
		plan, err = catalog.PlanGC(snapListing(l), limit1, time.Now())
		require.NoError(t, err)
		require.Len(t, plan.Delete, 2)
		second, err := s.AcquireRestoreLock(ctx, LockOptions{Settle: -1})
		require.NoError(t, err)
		res, err := s.ApplyGC(ctx, plan, ApplyOptions{})
		require.NoError(t, err)
		require.Contains(t, res.Stopped, second.Held().String())
		require.Equal(t, 2, res.Left)
		require.Equal(t, kept, listedKeys(t, s))

		// Released, nothing protects the old chain any more.
		require.NoError(t, second.Release(ctx))
		l, err = s.ListForGC(ctx)
		require.NoError(t, err)
		require.Empty(t, l.Locks)
		plan, err = catalog.PlanGC(l, limit1, time.Now())
		require.NoError(t, err)
		_, err = s.ApplyGC(ctx, plan, ApplyOptions{})
		require.NoError(t, err)
		wantKept := slices.Concat(keysOfSnaps(fulls[2:]), keysOfSnaps(deltas[6:]))
		slices.Sort(wantKept)
		require.Equal(t, wantKept, listedKeys(t, s))
		require.Len(t, all, 12)
	})
}

// snapListing is l without its locks.
func snapListing(l catalog.Listing) catalog.Listing {
	return catalog.Listing{Fulls: l.Fulls, Deltas: l.Deltas}
}

// A deletion that fails stops the run: the deltas before it in the plan's order are gone,
// the rest and every full snapshot stay, and the error says so.
func TestGCDeleteFailureKeepsFulls(t *testing.T) {
	ctx := context.Background()
	s, dir := openFileStore(t, Options{})
	fulls, _ := gcStore(t, s)
	l, err := s.ListForGC(ctx)
	require.NoError(t, err)
	plan, err := catalog.PlanGC(l, limit1, time.Now())
	require.NoError(t, err)
	// The third delta to delete cannot be: its name is now a directory that is not empty.
	stuck := plan.Delete[2].Snapshot
	path := filepath.Join(dir, filepath.FromSlash(stuck.Key))
	require.NoError(t, os.Remove(path))
	require.NoError(t, os.MkdirAll(filepath.Join(path, "x"), 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(path, "x", "y"), nil, 0o600))

	res, err := s.ApplyGC(ctx, plan, ApplyOptions{})
	require.Error(t, err)
	require.Contains(t, err.Error(), stuck.Key)
	require.Contains(t, err.Error(), "the next run goes on")
	require.Equal(t, 2, res.DeletedDeltas)
	require.Equal(t, 0, res.DeletedFulls)
	require.Equal(t, len(plan.Delete)-2, res.Left)
	kept := listedKeys(t, s)
	for _, f := range fulls {
		require.Contains(t, kept, f.Key)
	}
	for _, d := range plan.Delete[3:] {
		require.Contains(t, kept, d.Snapshot.Key)
	}
}

// A lock that cannot be read protects everything until TTL after it was written, and is
// removed an hour after that.
func TestGCMalformedLock(t *testing.T) {
	ctx := context.Background()
	s, dir := openFileStore(t, Options{})
	gcStore(t, s)
	path := filepath.Join(dir, "locks", "restore-bad.json")
	require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o700))
	require.NoError(t, os.WriteFile(path, []byte(`{"version": 1, "keys": [`), 0o600))

	l, err := s.ListForGC(ctx)
	require.NoError(t, err)
	require.Len(t, l.Locks, 1)
	require.NotEmpty(t, l.Locks[0].Malformed)
	require.True(t, l.Locks[0].Pending())
	plan, err := catalog.PlanGC(l, limit1, time.Now())
	require.NoError(t, err)
	require.Contains(t, plan.Paused, "cannot be read")

	old := time.Now().Add(-catalog.DefaultLockTTL - catalog.StaleLockAge - time.Minute)
	require.NoError(t, os.Chtimes(path, old, old))
	l, err = s.ListForGC(ctx)
	require.NoError(t, err)
	plan, err = catalog.PlanGC(l, limit1, time.Now())
	require.NoError(t, err)
	require.Empty(t, plan.Paused)
	require.Len(t, plan.StaleLocks, 1)
	res, err := s.ApplyGC(ctx, plan, ApplyOptions{})
	require.NoError(t, err)
	require.Equal(t, 1, res.StaleLocks)
	require.Equal(t, 8, res.DeletedFulls+res.DeletedDeltas)
	_, err = os.Stat(path)
	require.True(t, errors.Is(err, os.ErrNotExist), "the dead lock is removed: %v", err)
}

// The holder rewrites its lock while it lives, and deletes it when released.
func TestRestoreLockRefresh(t *testing.T) {
	stores(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		h, err := s.AcquireRestoreLock(ctx, LockOptions{TTL: time.Second, Settle: -1})
		require.NoError(t, err)
		first := h.Held()
		require.Equal(t, int64(1), first.TTLSeconds)
		deadline := time.Now().Add(time.Minute)
		for {
			locks, err := s.RestoreLocks(ctx)
			require.NoError(t, err)
			require.Len(t, locks, 1)
			if locks[0].Expires.After(first.Expires) {
				break
			}
			require.True(t, time.Now().Before(deadline), "the lock was not refreshed")
			time.Sleep(50 * time.Millisecond)
		}
		require.NoError(t, h.Release(ctx))
		locks, err := s.RestoreLocks(ctx)
		require.NoError(t, err)
		require.Empty(t, locks)
		require.NoError(t, h.Release(ctx), "releasing twice is harmless")

		// A restore that could not announce itself goes on with a nil holder.
		var none *LockHolder
		require.NoError(t, none.Protect(ctx, []string{"full/x"}))
		require.NoError(t, none.Release(ctx))
		require.Empty(t, none.Held().ID)
	})
}

// AcquireRestoreLock does not wait; Settle waits until Settle after the lock last started
// protecting everything (written first, or made pending again by Replan), and Replan makes
// garbage collection pause again.
func TestRestoreLockSettleAndReplan(t *testing.T) {
	ctx := context.Background()
	s := openMemStore(t, Options{})
	gcStore(t, s)
	h, err := s.AcquireRestoreLock(ctx, LockOptions{Settle: time.Hour}) // returns at once
	require.NoError(t, err)
	defer h.Release(ctx)
	pending := func() bool {
		t.Helper()
		l, err := s.ListForGC(ctx)
		require.NoError(t, err)
		require.Len(t, l.Locks, 1)
		plan, err := catalog.PlanGC(l, limit1, time.Now())
		require.NoError(t, err)
		require.Equal(t, l.Locks[0].Pending(), plan.Paused != "", "garbage collection pauses exactly while the lock is pending")
		return l.Locks[0].Pending()
	}
	require.True(t, pending())

	// Settle waits for the hour after the write: a restore cancelled meanwhile gets ctx's error.
	cctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, h.Settle(cctx), context.DeadlineExceeded)

	require.NoError(t, h.Protect(ctx, []string{"full/x"}))
	require.False(t, pending())
	require.NoError(t, h.Replan(ctx))
	require.True(t, pending())
	require.Nil(t, h.Held().Keys)
	cctx, cancel = context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, h.Settle(cctx), context.DeadlineExceeded, "Replan starts the wait again")
	require.NoError(t, h.Release(ctx))

	// Without a settle time there is nothing to wait for; a nil holder waits for nothing.
	none, err := s.AcquireRestoreLock(ctx, LockOptions{Settle: -1})
	require.NoError(t, err)
	require.NoError(t, none.Settle(cctx))
	require.NoError(t, none.Release(ctx))
	var nilHolder *LockHolder
	require.NoError(t, nilHolder.Replan(ctx))
	require.NoError(t, nilHolder.Settle(cctx))
	locks, err := s.RestoreLocks(ctx)
	require.NoError(t, err)
	require.Empty(t, locks)
}

// A lock whose holder died (it stopped refreshing and never released it) stops protecting
// at most 2 TTL after its last write, by the store's clock, and its object is removed an
// hour after that.
func TestRestoreLockOfADeadHolder(t *testing.T) {
	s, dir := openFileStore(t, Options{})
	fulls, _ := gcStore(t, s)
	hctx, die := context.WithCancel(context.Background())
	h, err := s.AcquireRestoreLock(hctx, LockOptions{Settle: -1})
	require.NoError(t, err)
	p, err := catalog.PlanRestore(fulls, nil, catalog.Target{Revision: fulls[0].Revision}, nil)
	require.NoError(t, err)
	require.NoError(t, h.Protect(hctx, catalog.PlanKeys(p)))
	die() // the refresh stops with the holder's context, as when its process is killed
	ctx := context.Background()
	path := filepath.Join(dir, filepath.FromSlash(h.Held().Key))

	plan := func() catalog.GCPlan {
		t.Helper()
		l, err := s.ListForGC(ctx)
		require.NoError(t, err)
		require.Len(t, l.Locks, 1)
		plan, err := catalog.PlanGC(l, limit1, time.Now())
		require.NoError(t, err)
		return plan
	}
	require.Len(t, plan().Locks, 1, "a lock written just now protects")
	require.NotContains(t, keysOfSnaps(decisionSnaps(plan().Delete)), fulls[0].Key)

	lastWrite := time.Now().Add(-2*catalog.DefaultLockTTL - time.Minute)
	require.NoError(t, os.Chtimes(path, lastWrite, lastWrite))
	dead := plan()
	require.Empty(t, dead.Locks, "the lock protects more than 2 TTL after its last write")
	require.Empty(t, dead.StaleLocks, "the lock is removed before an hour after it stopped protecting")
	require.Contains(t, keysOfSnaps(decisionSnaps(dead.Delete)), fulls[0].Key)

	lastWrite = lastWrite.Add(-catalog.StaleLockAge)
	require.NoError(t, os.Chtimes(path, lastWrite, lastWrite))
	stale := plan()
	require.Len(t, stale.StaleLocks, 1)
	res, err := s.ApplyGC(ctx, stale, ApplyOptions{})
	require.NoError(t, err)
	require.Equal(t, 1, res.StaleLocks)
	_, err = os.Stat(path)
	require.ErrorIs(t, err, os.ErrNotExist)
	require.NoError(t, h.Release(ctx), "releasing a lock garbage collection removed is harmless")
}

// A lock that cannot be written is an error that says which (the restore goes on without
// one), and no holder.
func TestRestoreLockWriteFails(t *testing.T) {
	s, dir := openFileStore(t, Options{})
	require.NoError(t, os.WriteFile(filepath.Join(dir, "locks"), []byte("a file, not a directory"), 0o600))
	h, err := s.AcquireRestoreLock(context.Background(), LockOptions{})
	require.Error(t, err)
	require.Nil(t, h)
	require.Contains(t, err.Error(), "write restore lock")
}

// A garbage collection whose fence refuses deletes nothing, and stops as soon as its fence
// refuses during the run.
func TestGCFenced(t *testing.T) {
	ctx := context.Background()
	s := openMemStore(t, Options{})
	gcStore(t, s)
	before := listedKeys(t, s)
	l, err := s.ListForGC(ctx)
	require.NoError(t, err)
	plan, err := catalog.PlanGC(l, limit1, time.Now())
	require.NoError(t, err)
	require.NotEmpty(t, plan.Delete)

	res, err := s.ApplyGC(ctx, plan, ApplyOptions{Fence: func(context.Context) error { return errNotLeader }})
	require.ErrorIs(t, err, errNotLeader)
	require.Zero(t, res.DeletedFulls+res.DeletedDeltas)
	require.Equal(t, len(plan.Delete), res.Left)
	require.Equal(t, before, listedKeys(t, s))

	checks := 0
	res, err = s.ApplyGC(ctx, plan, ApplyOptions{Fence: func(context.Context) error { checks++; return nil }})
	require.NoError(t, err)
	require.Equal(t, len(plan.Delete), res.DeletedFulls+res.DeletedDeltas)
	require.Positive(t, checks)
}

// Garbage collection reads the store's damage records: a damaged object is never deleted
// and does not count as a backup, so that the intact chain before it stays.
func TestGCKeepsDamagedOnStore(t *testing.T) {
	forKinds(t, func(k storeKind) bool { return k.server == nil }, func(t *testing.T, kind storeKind) {
		ctx := context.Background()
		ts := newTestStore(t, kind)
		s := ts.open(t, Options{})
		fulls, deltas := gcStore(t, s)
		require.NoError(t, s.RecordDamage(ctx, fulls[2], "verify", ErrCorrupt))

		l, err := s.ListForGC(ctx)
		require.NoError(t, err)
		require.Equal(t, []string{fulls[2].Key}, slices.Collect(maps.Keys(l.Damaged)))
		plan, err := catalog.PlanGC(l, limit1, time.Now())
		require.NoError(t, err)
		_, err = s.ApplyGC(ctx, plan, ApplyOptions{})
		require.NoError(t, err)
		// limit 1 keeps the newest intact full snapshot (the second) and the deltas after
		// it; the damaged third stays beside them.
		want := slices.Concat(keysOfSnaps(fulls[1:]), keysOfSnaps(deltas[3:]))
		slices.Sort(want)
		require.Equal(t, want, listedKeys(t, s))
	})
}

// GC removes from a file store the temporary files of uploads that never finished (a
// process killed mid-upload leaves them, as large as the object was to be), once they went
// unwritten for AbandonedTempAge; a younger one (an upload in progress) and every backup stay.
func TestGCRemovesAbandonedTemps(t *testing.T) {
	ctx := context.Background()
	ts := newTestStore(t, storeKind{name: "file", persistent: true})
	s := ts.open(t, Options{})
	gcStore(t, s)
	before := listedKeys(t, s)

	full := filepath.Join(ts.dir, "full")
	abandoned := filepath.Join(full, "00000000000000000100-20261207T000000.000Z.db.zst.18a3f0c2b4d5e6f7.tmp")
	inProgress := filepath.Join(full, "00000000000000000200-20261207T000000.000Z.db.zst.18a3f0c2b4d5e6f8.tmp")
	notATemp := filepath.Join(ts.dir, "notes.tmp") // not named as an upload's: someone else's
	for _, f := range []string{abandoned, inProgress, notATemp} {
		require.NoError(t, os.WriteFile(f, make([]byte, 1000), 0o644))
	}
	old := time.Now().Add(-AbandonedTempAge - time.Minute)
	require.NoError(t, os.Chtimes(abandoned, old, old))
	require.NoError(t, os.Chtimes(notATemp, old, old))

	res, err := s.ApplyGC(ctx, catalog.GCPlan{}, ApplyOptions{})
	require.NoError(t, err)
	require.Equal(t, 1, res.AbandonedTemps)
	require.Equal(t, int64(1000), res.AbandonedTempBytes)
	require.NoFileExists(t, abandoned)
	require.FileExists(t, inProgress)
	require.FileExists(t, notATemp)
	require.Equal(t, before, listedKeys(t, s))
}
