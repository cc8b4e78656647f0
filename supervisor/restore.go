package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/storage/wal"

	"github.com/etcdbr/etcdbr/embedded/rebuild"
	"github.com/etcdbr/etcdbr/internal/backoff"
	"github.com/etcdbr/etcdbr/internal/diskspace"
	"github.com/etcdbr/etcdbr/internal/progress"
	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// ErrNoBackup means the store holds no full snapshot to restore from.
var ErrNoBackup = errors.New("the store has no full snapshot")

// RestoreResult says what a restore used, where it ended and where the replaced data dir
// went.
type RestoreResult struct {
	// Snapshot is the full snapshot restored, Deltas the deltas read after it.
	Snapshot catalog.Snapshot
	Deltas   []catalog.Snapshot
	// Revision is the revision restored (before any revision bump), Time when it was
	// observed: a delta's revision time, or the full snapshot's time.
	Revision int64
	Time     time.Time
	// DataRevision is the new data dir's revision, after any revision bump; Bump is the
	// bump (not 0: the data dir starts a new history, marked compacted at DataRevision).
	DataRevision int64
	Bump         uint64
	// Newest reports that the restore reached the newest revision in the store, and
	// StoreRevision is that revision.
	Newest        bool
	StoreRevision int64
	// Excluded are the objects that failed verification and were left out.
	Excluded []catalog.Snapshot
	// Shortfall, set only by RestoreNewestIntact, says what the restore could not reach
	// because objects failed verification.
	Shortfall *Shortfall
	// Replay is what the replay of the deltas did.
	Replay rebuild.ReplayResult
	// MovedAside is the previous data dir, renamed aside ("" if there was none).
	MovedAside string
}

// Restore rebuilds the data dir of cfg's member from the store as it was at target: the
// newest full snapshot at or before it, and the deltas after that replayed offline up to the
// target (catalog.PlanRestore says which; rebuild.BuildDataDir does it). The zero Target is
// the newest revision in the store.
//
// Every object is verified while it streams. One that fails (corrupt, malformed, a full
// snapshot whose content is not the revision its name says) is read once more (damage on
// the way, in a network card or a proxy, does not repeat; damage in the store does), then
// reported by name, recorded damaged and left out, and the restore plans again: an older full snapshot with a longer chain of deltas, or
// another copy of a delta, may reach the same target. When nothing reaches it the restore
// fails, naming the objects: it never restores a different point than the one asked for.
// opts.Replay is filled in by Restore; the revision bump applies after the replay. The
// previous data dir, if any, is moved aside, never deleted. A store without any full
// snapshot gives an error wrapping ErrNoBackup.
//
// The restore holds a restore lock in the store while it runs (docs/retention.md), so that
// garbage collection elsewhere leaves what it reads alone; the lock is removed when it
// returns, whatever the outcome. An object that disappears between the listing and its
// reading (deleted by a garbage collection that started before the lock, or by one that
// does not honour locks) is not a bad object: the restore lists the store again and plans
// again, up to maxReplans times, and then fails naming the objects that disappeared.
func Restore(ctx context.Context, store *snapstore.Store, cfg *embed.Config, target catalog.Target, opts rebuild.RestoreOptions, lg *slog.Logger) (RestoreResult, error) {
	return restore(ctx, store, cfg, target, opts, lg, false, nil)
}

// RestoreNewestIntact restores the newest point the store can prove, for a member that
// must come back unattended (a restore at start): Restore of the newest point, except that
// when objects fail verification and the newest revision cannot be reached without them, it
// restores the newest revision the rest of the store reaches, and says what was lost in
// RestoreResult.Shortfall. It fails only when no full snapshot is intact.
func RestoreNewestIntact(ctx context.Context, store *snapstore.Store, cfg *embed.Config, opts rebuild.RestoreOptions, lg *slog.Logger) (RestoreResult, error) {
	return restore(ctx, store, cfg, catalog.Target{}, opts, lg, true, nil)
}

// Shortfall is what a restore of the newest point could not reach because backup objects
// failed verification (RestoreNewestIntact).
type Shortfall struct {
	// Newest is the newest revision in the store; the restore reached an earlier one, and
	// Lost revisions after it are not restored.
	Newest int64
	Lost   int64
	// Damaged are the objects that failed verification.
	Damaged []catalog.Snapshot
}

