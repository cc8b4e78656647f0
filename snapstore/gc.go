package snapstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"

	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// ListForGC lists the store for garbage collection: one paged listing of everything under
// the prefix (backup objects by name, as List parses them, and restore locks), then one
// read per restore lock, and the damage records of the listed objects (DamagedIn), which
// garbage collection keeps and does not count as backups. It reads no backup object.
func (s *Store) ListForGC(ctx context.Context) (catalog.Listing, error) {
	if err := s.readOnly("garbage collection"); err != nil {
		return catalog.Listing{}, err
	}
	var l catalog.Listing
	type lockObject struct {
		key string
		mod time.Time
	}
	var locks []lockObject
	err := s.eachObject(ctx, "", func(obj *blob.ListObject) error {
		if snap, ok := catalog.ParseName(obj.Key); ok {
			snap.Size = obj.Size
			if snap.Kind == catalog.KindFull {
				l.Fulls = append(l.Fulls, snap)
			} else {
				l.Deltas = append(l.Deltas, snap)
			}
		} else if isLockKey(obj.Key) {
			locks = append(locks, lockObject{obj.Key, obj.ModTime})
		}
		return nil
	})
	if err != nil {
		return catalog.Listing{}, fmt.Errorf("list %q for garbage collection: %w", s.url, err)
	}
	slices.SortFunc(l.Fulls, catalog.CompareSnapshots)
	slices.SortFunc(l.Deltas, catalog.CompareSnapshots)
	for _, o := range locks {
		lock, ok, err := s.readLock(ctx, o.key, o.mod)
		if err != nil {
			return catalog.Listing{}, err
		}
		if ok {
			l.Locks = append(l.Locks, lock)
		}
	}
	damaged, err := s.DamagedIn(ctx, l.Fulls, l.Deltas)
	if err != nil {
		return catalog.Listing{}, fmt.Errorf("garbage collection: %w", err)
	}
	if len(damaged) > 0 {
		l.Damaged = damaged
	}
	return l, nil
}

// ApplyOptions configure ApplyGC.
type ApplyOptions struct {
	// Concurrency is how many deletions run at once (0: 1 for a file store, whose
	// deletions are local, 8 for object stores).
	Concurrency int
	// Deleted, when set, is called after each object is deleted (from one goroutine at a
	// time).
	Deleted func(catalog.Decision)
	// Now is the clock that tells whether restore locks are live (nil: time.Now).
	Now func() time.Time
	// Log receives the run's warnings (nil: discarded).
	Log *slog.Logger
	// Fence, when set, is checked before the first deletion and again with the restore
	// locks (at most 2 s apart): when it fails, the run stops there and returns its error
	// (the garbage collector of a member that no longer leads deletes nothing more).
	Fence func(ctx context.Context) error
}

// GCResult says what ApplyGC did.
type GCResult struct {
	// DeletedFulls and DeletedDeltas count the objects deleted, Bytes their listed size.
	DeletedFulls, DeletedDeltas int
	Bytes                       int64
	// Left counts the planned deletions not done.
	Left int
	// Stopped says why the run stopped before the end without an error (a restore
	// started); "" otherwise. The next run deletes what is left.
	Stopped string
	// StaleLocks counts the dead restore locks deleted.
	StaleLocks int
	// AbandonedTemps counts the temporary files of unfinished uploads removed from a file
	// store (AbandonedTempAge), AbandonedTempBytes their size.
	AbandonedTemps     int
	AbandonedTempBytes int64
}

