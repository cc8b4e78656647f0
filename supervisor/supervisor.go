package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/server/v3/embed"

	"github.com/etcdbr/etcdbr/backup"
	"github.com/etcdbr/etcdbr/embedded"
	"github.com/etcdbr/etcdbr/embedded/datadir"
	"github.com/etcdbr/etcdbr/embedded/rebuild"
	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// Config is what the supervisor needs to run one member.
type Config struct {
	Etcd     *embed.Config    // the member's etcd configuration (Dir set)
	Store    *snapstore.Store // where backups go and restores come from
	Schedule backup.Schedule  // full snapshot schedule
	// DeltaPeriod is how often delta snapshots are uploaded while etcd serves; 0 disables
	// them.
	DeltaPeriod time.Duration
	// DeltaMemoryLimit bounds the bytes of events held for delta snapshots (0: the default,
	// backup.DefaultDeltaMemoryLimit).
	DeltaMemoryLimit int64
	// MaxBackupAge is how long a write may wait to reach the store before readiness fails
	// (0: DefaultMaxBackupAge of the delta period and schedule).
	MaxBackupAge time.Duration
	// RestoreOnCorrupt makes a CORRUPT alarm of a single-member cluster restore the newest
	// backup and restart etcd; without it the alarm is only reported.
	RestoreOnCorrupt bool
	// API is the HTTP API's configuration; an empty API.Listen disables it.
	API APIConfig
	// Validation is how deeply the data dir is checked at start (datadir.DepthAuto: quick
	// after a clean stop, full otherwise).
	Validation datadir.Depth
	// ForceRestore restores from the store even when the data dir or the store belongs to
	// another cluster (the data dir is moved aside, never deleted).
	ForceRestore bool
	// KeepOldDataDirs is how many data dirs moved aside by restores are kept (at least 1).
	KeepOldDataDirs int
	// UnbackedRevisions bounds how many revisions the member may have served beyond the
	// store's newest when that is unknown (a restore at start): the restore starts a new
	// history past it (catalog.DefaultUnbackedRevisions when 0).
	UnbackedRevisions int64
	// GC, when set, is the retention policy applied while this member takes backups: every
	// GCPeriod (0: backup.DefaultGCPeriod) and after each full snapshot.
	GC       *catalog.Policy
	GCPeriod time.Duration
	Log      *slog.Logger
	// Started, when set, is called every time etcd serves: at start and after each restore
	// while running.
	Started func(*embedded.Etcd)
}

// DefaultMaxBackupAge is the MaxBackupAge used when none is given: with delta snapshots,
// 5 minutes or 30 periods, whichever is longer; without, the full snapshot schedule's
// period plus 5 minutes (writes wait for the next full snapshot).
func DefaultMaxBackupAge(deltaPeriod time.Duration, sched backup.Schedule, now time.Time) time.Duration {
	if deltaPeriod > 0 {
		return max(5*time.Minute, 30*deltaPeriod)
	}
	return sched.Period(now) + 5*time.Minute
}

// Supervisor runs one member: validation, restore, etcd, backups, the HTTP API, and
// restores while running. Make one with New and call Run once.
type Supervisor struct {
	cfg      Config
	lg       *slog.Logger
	metrics  *metrics
	flusher  *backup.Flusher
	restores chan *restoreJob // to the lifecycle loop; at most one job in flight
	members  int              // in the initial cluster
	pid      int

	mu         sync.Mutex
	state      State
	stateSince time.Time
	etcd       *embedded.Etcd // while starting or serving
	backups    *backups       // the backups of the serving etcd
	job        *restoreJob    // the restore running, or the last one
	jobs       int64          // restores requested so far (the job IDs)
	lastErr    *ErrorStatus
	revision   int64 // etcd's revision, last known
	alarms     []string
	corrupt    corruptState
	newest     map[catalog.Kind]catalog.Snapshot
	delta      backup.DeltaProgress
	store      storeHealth
	clock      revisionClock // when etcd's revisions were first seen
	unbacked   time.Time     // when the oldest write not in the store was made (zero: none)
	validation ValidationStatus
	apiAddr    string

	// The store's cluster record (identity.go). claimMu serializes the claims.
	claimMu      sync.Mutex
	claimedFor   string // the cluster the store was claimed for since etcd started ("" none yet)
	reclaimFrom  string // after a restore that created another cluster: the record to replace at the first claim
	storeCluster string // the cluster the store records, as last read ("" unknown or none)
	mismatch     string // why no backups are taken: the store belongs to another cluster ("" none)
}

