package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"go.etcd.io/etcd/server/v3/embed"

	"github.com/etcdbr/etcdbr/embedded"
	"github.com/etcdbr/etcdbr/snapstore"
)

// ErrNoBackup means the store holds no full snapshot to restore from.
var ErrNoBackup = errors.New("the store has no full snapshot")

// RestoreResult says what a restore used, where it ended and where the replaced data dir
// went.
type RestoreResult struct {
	// Snapshot is the full snapshot restored, Deltas the deltas read after it.
	Snapshot snapstore.Snapshot
	Deltas   []snapstore.Snapshot
	// Revision is the revision restored (before any revision bump), Time when it was
	// observed: a delta's revision time, or the full snapshot's time.
	Revision int64
	Time     time.Time
	// DataRevision is the new data dir's revision, after any revision bump.
	DataRevision int64
	// Newest reports that the restore reached the newest revision in the store, and
	// StoreRevision is that revision.
	Newest        bool
	StoreRevision int64
	// Excluded are the objects that failed verification and were left out.
	Excluded []snapstore.Snapshot
	// Replay is what the replay of the deltas did.
	Replay embedded.ReplayResult
	// MovedAside is the previous data dir, renamed aside ("" if there was none).
	MovedAside string
}

// RestoreLatest restores the newest point the store holds: Restore to the zero Target.
func RestoreLatest(ctx context.Context, store *snapstore.Store, cfg *embed.Config, opts embedded.RestoreOptions, lg *slog.Logger) (RestoreResult, error) {
	return Restore(ctx, store, cfg, snapstore.Target{}, opts, lg)
}

// Restore rebuilds the data dir of cfg's member from the store as it was at target: the
// newest full snapshot at or before it, and the deltas after that replayed offline up to the
// target (snapstore.PlanRestore says which; embedded.BuildDataDir does it). The zero Target is
// the newest revision in the store.
//
// Every object is verified while it streams. One that fails (corrupt, malformed, a full
// snapshot whose content is not the revision its name says) is reported by name and left
// out, and the restore plans again: an older full snapshot with a longer chain of deltas, or
// another copy of a delta, may reach the same target. When nothing reaches it the restore
// fails, naming the objects: it never restores a different point than the one asked for.
// opts.Replay is filled in by Restore; the revision bump applies after the replay. The
// previous data dir, if any, is moved aside, never deleted. A store without any full
// snapshot gives an error wrapping ErrNoBackup.
func Restore(ctx context.Context, store *snapstore.Store, cfg *embed.Config, target snapstore.Target, opts embedded.RestoreOptions, lg *slog.Logger) (RestoreResult, error) {
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	if err := target.Validate(); err != nil {
		return RestoreResult{}, err
	}
	fulls, err := store.List(ctx, snapstore.KindFull)
	if err != nil {
		return RestoreResult{}, fmt.Errorf("restore: %w", err)
	}
	if len(fulls) == 0 {
		return RestoreResult{}, fmt.Errorf("restore from %s: %w", store.URL(), ErrNoBackup)
	}
	deltas, err := store.List(ctx, snapstore.KindDelta)
	if err != nil {
		return RestoreResult{}, fmt.Errorf("restore: %w", err)
	}

	exclude := map[string]bool{}
	var excluded []snapstore.Snapshot
	var failures []error
	for {
		plan, err := snapstore.PlanRestore(fulls, deltas, target, exclude)
		if err != nil {
			if len(failures) > 0 {
				return RestoreResult{}, fmt.Errorf("restore from %s: %w; objects left out because they failed verification: %w",
					store.URL(), err, errors.Join(failures...))
			}
			return RestoreResult{}, fmt.Errorf("restore from %s: %w", store.URL(), err)
		}
		lg.Info("restore plan", "target", target.String(), "full", plan.Full.Key, "full_revision", plan.Full.Revision,
			"deltas", len(plan.Deltas), "up_to_revision", plan.Revision, "left_out", len(excluded))
		res, err := restorePlan(ctx, store, plan, cfg, opts, lg)
		if err == nil {
			res.Excluded = excluded
			res.StoreRevision = newestRevision(fulls, deltas)
			logRestored(lg, cfg, target, res)
			return res, nil
		}
		bad, isBad := embedded.BadObject(err)
		if !isBad || ctx.Err() != nil || exclude[bad.Key] {
			return RestoreResult{}, err
		}
		lg.Error("backup object failed verification: leaving it out and planning again", "object", bad.Key, "err", err)
		exclude[bad.Key] = true
		excluded = append(excluded, bad)
		failures = append(failures, err)
	}
}

// restorePlan fetches the plan's full snapshot into a staging file beside the data dir,
// verifying it while it streams, and builds the data dir from it and the plan's deltas.
func restorePlan(ctx context.Context, store *snapstore.Store, plan snapstore.Plan, cfg *embed.Config, opts embedded.RestoreOptions, lg *slog.Logger) (RestoreResult, error) {
	if err := os.MkdirAll(filepath.Dir(cfg.Dir), 0o700); err != nil {
		return RestoreResult{}, fmt.Errorf("restore: create the data dir's parent: %w", err)
	}
	dbPath := snapshotStagingPath(cfg.Dir)
	defer os.Remove(dbPath)
	full := plan.Full
	lg.Info("fetching full snapshot", "object", full.Key, "revision", full.Revision, "bytes", full.Size)
	if err := fetch(ctx, store, full, dbPath, opts.SkipHashCheck); err != nil {
		return RestoreResult{}, &embedded.ObjectError{Object: full, Err: err}
	}
	opts.SkipHashCheck = true // checked and cut off while fetching
	opts.WantRevision = full.Revision
	opts.Replay = embedded.ReplayOptions{
		Deltas:       plan.Deltas,
		Open:         store.Open,
		Stop:         plan.Target,
		Reach:        plan.MinRevision,
		MustPassTime: plan.EndsAtGap,
		Log:          lg,
	}
	build, err := embedded.BuildDataDir(ctx, dbPath, cfg, opts, lg)
	if errors.Is(err, embedded.ErrWrongRevision) {
		err = &embedded.ObjectError{Object: full, Err: fmt.Errorf("%s: %w: %w", full.Key, snapstore.ErrCorrupt, err)}
	}
	if err != nil {
		return RestoreResult{}, fmt.Errorf("restore %s into %q: %w", full.Key, cfg.Dir, err)
	}
	res := RestoreResult{
		Snapshot:     full,
		Deltas:       plan.Deltas[:build.Replay.Deltas],
		Revision:     full.Revision,
		Time:         full.Time,
		DataRevision: build.Revision,
		Replay:       build.Replay,
		MovedAside:   build.MovedAside,
	}
	if build.Replay.Revisions > 0 {
		res.Revision, res.Time = build.Replay.Revision, build.Replay.Time
	}
	res.Newest = plan.Newest && res.Revision == plan.Revision
	return res, nil
}

// logRestored says where the restore ended, and what the user should know about it.
func logRestored(lg *slog.Logger, cfg *embed.Config, target snapstore.Target, res RestoreResult) {
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
func newestRevision(lists ...[]snapstore.Snapshot) int64 {
	var rev int64
	for _, l := range lists {
		for _, s := range l {
			rev = max(rev, s.Revision)
		}
	}
	return rev
}
