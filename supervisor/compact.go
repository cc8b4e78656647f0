package supervisor

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/etcdbr/etcdbr/backup"
	"github.com/etcdbr/etcdbr/embedded/rebuild"
	"github.com/etcdbr/etcdbr/internal/boltfmt"
	"github.com/etcdbr/etcdbr/internal/dbrev"
	"github.com/etcdbr/etcdbr/internal/diskspace"
	"github.com/etcdbr/etcdbr/internal/lowprio"
	"github.com/etcdbr/etcdbr/internal/progress"
	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// CompactOptions configure Compact.
type CompactOptions struct {
	// Target is the revision the compacted full snapshot holds; the zero Target is the
	// newest point in the store. A time is refused.
	Target catalog.Target
	// SpoolDir is where the db is built: a directory of its own is made in it
	// (etcdbr-compact-<pid>-*) and removed when Compact returns. It needs room for the full
	// snapshot's db and what the deltas add to it. "" is os.TempDir().
	SpoolDir string
	// CleanSpool removes first what interrupted compactions left in SpoolDir (etcdbr run, whose
	// spool dir is beside the data dir): the scratch dirs of processes that no longer run.
	CleanSpool bool
	// MinLeaseTTL is the TTL, in seconds, of the leases whose TTL the deltas do not know (0:
	// etcd's default minimum, 2), as a restore grants them (rebuild.ReplayOptions).
	MinLeaseTTL int64
	// LowPriority runs the work (fetch, replay, checks, upload) on OS threads of the lowest
	// CPU priority (internal/lowprio): for etcdbr run, where etcd runs in the same process.
	LowPriority bool
	// LockSettle is how long Compact waits, once its restore lock is in the store, before it
	// lists the store, so that no garbage collection that planned without the lock still
	// deletes (0: snapstore.DefaultLockSettle).
	LockSettle time.Duration
	// Fence, when set, is checked once the compacted full snapshot is uploaded, just before it
	// becomes visible (backup.FullFromDB): etcdbr run's compaction is fenced by the leadership
	// proven when it began, as the full snapshot runner's snapshots are; a refusal (an error
	// wrapping backup.ErrFenced) leaves nothing in the store.
	Fence backup.Fence
	// Log receives what Compact does (nil: discarded).
	Log *slog.Logger
	// Progress, when set, follows the fetch, the replay and the upload.
	Progress *progress.Progress
}

// CompactResult says what Compact did.
type CompactResult struct {
	// Full is the new full snapshot; zero when there was nothing to compact, and Nothing
	// says why.
	Full    catalog.Snapshot
	Nothing string
	// Chain is what the new full snapshot replaces for a restore: the full snapshot it was
	// built from and the deltas replayed into it.
	Chain  catalog.Chain
	Deltas []catalog.Snapshot
	// Replay is what the replay of the deltas did.
	Replay rebuild.ReplayResult
	// Duration is how long the compaction took, Settle included: the wait, once the restore
	// lock is in the store, for garbage collection that started without it.
	Duration, Settle time.Duration
}

// ErrCompactionRefused is wrapped by the errors of a compaction that will not run as the
// store is: no chain reaches the target (no full snapshot, a revision outside the window, a
// damaged object the chain needs), the chain crosses the start of a history, the chain is
// encrypted and this etcdbr has no recipient to encrypt the new full snapshot to, or the
// store holds another tool's backups (snapstore.ErrReadOnly: etcdbr only reads those).
var ErrCompactionRefused = errors.New("compaction refused")