// intactNewest returns the newest revision that the store's objects other than exclude
// reach (names only), 0 when none does.
func intactNewest(fulls, deltas []catalog.Snapshot, exclude map[string]bool) int64 {
	keep := func(list []catalog.Snapshot) []catalog.Snapshot {
		return slices.DeleteFunc(slices.Clone(list), func(s catalog.Snapshot) bool { return exclude[s.Key] })
	}
	return catalog.RestorableWindow(keep(fulls), keep(deltas)).Newest.Revision
}

// restore is Restore, or with intact RestoreNewestIntact. listed, when not nil, is the
// store's backups as the caller listed them just before (with a full snapshot): the first
// plan is made from it instead of from a listing of its own. That is as safe as listing
// after taking the restore lock, which a garbage collection that read the locks before may
// still delete from: an object that disappeared is found missing, and the restore lists
// again.
func restore(ctx context.Context, store *snapstore.Store, cfg *embed.Config, target catalog.Target, opts rebuild.RestoreOptions, lg *slog.Logger, intact bool, listed *catalog.Listing) (RestoreResult, error) {
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	if err := target.Validate(); err != nil {
		return RestoreResult{}, err
	}
	lock, err := store.AcquireRestoreLock(ctx, snapstore.LockOptions{Purpose: "restore to " + target.String(), Log: lg})
	if err != nil {
		if ctx.Err() != nil {
			return RestoreResult{}, fmt.Errorf("restore: %w", err)
		}
		lg.Warn("cannot announce the restore in the store (no restore lock under locks/; read-only credentials?): "+
			"going on without it. Garbage collection elsewhere (another member, etcdbr gc) may delete the backups "+
			"this restore reads; it would then list the store again, or fail naming what disappeared",
			"store", store.URL(), "err", err)
	}
	defer releaseLock(ctx, lock, lg)

	exclude := map[string]bool{}
	reread := map[string]bool{} // objects that failed verification once and are read again
	var excluded, gone, past []catalog.Snapshot
	var failures []error
	goal := target           // what the restore goes to: target, or the newest intact point
	var shortfall *Shortfall // set when goal fell back from the newest point
	for {
		var fulls, deltas []catalog.Snapshot
		if listed != nil {
			fulls, deltas, listed = listed.Fulls, listed.Deltas, nil
		} else if fulls, deltas, err = listBackups(ctx, store); err != nil {
			return RestoreResult{}, withGone(err, gone)
		}
		for _, bad := range recordedDamage(ctx, store, fulls, deltas, lg) {
			if !exclude[bad.snap.Key] {
				exclude[bad.snap.Key] = true
				excluded = append(excluded, bad.snap)
				failures = append(failures, bad.err)
			}
		}
		for {
			plan, err := catalog.PlanRestore(fulls, deltas, goal, exclude)
			if err != nil && intact && len(excluded) > 0 {
				if rev := intactNewest(fulls, deltas, exclude); rev > 0 && (goal.Latest() || rev < goal.Revision) {
					newest := newestRevision(fulls, deltas)
					shortfall = &Shortfall{Newest: newest, Lost: newest - rev, Damaged: slices.Clone(excluded)}
					lg.Error("the newest point in the store cannot be restored: backup objects failed verification; "+
						"restoring the newest revision the rest of the store proves, and the revisions after it are lost",
						"damaged", snapKeys(excluded), "restoring_revision", rev, "store_revision", newest, "lost_revisions", newest-rev)
					goal = catalog.Target{Revision: rev}
					continue
				}
			}
			if err != nil && len(excluded) > 0 {
				if rev := intactNewest(fulls, deltas, exclude); rev > 0 && rev < catalog.GoalRevision(fulls, deltas, goal) {
					err = fmt.Errorf("%w; without the objects that failed verification the store reaches revision %d: "+
						"restore that with --to-revision %d (POST /v1/restore {\"revision\": %d}); etcdbr run restores it by itself at start", err, rev, rev, rev)
				}
			}
			if err != nil {
				err = planFailed(store, betweenHistories(ctx, store, fulls, deltas, goal, err), failures, gone)
				if len(past) > 0 {
					err = fmt.Errorf("%w; full snapshots left out because they hold revisions after the target (their names give "+
						"only a lower bound of their revision): %s", err, snapKeys(past))
				}
				return RestoreResult{}, err
			}
			lg.Info("restore plan", "target", goal.String(), "full", plan.Full.Key, "full_revision", plan.Full.Revision,
				"deltas", len(plan.Deltas), "up_to_revision", plan.Revision, "left_out", len(excluded), "replans", len(gone))
			if err := lock.Protect(ctx, catalog.PlanKeys(plan)); err != nil {
				lg.Warn("cannot record in the restore lock what the restore reads: the lock goes on protecting "+
					"every object (garbage collection deletes nothing meanwhile)", "err", err)
			} else if lock != nil {
				lg.Debug("the restore lock names what the restore reads", "lock", lock.Held().Key, "objects", 1+len(plan.Deltas))
			}
			res, err := restorePlan(ctx, store, plan, cfg, opts, lg)
			if err == nil {
				res.Excluded, res.Shortfall = excluded, shortfall
				res.StoreRevision = newestRevision(fulls, deltas)
				logRestored(lg, cfg, goal, res)
				return res, nil
			}
			if ctx.Err() != nil {
				return RestoreResult{}, err
			}
			if missing, ok := missingObject(err); ok {
				gone = append(gone, missing)
				if len(gone) > maxReplans {
					return RestoreResult{}, fmt.Errorf("restore from %s: %s was listed in the store but is gone (deleted while the "+
						"restore ran, by garbage collection that does not honour restore locks or by another tool); "+
						"the restore listed the store and planned again %d times and each time an object disappeared (%s): "+
						"stop what deletes backups and restore again: %w", store.URL(), missing.Key, maxReplans, snapKeys(gone), err)
				}
				lg.Warn("a backup object the restore planned to read is gone from the store (deleted meanwhile, e.g. by "+
					"garbage collection): listing the store again and planning again", "object", missing.Key,
					"replan", len(gone), "max_replans", maxReplans, "err", err)
				if err := settleBeforeListing(ctx, lock, lg); err != nil {
					return RestoreResult{}, fmt.Errorf("restore from %s: %w", store.URL(), err)
				}
				break // list again
			}
			if full, ok := pastTarget(err); ok && !exclude[full.Key] {
				lg.Warn("the full snapshot holds revisions after the target (its name gives only a lower bound of its "+
					"revision): planning again without it", "object", full.Key, "target", goal.String(), "err", err)
				exclude[full.Key] = true
				past = append(past, full)
				continue
			}
			bad, isBad := rebuild.BadObject(err)
			if !isBad || exclude[bad.Key] {
				return RestoreResult{}, err
			}
			if !reread[bad.Key] {
				reread[bad.Key] = true
				lg.Warn("backup object failed verification: restoring from it once more before leaving it out "+
					"(damage on the way to etcdbr does not repeat, damage in the store does)", "object", bad.Key, "err", err)
				continue
			}
			lg.Error("backup object failed verification: leaving it out and planning again", "object", bad.Key, "err", err)
			if rerr := store.RecordDamage(ctx, bad, "restore", err); rerr != nil {
				lg.Warn("cannot record in the store that the object is damaged: listings go on showing it in the window", "object", bad.Key, "err", rerr)
			}
			exclude[bad.Key] = true
			excluded = append(excluded, bad)
			failures = append(failures, err)
		}
	}
}