// New checks cfg and returns a Supervisor for it.
func New(cfg Config) (*Supervisor, error) {
	switch {
	case cfg.Etcd == nil:
		return nil, errors.New("supervisor: no etcd configuration")
	case cfg.Store == nil:
		return nil, errors.New("supervisor: no store")
	case cfg.Schedule.String() == "":
		return nil, errors.New("supervisor: no full snapshot schedule (backup.ParseSchedule)")
	}
	if err := cfg.API.Validate(); err != nil {
		return nil, err
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.MaxBackupAge <= 0 {
		cfg.MaxBackupAge = DefaultMaxBackupAge(cfg.DeltaPeriod, cfg.Schedule, time.Now())
	}
	s := &Supervisor{
		cfg:      cfg,
		lg:       cfg.Log,
		metrics:  newMetrics(),
		flusher:  backup.NewFlusher(),
		restores: make(chan *restoreJob, 1),
		members:  clusterSize(cfg.Etcd),
		pid:      os.Getpid(),
		newest:   map[catalog.Kind]catalog.Snapshot{},
	}
	s.setState(StateValidating)
	return s, nil
}

// Run validates the data dir, restores it when needed, starts etcd, and takes backups while it
// serves, until ctx ends (then it stops backups and etcd cleanly and returns nil) or etcd fails.
func Run(ctx context.Context, cfg Config) error {
	s, err := New(cfg)
	if err != nil {
		return err
	}
	return s.Run(ctx)
}

// Run runs the member until ctx ends (then it stops backups and etcd cleanly and returns
// nil) or etcd fails. The HTTP API serves from the start (health and status during
// validation and restore). Restores asked for while running (RequestRestore, the API, a
// CORRUPT alarm with RestoreOnCorrupt) stop backups and etcd, restore, start etcd again and
// take a fresh full snapshot, without returning.
func (s *Supervisor) Run(ctx context.Context) error {
	api, err := s.startAPI(ctx)
	if err != nil {
		return err
	}
	defer api.close()
	mctx, stopMonitors := context.WithCancel(context.WithoutCancel(ctx))
	var monitors sync.WaitGroup
	monitors.Go(func() { s.monitor(mctx) })
	monitors.Go(func() { s.probeStore(mctx) })
	defer monitors.Wait()
	defer stopMonitors()

	history, err := s.validate(ctx)
	if err != nil {
		s.recordError("validate", err)
		return err
	}
	var job *restoreJob // a restore that waits for etcd to serve again
	for {
		s.setState(StateStarting)
		if err := datadir.RemoveCleanStopMarker(s.cfg.Etcd.Dir); err != nil {
			return fmt.Errorf("remove the clean-stop marker before starting etcd: %w", err)
		}
		e, err := embedded.Start(ctx, s.cfg.Etcd, s.lg)
		if err != nil {
			err = fmt.Errorf("start etcd: %w", err)
			if job != nil {
				s.finishRestore(job, err)
			}
			if ctx.Err() != nil {
				return nil // stopped while etcd started: Start stopped it
			}
			s.recordError("etcd", err)
			return err
		}
		s.setEtcd(e)
		if s.cfg.Started != nil {
			s.cfg.Started(e)
		}
		s.setState(StateServing)
		// etcd started on the data dir: the dirs earlier restores moved aside may go, but
		// for the newest --keep-old-data-dirs.
		if _, err := datadir.PruneOldDataDirs(s.cfg.Etcd.Dir, s.cfg.Etcd.WalDir, max(s.cfg.KeepOldDataDirs, 1), s.lg); err != nil {
			s.lg.Warn("could not prune old data dirs", "err", err)
		}
		takeFull := false
		switch {
		case job != nil:
			takeFull = s.afterRestore(ctx, e, job)
			job = nil
		case history != nil:
			// The data dir starts a history the store has no full snapshot of: record the
			// history, and take one at once so that the new history's chain starts now.
			if err := s.claimStore(ctx, e, false); err != nil {
				s.lg.Warn("the store is not claimed for this cluster: the new history is not recorded in it", "err", err)
			} else {
				s.recordHistory(ctx, *history)
			}
			takeFull, history = true, nil
		}
		b := s.startBackups(ctx, e, takeFull)
		next, runErr := s.serve(ctx, e, b)
		if next == nil {
			s.setState(StateStopping)
			s.refuseQueuedRestore()
			if err := b.stop(nil); err != nil && runErr == nil {
				runErr = err
			}
			s.clearEtcd()
			e.Close()
			if runErr != nil {
				s.recordError("etcd", runErr)
				return runErr
			}
			// A clean stop: the next start may trust the data dir after a quick check.
			if err := datadir.WriteCleanStopMarker(s.cfg.Etcd.Dir, s.cfg.Etcd.WalDir); err != nil {
				s.lg.Warn("could not write the clean-stop marker: the next start checks the data dir fully", "err", err)
			}
			return nil
		}
		job = next
		s.restoreWhileRunning(ctx, e, b, job)
		if ctx.Err() != nil {
			s.finishRestore(job, s.stoppedDuring(job))
			return nil
		}
	}
}

// stoppedDuring says how a restore that the process stopped during ended.
func (s *Supervisor) stoppedDuring(job *restoreJob) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if job.err == nil && job.result != nil {
		return errors.New("etcdbr stopped before etcd started again: the data dir is the restored one, which the next start serves")
	}
	return errors.New("etcdbr stopped during the restore: the data dir was left as it was")
}