// Compact builds a full snapshot of the store's chain at target, offline, and uploads it as
// a full snapshot of that revision, so that the next restore to it replays nothing: the plan
// a restore to target would read (catalog.PlanCompaction: the newest full snapshot at or
// before it and the deltas after it, the objects the store records as damaged left out), the
// full snapshot fetched into a scratch db in opts.SpoolDir and verified, the deltas replayed
// into it as a restore replays them (rebuild.ReplayDeltas, streamed, memory bounded), the db
// checked (every page reachable and well formed, the revision the target), then uploaded
// (backup.FullFromDB: what etcd's Maintenance API sends, the db and its SHA-256, encrypted
// like any new object) under the name of a full snapshot at target, with the time the
// target revision was observed. The object is read back from the store and verified
// (checksums, etcd's SHA-256, the revision inside); one that fails is deleted again.
//
// The new full snapshot is the db a restore of the chain builds before etcdutl's restore
// turns it into a member: the same keys, values, create and mod revisions, versions and
// leases (the same TTLs), the same revision and compaction revision, so the same HashKV.
// Compact adds an object and deletes nothing of the store.
//
// It holds a restore lock in the store while it runs, so that garbage collection leaves the
// chain alone, and lists only once no garbage collection that started without the lock can
// still delete. An object found damaged, twice (the compaction runs once more after the
// first failure), is recorded (Store.RecordDamage, by "compact") and the compaction fails
// naming it; so does an object that disappeared. Errors of a store
// that cannot be compacted as it is wrap ErrCompactionRefused.
func Compact(ctx context.Context, store *snapstore.Store, opts CompactOptions) (res CompactResult, err error) {
	started := time.Now()
	defer func() { res.Duration = time.Since(started) }()
	lg := opts.Log
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	target := opts.Target
	if err := target.Validate(); err != nil {
		return res, fmt.Errorf("compact %s: %w", store.URL(), err)
	}
	if store.ReadOnly() {
		return res, fmt.Errorf("compact %s: %w: %w (an %s store): copy it into an etcdbr store with etcdbr copy --from %s --to URL, "+
			"and compact that one", store.URL(), ErrCompactionRefused, snapstore.ErrReadOnly, store.Layout(), store.URL())
	}
	lock, err := store.AcquireRestoreLock(ctx, snapstore.LockOptions{Purpose: "compact the backup chain to " + target.String(),
		Settle: opts.LockSettle, Log: lg})
	if err != nil {
		return res, fmt.Errorf("compact %s: announce the compaction in the store (a restore lock, so that garbage collection "+
			"leaves the chain alone while it is read): %w", store.URL(), err)
	}
	defer releaseLock(ctx, lock, lg)
	// A compaction is in no hurry: wait until no garbage collection that planned without the
	// lock deletes, so that every object listed stays while it is read.
	settleStart := time.Now()
	if err := lock.Settle(ctx); err != nil {
		return res, fmt.Errorf("compact %s: %w", store.URL(), err)
	}
	res.Settle = time.Since(settleStart)
	plan, err := planCompaction(ctx, store, target)
	if err != nil {
		return res, err
	}
	res.Chain, res.Deltas = plan.Chain, plan.Deltas
	if plan.Nothing != "" {
		res.Nothing = plan.Nothing
		lg.Info("nothing to compact", "target", target.String(), "reason", plan.Nothing)
		return res, nil
	}
	lg.Info("compaction plan", "target", target.String(), "full", plan.Full.Key, "full_revision", plan.Full.Revision,
		"deltas", len(plan.Deltas), "revisions", plan.Chain.Revisions, "delta_bytes", plan.Chain.Bytes, "up_to_revision", plan.Revision)
	if err := lock.Protect(ctx, catalog.PlanKeys(plan.RestorePlan)); err != nil {
		lg.Warn("cannot record in the restore lock what the compaction reads: the lock goes on protecting "+
			"every object (garbage collection deletes nothing meanwhile)", "err", err)
	}

	spool, err := makeSpool(opts.SpoolDir, opts.CleanSpool, lg)
	if err != nil {
		return res, fmt.Errorf("compact %s: %w", store.URL(), spoolFault(err, opts.SpoolDir, opts.SpoolDir))
	}
	defer func() {
		if rerr := os.RemoveAll(spool); rerr != nil {
			lg.Warn("cannot remove the compaction's scratch dir", "path", spool, "err", rerr)
		}
	}()
	work := func() {
		res.Full, res.Replay, err = buildCompacted(ctx, store, plan, filepath.Join(spool, "db"), opts, lg)
	}
	// An object that fails verification is read once more, by a second compaction, before
	// it is recorded damaged: a byte damaged on the way (a network card, a proxy) fails the
	// same checks as damage in the store, but only damage in the store fails again.
	for reread := ""; ; {
		if opts.LowPriority {
			lowprio.Run(work)
		} else {
			work()
		}
		bad, ok := rebuild.BadObject(err)
		if !ok || bad.Key == reread || ctx.Err() != nil {
			break
		}
		reread = bad.Key
		lg.Warn("backup object failed verification: compacting once more before recording it damaged", "object", bad.Key, "err", err)
		opts.Progress.Reset("fetch")
	}
	if err != nil {
		if bad, ok := rebuild.BadObject(err); ok {
			lg.Error("backup object failed verification: the compaction stops", "object", bad.Key, "err", err)
			if rerr := store.RecordDamage(ctx, bad, "compact", err); rerr != nil {
				lg.Warn("cannot record in the store that the object is damaged: listings go on showing it in the window", "object", bad.Key, "err", rerr)
			}
			return res, fmt.Errorf("compact %s: %w: %s failed verification (recorded under %s; etcdbr verify checks the "+
				"whole store): %w", store.URL(), ErrCompactionRefused, bad.Key, snapstore.DamagePrefix, err)
		}
		if missing, ok := missingObject(err); ok {
			return res, fmt.Errorf("compact %s: %s was listed but is gone (deleted while the compaction read it by something "+
				"that does not honour restore locks); run the compaction again: %w", store.URL(), missing.Key, err)
		}
		return res, fmt.Errorf("compact %s: %w", store.URL(), spoolFault(err, opts.SpoolDir, spool))
	}
	lg.Info("backup chain compacted", "full", res.Full.Key, "revision", res.Full.Revision, "bytes", res.Full.Size,
		"from", plan.Full.Key, "deltas", len(plan.Deltas), "revisions", res.Replay.Revisions, "events", res.Replay.Events,
		"delta_bytes", plan.Chain.Bytes, "replay", res.Replay.Duration.Round(time.Millisecond),
		"lock_settle", res.Settle.Round(time.Millisecond), "duration", time.Since(started).Round(time.Millisecond))
	return res, nil
}