// knownDamage is a listed object the store records as damaged, and the error that says so.
type knownDamage struct {
	snap catalog.Snapshot
	err  error
}

// recordedDamage returns the listed objects the store records as damaged (a restore,
// etcdbr verify or a compaction found them so): the restore plans without them from the
// start instead of reading them again. When the records cannot be read the restore goes on
// without them: it verifies every object it reads anyway.
func recordedDamage(ctx context.Context, store *snapstore.Store, fulls, deltas []catalog.Snapshot, lg *slog.Logger) []knownDamage {
	damaged, err := store.DamagedIn(ctx, fulls, deltas)
	if err != nil {
		lg.Warn("cannot read the store's damage records: the restore reads every object it plans, and verifies each", "err", err)
		return nil
	}
	var out []knownDamage
	for _, list := range [2][]catalog.Snapshot{fulls, deltas} {
		for _, snap := range list {
			d, ok := damaged[snap.Key]
			if !ok {
				continue
			}
			lg.Warn("leaving out an object the store records as damaged", "object", snap.Key, "found_by", d.By,
				"found", d.Found.UTC().Format(time.RFC3339), "reason", d.Reason)
			out = append(out, knownDamage{snap: snap, err: fmt.Errorf("%s: %w: recorded as damaged by %s at %s (%s); "+
				"the record is %s%s.json: remove it once the object is replaced", snap.Key, snapstore.ErrCorrupt, d.By,
				d.Found.UTC().Format(time.RFC3339), d.Reason, snapstore.DamagePrefix, snap.Key)})
		}
	}
	return out
}