// ApplyGC deletes what plan says, in its order: every delta first, then the full snapshots.
// A file store's directory is synced after the deltas, so that no full snapshot goes before
// the deltas that follow it, even across a power failure.
//
// It reads the restore locks again at the start and whenever it last read them more than
// 2 s before the next deletion; when a restore started or changed what it reads since the
// plan, it stops (Stopped says why) and leaves the rest to the next run, which plans with
// the lock. It stops at the first failed deletion and returns the error: the full snapshots
// are deleted only once every delta planned for deletion is gone. An object already gone is
// not an error, so a run that was interrupted can simply run again. Last, on a file store,
// it removes the temporary files of uploads that never finished (sweepTemps).
func (s *Store) ApplyGC(ctx context.Context, plan catalog.GCPlan, opts ApplyOptions) (GCResult, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = 8
		if s.localDir != "" {
			opts.Concurrency = 1
		}
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	a := &gcApply{store: s, plan: plan, opts: opts, known: map[string]bool{}}
	for _, l := range plan.Locks {
		a.known[fingerprint(l)] = true
	}
	nDeltas := 0
	for nDeltas < len(plan.Delete) && plan.Delete[nDeltas].Snapshot.Kind == catalog.KindDelta {
		nDeltas++
	}
	err := a.run(ctx, plan.Delete[:nDeltas], string(catalog.KindDelta))
	if err == nil && a.res.Stopped == "" {
		err = a.run(ctx, plan.Delete[nDeltas:], string(catalog.KindFull))
	}
	a.res.Left = len(plan.Delete) - a.res.DeletedDeltas - a.res.DeletedFulls
	if err != nil {
		return a.res, err
	}
	for _, l := range plan.StaleLocks {
		if err := s.bucket.Delete(ctx, l.Key); err != nil && gcerrors.Code(err) != gcerrors.NotFound {
			opts.Log.Warn("cannot delete a dead restore lock; the next run tries again", "lock", l.Key, "err", err)
			continue
		}
		a.res.StaleLocks++
	}
	n, size, err := s.sweepTemps(ctx, opts.Now(), opts.Log)
	a.res.AbandonedTemps, a.res.AbandonedTempBytes = n, size
	if err != nil {
		return a.res, err
	}
	return a.res, nil
}

// gcApply is one ApplyGC run.
type gcApply struct {
	store   *Store
	plan    catalog.GCPlan
	opts    ApplyOptions
	known   map[string]bool // fingerprints of the locks the plan knows
	checked time.Time       // when the locks were last read
	res     GCResult
}

// run deletes the objects of one phase (one kind), in chunks of Concurrency, reading the
// locks again between chunks when due, then syncs the kind's directory of a file store.
func (a *gcApply) run(ctx context.Context, dels []catalog.Decision, dir string) error {
	if len(dels) == 0 {
		return nil
	}
	for i := 0; i < len(dels); i += a.opts.Concurrency {
		if time.Since(a.checked) >= lockRecheck {
			if a.opts.Fence != nil {
				if err := a.opts.Fence(ctx); err != nil {
					return fmt.Errorf("garbage collection stopped: %w", err)
				}
			}
			if stop, err := a.locksChanged(ctx); err != nil || stop {
				return err
			}
		}
		chunk := dels[i:min(i+a.opts.Concurrency, len(dels))]
		if err := a.deleteChunk(ctx, chunk); err != nil {
			return err
		}
	}
	if a.store.localDir != "" {
		if err := syncDir(filepath.Join(a.store.localDir, dir)); err != nil {
			return fmt.Errorf("garbage collection in %q: %w", a.store.url, err)
		}
	}
	return nil
}

// locksChanged reads the locks and reports whether the run must stop: a live lock the
// plan does not know (a restore started, or recorded its plan, since).
func (a *gcApply) locksChanged(ctx context.Context) (bool, error) {
	locks, err := a.store.RestoreLocks(ctx)
	if err != nil {
		return true, fmt.Errorf("garbage collection stopped: cannot check for restores in progress: %w", err)
	}
	a.checked = time.Now()
	now := a.opts.Now()
	for _, l := range locks {
		if l.Live(now) && !a.known[fingerprint(l)] {
			a.res.Stopped = fmt.Sprintf("%s started or changed what it reads during the run: the rest waits for the next run", l)
			return true, nil
		}
	}
	return false, nil
}

// deleteChunk deletes objects at once and returns the first error after all are done.
func (a *gcApply) deleteChunk(ctx context.Context, chunk []catalog.Decision) error {
	errs := make([]error, len(chunk))
	if len(chunk) == 1 {
		errs[0] = a.store.Delete(ctx, chunk[0].Snapshot)
	} else {
		var wg sync.WaitGroup
		for i, d := range chunk {
			wg.Go(func() { errs[i] = a.store.Delete(ctx, d.Snapshot) })
		}
		wg.Wait()
	}
	for i, d := range chunk {
		if errs[i] != nil {
			continue
		}
		if d.Snapshot.Kind == catalog.KindFull {
			a.res.DeletedFulls++
		} else {
			a.res.DeletedDeltas++
		}
		a.res.Bytes += d.Snapshot.Size
		if a.opts.Deleted != nil {
			a.opts.Deleted(d)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("garbage collection stopped (the next run goes on): %w", err)
	}
	return nil
}