// planCompaction lists the store with its damage and history records and plans the
// compaction to target.
func planCompaction(ctx context.Context, store *snapstore.Store, target catalog.Target) (catalog.CompactPlan, error) {
	l, err := store.ListBackups(ctx)
	if err != nil {
		return catalog.CompactPlan{}, fmt.Errorf("compact: %w", err)
	}
	damaged, err := store.DamagedIn(ctx, l.Fulls, l.Deltas)
	if err != nil {
		return catalog.CompactPlan{}, fmt.Errorf("compact: %w", err)
	}
	hs, err := store.Histories(ctx)
	if err != nil {
		return catalog.CompactPlan{}, fmt.Errorf("compact: %w", err)
	}
	plan, err := catalog.PlanCompaction(l.Fulls, l.Deltas, target, damaged, hs)
	if err != nil {
		err = betweenHistories(ctx, store, l.Fulls, l.Deltas, target, err)
		return catalog.CompactPlan{}, fmt.Errorf("compact %s: %w: %w", store.URL(), ErrCompactionRefused, err)
	}
	if plan.Nothing != "" {
		return plan, nil
	}
	if !store.Encrypts() {
		for _, s := range append([]catalog.Snapshot{plan.Full}, plan.Deltas...) {
			if s.Encrypted {
				return catalog.CompactPlan{}, fmt.Errorf("compact %s: %w: %s is encrypted, and this etcdbr has no key to encrypt "+
					"the compacted full snapshot to, which would hold the same data in clear: give --encryption-recipient "+
					"(or --encryption-passphrase-file)", store.URL(), ErrCompactionRefused, s.Key)
			}
		}
	}
	return plan, nil
}