// GCDeleted counts n backup objects of kind that the retention policy deleted
// (etcdbr_gc_deleted_objects_total), e.g. from backup.GCConfig.OnRun.
func (s *Supervisor) GCDeleted(kind catalog.Kind, n int) {
	if kind != catalog.KindFull && kind != catalog.KindDelta || n <= 0 {
		return
	}
	s.metrics.gcDeleted.WithLabelValues(string(kind)).Add(float64(n))
}

// serve waits until ctx ends, etcd fails, the backups fail to start, or a restore is asked
// for; it returns the restore job in the last case.
func (s *Supervisor) serve(ctx context.Context, e *embedded.Etcd, b *backups) (*restoreJob, error) {
	select {
	case <-ctx.Done():
		s.lg.Info("stopping: abandoning any full snapshot in flight, uploading the final delta, then stopping etcd")
		return nil, nil
	case err := <-e.Err():
		s.lg.Error("etcd failed; stopping", "err", err)
		return nil, fmt.Errorf("etcd failed: %w", err)
	case err := <-b.failed():
		return nil, err
	case job := <-s.restores:
		return job, nil
	}
}

// refuseQueuedRestore ends a restore that was asked for while Run was already stopping.
func (s *Supervisor) refuseQueuedRestore() {
	select {
	case job := <-s.restores:
		s.finishRestore(job, errors.New("etcdbr is stopping: the restore did not start"))
	default:
	}
}

// validate checks the data dir and restores it when needed, and records how it went. It
// returns the restore that built the data dir when it started a history the store has no
// full snapshot of yet.
func (s *Supervisor) validate(ctx context.Context) (*datadir.RestoredMarker, error) {
	dir, walDir := s.cfg.Etcd.Dir, s.cfg.Etcd.WalDir
	if err := datadir.CheckWritable(dir); err != nil {
		return nil, err
	}
	if _, err := rebuild.RecoverInterruptedRestore(dir, walDir, s.lg); err != nil {
		return nil, fmt.Errorf("finish an interrupted restore of %q: %w", dir, err)
	}
	start := time.Now()
	v := datadir.InspectWith(ctx, dir, walDir, datadir.InspectOptions{Depth: s.cfg.Validation})
	if v.State == datadir.StateUnknown && s.cfg.Validation == datadir.DepthQuick {
		// Quick needs what a clean stop leaves; without it, check fully rather than refuse.
		s.lg.Warn("quick validation cannot vouch for the data dir; validating fully", "reason", v.Reason)
		v = datadir.InspectWith(ctx, dir, walDir, datadir.InspectOptions{Depth: datadir.DepthFull})
	}
	took := time.Since(start)
	s.metrics.validationDuration.Set(took.Seconds())
	s.metrics.validations.WithLabelValues(v.State.String()).Inc()
	s.mu.Lock()
	s.validation = ValidationStatus{Result: v.State.String(), Reason: v.Reason, Revision: v.Revision, DurationSeconds: took.Seconds()}
	s.mu.Unlock()
	s.lg.Info("data dir checked", "data_dir", dir, "verdict", v.State.String(), "depth", v.Depth.String(),
		"revision", v.Revision, "max_revision", v.MaxRevision, "reason", v.Reason, "took", took.Round(time.Millisecond))
	prep, err := prepareDataDir(ctx, s.cfg, v, s.lg)
	s.mu.Lock()
	s.storeCluster = prep.storeCluster
	s.validation.Shortfall = prep.shortfall
	s.mu.Unlock()
	if prep.shortfall != nil {
		s.metrics.lostRevisions.Set(float64(prep.shortfall.LostRevisions))
	}
	if err != nil {
		return nil, err
	}
	switch {
	case prep.follow == "":
	case prep.restored:
		s.followRestore(ctx, prep.follow)
	default: // a new member: its cluster is known once it started; the first claim records it
		s.mu.Lock()
		s.reclaimFrom = prep.follow
		s.mu.Unlock()
	}
	return prep.history, nil
}