// maxReplans is how many times a restore lists the store and plans again after an object it
// planned to read disappeared.
const maxReplans = 3

// lockReleaseTimeout bounds the removal of the restore lock at the end of a restore, also
// a cancelled one (a lock that stays stops protecting by itself, TTL after its last
// refresh).
const lockReleaseTimeout = 30 * time.Second

// listBackups lists the store's full snapshots and deltas for a restore.
func listBackups(ctx context.Context, store *snapstore.Store) (fulls, deltas []catalog.Snapshot, err error) {
	l, err := store.ListBackups(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("restore: %w", err)
	}
	if len(l.Fulls) == 0 {
		return nil, nil, fmt.Errorf("restore from %s: %w", store.URL(), ErrNoBackup)
	}
	return l.Fulls, l.Deltas, nil
}

// planFailed is the error of a restore that cannot plan: err, with the objects left out
// because they failed verification and those that disappeared while the restore ran.
func planFailed(store *snapstore.Store, err error, failures []error, gone []catalog.Snapshot) error {
	err = withGone(fmt.Errorf("restore from %s: %w", store.URL(), err), gone)
	if len(failures) > 0 {
		err = fmt.Errorf("%w; objects left out because they failed verification: %w", err, errors.Join(failures...))
	}
	return err
}

// betweenHistories says, when target is a revision between two histories (a revision that
// never existed in either), so in err.
func betweenHistories(ctx context.Context, store *snapstore.Store, fulls, deltas []catalog.Snapshot, target catalog.Target, err error) error {
	if target.Revision == 0 {
		return err
	}
	w, werr := store.Window(ctx, fulls, deltas)
	if werr != nil {
		return err
	}
	for _, b := range w.Boundaries {
		if target.Revision >= b.From && target.Revision <= b.To {
			return fmt.Errorf("%w: revision %d lies between two histories: a restore at %s went back to revision %d and "+
				"started a new history at revision %d, so revisions %d to %d were never served by the new one and are not "+
				"in the backups of the old one; restore the old history's end (--to-revision %d) or the new one's start",
				err, target.Revision, b.History.Began.UTC().Format(time.RFC3339), b.History.Revision, b.History.Start,
				b.From, b.To, b.From-1)
		}
	}
	return err
}

// withGone adds to err the objects that disappeared while the restore ran, if any.
func withGone(err error, gone []catalog.Snapshot) error {
	if len(gone) == 0 {
		return err
	}
	return fmt.Errorf("%w; objects that the restore planned to read disappeared from the store while it ran "+
		"(deleted by garbage collection or another tool), so it listed the store again: %s", err, snapKeys(gone))
}

// pastTarget returns the full snapshot an error reports as holding revisions after the
// target (rebuild.ErrPastTarget), if any.
func pastTarget(err error) (catalog.Snapshot, bool) {
	var oe *rebuild.ObjectError
	if errors.As(err, &oe) && errors.Is(oe.Err, rebuild.ErrPastTarget) {
		return oe.Object, true
	}
	return catalog.Snapshot{}, false
}

// missingObject returns the object an error reports as not found in the store, if any: an
// object the plan listed that disappeared before it was read.
func missingObject(err error) (catalog.Snapshot, bool) {
	var oe *rebuild.ObjectError
	if errors.As(err, &oe) && (errors.Is(oe.Err, snapstore.ErrNotFound)) {
		return oe.Object, true
	}
	return catalog.Snapshot{}, false
}