// makeSpool makes the compaction's scratch dir in dir (os.TempDir() when ""): etcdbr-compact-
// <pid>-<random>. With clean, what an interrupted compaction left in dir is removed first:
// the scratch dirs of processes that no longer run, and this process's own (its
// compactions run one at a time); another running etcdbr's (an etcdbr compact given the same
// dir) stay.
func makeSpool(dir string, clean bool, lg *slog.Logger) (string, error) {
	if dir == "" {
		dir = os.TempDir()
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("create the spool dir: %w", err)
	}
	if clean {
		left, _ := filepath.Glob(filepath.Join(dir, spoolPrefix+"*"))
		for _, p := range left {
			if pid, ok := spoolPID(filepath.Base(p)); !ok || (pid != os.Getpid() && processRuns(pid)) {
				continue
			}
			lg.Warn("removing the scratch dir of an interrupted compaction", "path", p)
			if err := os.RemoveAll(p); err != nil {
				return "", fmt.Errorf("remove the scratch dir of an interrupted compaction: %w", err)
			}
		}
	}
	spool, err := os.MkdirTemp(dir, fmt.Sprintf("%s%d-*", spoolPrefix, os.Getpid()))
	if err != nil {
		return "", fmt.Errorf("create the compaction's scratch dir in %q: %w", dir, err)
	}
	return spool, nil
}

// spoolFault adds to err, when it is the spool dir's file system refusing a write of a file
// under scratch (the compaction's scratch dir, named in the error) because it is full or
// read-only, which directory, what the compaction left and what to do. Other errors (the
// store's own among them) are returned as they are.
func spoolFault(err error, spoolDir, scratch string) error {
	if err == nil || scratch == "" || !strings.Contains(err.Error(), scratch) {
		return err
	}
	if spoolDir == "" {
		spoolDir = os.TempDir()
	}
	const fix = "or set the spool dir (etcdbr compact --spool-dir, etcdbr run --compact-spool-dir) to another directory"
	switch {
	case diskspace.Full(err):
		return fmt.Errorf("%w (the compaction's spool dir %s is full: it needs room for the full snapshot's db and what "+
			"the deltas add to it; the compaction's scratch dir was removed and nothing was added to the store: make room there, "+
			fix+" with room)", err, spoolDir)
	case diskspace.ReadOnly(err):
		return fmt.Errorf("%w (the compaction's spool dir %s is on a read-only file system; nothing was added to the store: "+
			"remount it read-write, "+fix+")", err, spoolDir)
	}
	return err
}

// spoolPrefix starts the name of a compaction's scratch dir; the pid of the process follows.
const spoolPrefix = "etcdbr-compact-"

// spoolPID returns the pid in the name of a scratch dir.
func spoolPID(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, spoolPrefix)
	if !ok {
		return 0, false
	}
	digits, _, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, false
	}
	pid, err := strconv.Atoi(digits)
	return pid, err == nil && pid > 0
}

// processRuns reports whether process pid runs (or may: when it cannot tell).
func processRuns(pid int) bool {
	p, err := os.FindProcess(pid)
	if err != nil {
		return false
	}
	err = p.Signal(syscall.Signal(0))
	return !errors.Is(err, os.ErrProcessDone) && !errors.Is(err, syscall.ESRCH)
}