// prepared is what prepareDataDir did.
type prepared struct {
	storeCluster string // the cluster the store records ("" none, or unknown)
	restored     bool   // the data dir was restored
	// follow is the store's cluster, to replace in its record with the cluster of the
	// restored data dir or new member ("" nothing to replace).
	follow string
	// shortfall says what the restore at start could not reach (nil: it reached the
	// newest point, or there was no restore).
	shortfall *ShortfallStatus
	// history is the restore that built the data dir, when it started a new history of
	// which the store holds no full snapshot yet: etcdbr records the history and takes
	// one at once.
	history *datadir.RestoredMarker
}

// prepareDataDir decides from the verdict and the store what to do with the data dir
// (DecideStart) and does it: keep it, restore the store's newest point over it (the old dir
// is moved aside and kept), start a new member, or stop with the reason. A restore or a new
// member that creates another cluster than the one the store records is refused unless it
// replaces the store's own member or --force-restore (CheckRestoreCluster); then the store's
// record is to follow it (prepared.follow).
func prepareDataDir(ctx context.Context, cfg Config, v datadir.Verdict, lg *slog.Logger) (prepared, error) {
	var prep prepared
	dir := cfg.Etcd.Dir
	facts := StartFacts{Verdict: v, Members: clusterSize(cfg.Etcd), ForceRestore: cfg.ForceRestore}
	listing, err := cfg.Store.ListBackups(ctx)
	if err == nil {
		var ok bool
		facts.StoreCluster, ok, err = cfg.Store.ClusterID(ctx)
		if !ok {
			facts.StoreCluster = ""
		}
	}
	if err != nil {
		if v.State == datadir.StateValid {
			lg.Warn("the store cannot be read; starting on the valid data dir without comparing it with the backups",
				"store", cfg.Store.URL(), "err", err)
			return prep, nil
		}
		return prep, fmt.Errorf("data dir %q is %s (%s) and the store %s cannot be read to restore it: %w",
			dir, v.State, v.Reason, cfg.Store.URL(), err)
	}
	prep.storeCluster = facts.StoreCluster
	facts.StoreNewest = catalog.RestorableWindow(listing.Fulls, listing.Deltas).Newest.Revision
	if v.State == datadir.StateValid || v.State == datadir.StateCorrupt {
		if id, err := datadir.DataDirIdentity(dir, cfg.Etcd.WalDir); err == nil {
			facts.DirCluster = id.ClusterID
		}
	}
	if facts.NewCluster, err = embedded.ClusterIDFor(cfg.Etcd); err != nil {
		lg.Warn("cannot tell which cluster ID a restore would create", "err", err)
	}
	if v.State == datadir.StateValid {
		m, ok, err := datadir.ReadRestoredMarker(dir)
		switch {
		case err != nil:
			lg.Warn("cannot read what the restore that built the data dir did", "err", err)
		case ok:
			if err := CheckExactCopy(dir, m, cfg.Store.URL()); err != nil {
				return prep, err
			}
			if m.NewHistory() && newestRevision(listing.Fulls) < m.DataRevision {
				prep.history = &m
			}
		}
	}
	decision, reason := DecideStart(facts)
	lg.Info("start-up decision", "decision", decision.String(), "reason", reason,
		"data_revision", v.Revision, "store_revision", facts.StoreNewest,
		"data_cluster", facts.DirCluster, "store_cluster", facts.StoreCluster, "config_cluster", facts.NewCluster)
	if storeFollows(facts, decision) {
		prep.follow = facts.StoreCluster
	}
	switch decision {
	case DecideKeep, DecideNewMember:
		return prep, nil
	case DecideStop:
		return prep, errors.New(reason)
	}
	// What the member served after the store's newest revision is unknown (it is lost):
	// the restore starts a new history past a bound of it.
	opts := rebuild.RestoreOptions{
		Served: facts.StoreNewest + cfg.unbacked(),
		Marker: &datadir.RestoredMarker{Source: cfg.Store.URL(), Trigger: TriggerStart},
	}
	res, err := RestoreNewestIntact(ctx, cfg.Store, cfg.Etcd, opts, lg)
	switch {
	case err == nil:
		prep.restored = true
		if sf := res.Shortfall; sf != nil {
			prep.shortfall = &ShortfallStatus{Revision: res.Revision, StoreRevision: sf.Newest, LostRevisions: sf.Lost,
				Damaged: snapKeyList(sf.Damaged), DataRevision: res.DataRevision}
			lg.Error("etcd starts on an earlier point than the store's newest: backup objects failed verification, and the "+
				"revisions after the point restored are lost; the damaged objects are still in the store (etcdbr verify names them; "+
				"replace them from a copy if there is one, and restore with POST /v1/restore)",
				"damaged", prep.shortfall.Damaged, "revision", res.Revision, "store_revision", sf.Newest, "lost_revisions", sf.Lost)
		}
		if res.MovedAside != "" {
			lg.Warn("the previous data dir was moved aside and kept", "path", res.MovedAside)
		}
		if res.Bump > 0 {
			lg.Warn("the restored data starts a new history: what the lost member served after the store's newest revision is unknown, "+
				"so the revision is raised past a bound of it and marked compacted; clients (kube-apiserver, informers) are told to list again",
				"revision", res.Revision, "data_revision", res.DataRevision, "store_revision", facts.StoreNewest, "unbacked_bound", cfg.unbacked())
			prep.history = opts.Marker
		}
		return prep, nil // old data dirs are pruned once etcd started on the new one
	case errors.Is(err, ErrNoBackup) && v.State == datadir.StateCorrupt:
		return prep, fmt.Errorf("data dir %q is corrupt (%s) and the store %s has no full snapshot to restore from; "+
			"the data dir was left untouched: restore it from another copy, or move it away to start an empty member", dir, v.Reason, cfg.Store.URL())
	default:
		return prep, fmt.Errorf("data dir %q: %w", dir, err)
	}
}