// settleBeforeListing makes the lock protect every object again and waits until no garbage
// collection that planned with the old plan's objects still deletes, so that the next
// listing is not missing objects that are about to go. Without a lock it waits as long, for
// a garbage collection run in progress to end.
func settleBeforeListing(ctx context.Context, lock *snapstore.LockHolder, lg *slog.Logger) error {
	if lock == nil {
		return backoff.Sleep(ctx, snapstore.DefaultLockSettle)
	}
	if err := lock.Replan(ctx); err != nil {
		lg.Warn("cannot mark the restore lock as planning again; it names the old plan's objects meanwhile", "err", err)
	}
	return lock.Settle(ctx)
}

// releaseLock removes the restore lock, with a context that outlives ctx's cancellation.
func releaseLock(ctx context.Context, lock *snapstore.LockHolder, lg *slog.Logger) {
	if lock == nil {
		return
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), lockReleaseTimeout)
	defer cancel()
	if err := lock.Release(rctx); err != nil {
		lg.Warn("cannot remove the restore lock from the store", "err", err)
	}
}

// snapKeys joins the keys of snaps.
func snapKeys(snaps []catalog.Snapshot) string {
	return strings.Join(snapKeyList(snaps), ", ")
}

// snapKeyList returns the keys of snaps.
func snapKeyList(snaps []catalog.Snapshot) []string {
	keys := make([]string, len(snaps))
	for i, s := range snaps {
		keys[i] = s.Key
	}
	return keys
}

// restorePlan fetches the plan's full snapshot into a staging file beside the data dir,
// verifying it while it streams, and builds the data dir from it and the plan's deltas.
func restorePlan(ctx context.Context, store *snapstore.Store, plan catalog.RestorePlan, cfg *embed.Config, opts rebuild.RestoreOptions, lg *slog.Logger) (RestoreResult, error) {
	if err := os.MkdirAll(filepath.Dir(cfg.Dir), 0o700); err != nil {
		return RestoreResult{}, fmt.Errorf("restore: create the data dir's parent: %w", err)
	}
	dbPath := snapshotStagingPath(cfg.Dir)
	defer os.Remove(dbPath)
	full := plan.Full
	lg.Info("fetching full snapshot", "object", full.Key, "revision", full.Revision, "bytes", full.Size)
	p := opts.Progress
	p.SetPhase("fetch")
	p.AddBytesTotal(full.Size)
	for _, d := range plan.Deltas {
		p.AddBytesTotal(d.Size)
	}
	if err := checkFetchRoom(cfg, plan, filepath.Dir(dbPath)); err != nil {
		return RestoreResult{}, err
	}
	if err := fetch(ctx, store, full, dbPath, opts.SkipHashCheck, p); err != nil {
		if diskspace.Full(err) {
			return RestoreResult{}, fmt.Errorf("restore %s into %q: %w: %w: the file system of %s filled up while the full snapshot "+
				"was fetched: make room there (or give the data dir a larger file system) and restore again; the data dir is "+
				"untouched and nothing was moved aside", full.Key, cfg.Dir, rebuild.ErrNoRoom, err, filepath.Dir(dbPath))
		}
		return RestoreResult{}, &rebuild.ObjectError{Object: full, Err: err}
	}
	opts.SkipHashCheck = true // checked and cut off while fetching
	opts.MoveSnapshot = true  // the fetched db is the restore's own: moved into the member, not copied
	opts.WantRevision = full.Revision
	if full.RevisionAtLeast {
		// Another tool's name: the revision inside is known once fetched. It must not pass a
		// revision target (then an older full snapshot is planned instead).
		opts.WantAtLeast, opts.MaxRevision = true, plan.Target.Revision
	}
	if opts.Marker != nil {
		opts.Marker.RevisionTime = full.Time // the replay's time instead once it passes the full snapshot
	}
	opts.Replay = planReplay(store, plan, p, lg)
	opts.Replay.MustPassTime = plan.EndsAtGap
	build, err := rebuild.BuildDataDir(ctx, dbPath, cfg, opts, lg)
	switch {
	case errors.Is(err, rebuild.ErrWrongRevision):
		err = &rebuild.ObjectError{Object: full, Err: fmt.Errorf("%s: %w: %w", full.Key, snapstore.ErrCorrupt, err)}
	case errors.Is(err, rebuild.ErrPastTarget):
		err = &rebuild.ObjectError{Object: full, Err: err}
	}
	if err != nil {
		return RestoreResult{}, fmt.Errorf("restore %s into %q: %w", full.Key, cfg.Dir, err)
	}
	res := RestoreResult{
		Snapshot:     full,
		Deltas:       plan.Deltas[:build.Replay.Deltas],
		Revision:     build.SnapshotRevision,
		Time:         full.Time,
		DataRevision: build.Revision,
		Bump:         build.Bump,
		Replay:       build.Replay,
		MovedAside:   build.MovedAside,
	}
	if build.Replay.Revisions > 0 {
		res.Revision, res.Time = build.Replay.Revision, build.Replay.Time
	}
	res.Newest = plan.Newest && res.Revision >= plan.Revision // above it: a full snapshot named by a lower bound
	return res, nil
}