// buildCompacted builds the db of plan at dbPath, checks it, uploads it and reads it back.
// Errors about a backup object it reads are *rebuild.ObjectError.
func buildCompacted(ctx context.Context, store *snapstore.Store, plan catalog.CompactPlan, dbPath string, opts CompactOptions, lg *slog.Logger) (catalog.Snapshot, rebuild.ReplayResult, error) {
	p, full := opts.Progress, plan.Full
	p.SetPhase("fetch")
	p.AddBytesTotal(full.Size)
	for _, d := range plan.Deltas {
		p.AddBytesTotal(d.Size)
	}
	lg.Info("fetching full snapshot", "object", full.Key, "revision", full.Revision, "bytes", full.Size)
	if err := fetch(ctx, store, full, dbPath, false, p); err != nil {
		return catalog.Snapshot{}, rebuild.ReplayResult{}, &rebuild.ObjectError{Object: full, Err: err}
	}
	if rev, err := dbrev.FileRevision(dbPath, time.Second); err != nil || rev != full.Revision {
		if err == nil {
			err = fmt.Errorf("%w: %s holds revision %d, not the revision its name says", snapstore.ErrCorrupt, full.Key, rev)
		}
		return catalog.Snapshot{}, rebuild.ReplayResult{}, &rebuild.ObjectError{Object: full, Err: err}
	}
	var goFn func(func())
	if opts.LowPriority {
		goFn = lowprio.Go
	}
	ropts := planReplay(store, plan.RestorePlan, p, lg)
	ropts.MinLeaseTTL, ropts.Go = opts.MinLeaseTTL, goFn
	replay, err := rebuild.ReplayDeltas(ctx, dbPath, ropts)
	if err != nil {
		return catalog.Snapshot{}, replay, err
	}
	lg.Info("deltas replayed", "from_revision", replay.FromRevision, "revision", replay.Revision,
		"revisions", replay.Revisions, "events", replay.Events, "skipped", replay.Skipped, "leases_granted", replay.Leases,
		"duration", replay.Duration.Round(time.Millisecond), "revisions_per_second", int64(float64(replay.Revisions)/max(replay.Duration.Seconds(), 1e-9)))
	p.SetPhase("verify")
	if err := checkCompacted(dbPath, plan.Revision); err != nil {
		return catalog.Snapshot{}, replay, err
	}
	p.SetPhase("upload")
	snap, err := backup.FullFromDB(ctx, dbPath, store, replay.Time, plan.Revision, opts.Fence)
	if err != nil {
		return catalog.Snapshot{}, replay, err
	}
	p.SetPhase("read back")
	if err := readBack(ctx, store, snap); err != nil {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), lockReleaseTimeout)
		defer cancel()
		if derr := store.Delete(dctx, snap); derr != nil {
			err = errors.Join(err, fmt.Errorf("delete it again: %w", derr))
		}
		return catalog.Snapshot{}, replay, fmt.Errorf("the compacted full snapshot %s did not read back intact, so it was "+
			"deleted again: %w", snap.Key, err)
	}
	return snap, replay, nil
}

// checkCompacted checks the compacted db at path before it is uploaded: its structure
// (boltfmt.Check: every page of the tree well formed and reachable, nothing lost, nothing
// twice) and its revision, which must be rev.
func checkCompacted(path string, rev int64) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("check the compacted db: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("check the compacted db: %w", err)
	}
	if err := boltfmt.Check(f, st.Size(), 5); err != nil {
		return fmt.Errorf("the compacted db %q is damaged: %w", path, err)
	}
	got, err := dbrev.FileRevision(path, time.Second)
	if err != nil {
		return fmt.Errorf("check the compacted db: %w", err)
	}
	if got != rev {
		return fmt.Errorf("the compacted db holds revision %d, not %d", got, rev)
	}
	return nil
}

// readBack reads a full snapshot back from the store and checks it as a restore does: the
// store's checksums (the trailer's SHA-256 of the payload), etcd's SHA-256 of the db at the
// payload's end, and the revision inside the db, which must be the name's.
func readBack(ctx context.Context, store *snapstore.Store, snap catalog.Snapshot) error {
	r, err := store.OpenReader(ctx, snap)
	if err != nil {
		return err
	}
	defer r.Close()
	scan := dbrev.NewScanner()
	db := &snapstore.TailHolder{W: scan, Keep: sha256.Size}
	if _, err := io.Copy(db, r); err != nil {
		return err
	}
	if sum := r.HeadSum(); string(sum) != string(db.Tail()) {
		return fmt.Errorf("%w: %s: the db hashes to %x, the sha256 after it says %x", snapstore.ErrCorrupt, snap.Key, sum, db.Tail())
	}
	rev, err := scan.Revision()
	switch {
	case err != nil:
		return fmt.Errorf("%s: %w", snap.Key, err)
	case rev != snap.Revision:
		return fmt.Errorf("%w: %s holds revision %d", snapstore.ErrCorrupt, snap.Key, rev)
	}
	return nil
}