// CheckExactCopy refuses a data dir that m says is an exact copy restored from the store at
// storeURL (etcdbr restore --exact): its history is not the store's, so it must never back
// up into it, nor be restored over as if it were behind it.
func CheckExactCopy(dir string, m datadir.RestoredMarker, storeURL string) error {
	if !m.Exact || m.Source != storeURL {
		return nil
	}
	return fmt.Errorf("data dir %q is an exact copy of revision %d restored from this store (etcdbr restore --exact): "+
		"its history is not the store's, so it never backs up into it and is never restored over; "+
		"give it another --store (or move %s out of it to restore the store's newest point over it, the data dir kept aside)",
		dir, m.Revision, filepath.Join(dir, datadir.RestoredMarkerName))
}

// unbacked is Config.UnbackedRevisions, or its default.
func (c Config) unbacked() int64 {
	if c.UnbackedRevisions > 0 {
		return c.UnbackedRevisions
	}
	return catalog.DefaultUnbackedRevisions
}

// clusterSize counts the members in the initial cluster configuration.
func clusterSize(cfg *embed.Config) int {
	names := map[string]bool{}
	for _, part := range strings.Split(cfg.InitialCluster, ",") {
		if name, _, ok := strings.Cut(strings.TrimSpace(part), "="); ok {
			names[name] = true
		}
	}
	return len(names)
}

// setState moves to state st.
func (s *Supervisor) setState(st State) {
	s.mu.Lock()
	changed := s.state != st
	s.state, s.stateSince = st, time.Now()
	s.mu.Unlock()
	s.metrics.setState(st)
	if changed {
		s.lg.Debug("state", "state", string(st))
	}
}

// setEtcd records the etcd that serves now.
func (s *Supervisor) setEtcd(e *embedded.Etcd) {
	s.mu.Lock()
	s.etcd = e
	s.mu.Unlock()
}

// clearEtcd forgets etcd (before it stops), and its backups.
func (s *Supervisor) clearEtcd() {
	s.mu.Lock()
	if s.etcd != nil {
		s.revision = s.etcd.Server().KV().Rev()
	}
	s.etcd, s.backups = nil, nil
	s.claimedFor = "" // claimed again by the next etcd, whose cluster a restore may change
	s.mu.Unlock()
}

// recordError keeps err as the last error, for the status.
func (s *Supervisor) recordError(component string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastErr = &ErrorStatus{Component: component, Message: err.Error(), Time: time.Now().UTC()}
}