// checkFetchRoom checks, before the full snapshot is fetched into dir (beside the data dir),
// that dir's file system has room for the restore at least: the db fetched (larger than the
// stored object; it is moved into the data dir, not copied), what the deltas add (at least their stored
// size), and the WAL file etcd preallocates when the WAL is in the data dir. The exact need
// is checked again once the db is fetched (rebuild.BuildDataDir). A file system whose free
// space cannot be read is not checked.
func checkFetchRoom(cfg *embed.Config, plan catalog.RestorePlan, dir string) error {
	need := plan.Full.Size
	for _, d := range plan.Deltas {
		need += d.Size
	}
	what := "the full snapshot's db and what the deltas add to it"
	if cfg.WalDir == "" {
		need += wal.SegmentSizeBytes
		what += fmt.Sprintf(", and a WAL file of %s that etcd preallocates", diskspace.Bytes(wal.SegmentSizeBytes))
	}
	if err := rebuild.CheckRoom(dir, need, what); err != nil {
		return fmt.Errorf("restore %s into %q: %w", plan.Full.Key, cfg.Dir, err)
	}
	return nil
}

// logRestored says where the restore ended, and what the user should know about it.
func logRestored(lg *slog.Logger, cfg *embed.Config, target catalog.Target, res RestoreResult) {
	lg.Info("data dir restored", "data_dir", cfg.Dir, "target", target.String(), "revision", res.Revision,
		"revision_time", res.Time.UTC().Format(time.RFC3339Nano), "data_revision", res.DataRevision,
		"full", res.Snapshot.Key, "deltas", len(res.Deltas), "moved_aside", res.MovedAside)
	if !target.Time.IsZero() && !res.Replay.PassedTime && res.Newest {
		lg.Warn("the target time is after the newest backup: restored the latest point the store holds "+
			"(an idle cluster writes no deltas, so the newest backup can be older than the target)",
			"target", target.String(), "revision", res.Revision, "revision_time", res.Time.UTC().Format(time.RFC3339Nano))
	}
	for _, bad := range res.Excluded {
		lg.Warn("restored without an object that failed verification; it is still in the store", "object", bad.Key)
	}
}

// snapshotStagingPath is where a fetched snapshot db is kept while the data dir is built: a
// sibling of the data dir, on the same filesystem.
func snapshotStagingPath(dataDir string) string {
	return filepath.Clean(dataDir) + ".etcdbr-snapshot.db"
}

// newestRevision is the highest revision of the listed objects.
func newestRevision(lists ...[]catalog.Snapshot) int64 {
	var rev int64
	for _, l := range lists {
		for _, s := range l {
			rev = max(rev, s.Revision)
		}
	}
	return rev
}

// planReplay is the replay of plan's deltas from store: each read with its bytes counted
// into p, up to the plan's target, reaching at least its minimum revision.
func planReplay(store *snapstore.Store, plan catalog.RestorePlan, p *progress.Progress, lg *slog.Logger) rebuild.ReplayOptions {
	return rebuild.ReplayOptions{
		Deltas: plan.Deltas,
		Open: func(ctx context.Context, d catalog.Snapshot) (io.ReadCloser, error) {
			r, err := store.OpenReaderProgress(ctx, d, p)
			if err != nil {
				return nil, err // not a nil *Reader in an interface
			}
			return r, nil
		},
		Stop:     plan.Target,
		Reach:    plan.MinRevision,
		Log:      lg,
		Progress: p,
	}
}
