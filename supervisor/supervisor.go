package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/server/v3/embed"

	"github.com/etcdbr/etcdbr/backup"
	"github.com/etcdbr/etcdbr/embedded"
	"github.com/etcdbr/etcdbr/snapstore"
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
	Log *slog.Logger
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
	sess       *session       // the backups of the serving etcd
	job        *restoreJob    // the restore running, or the last one
	jobs       int64          // restores requested so far (the job IDs)
	lastErr    *ErrorStatus
	revision   int64 // etcd's revision, last known
	alarms     []string
	corrupt    corruptState
	newest     map[snapstore.Kind]snapstore.Snapshot
	delta      backup.DeltaProgress
	store      storeHealth
	clock      revisionClock // when etcd's revisions were first seen
	unbacked   time.Time     // when the oldest write not in the store was made (zero: none)
	validation ValidationStatus
	apiAddr    string
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
		newest:   map[snapstore.Kind]snapstore.Snapshot{},
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

	if err := s.validate(ctx); err != nil {
		s.recordError("validate", err)
		return err
	}
	var job *restoreJob // a restore that waits for etcd to serve again
	for {
		s.setState(StateStarting)
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
		takeFull := false
		if job != nil {
			takeFull = s.afterRestore(ctx, e, job)
			job = nil
		}
		sess := s.startSession(ctx, e, takeFull)
		next, runErr := s.serve(ctx, e, sess)
		if next == nil {
			s.setState(StateStopping)
			s.refuseQueuedRestore()
			if err := sess.stop(nil); err != nil && runErr == nil {
				runErr = err
			}
			s.clearEtcd()
			e.Close()
			if runErr != nil {
				s.recordError("etcd", runErr)
			}
			return runErr
		}
		job = next
		s.restoreWhileRunning(ctx, e, sess, job)
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
func (s *Supervisor) GCDeleted(kind snapstore.Kind, n int) {
	if kind != snapstore.KindFull && kind != snapstore.KindDelta || n <= 0 {
		return
	}
	s.metrics.gcDeleted.WithLabelValues(string(kind)).Add(float64(n))
}

// serve waits until ctx ends, etcd fails, the backups fail to start, or a restore is asked
// for; it returns the restore job in the last case.
func (s *Supervisor) serve(ctx context.Context, e *embedded.Etcd, sess *session) (*restoreJob, error) {
	select {
	case <-ctx.Done():
		s.lg.Info("stopping: abandoning any full snapshot in flight, uploading the final delta, then stopping etcd")
		return nil, nil
	case err := <-e.Err():
		s.lg.Error("etcd failed; stopping", "err", err)
		return nil, fmt.Errorf("etcd failed: %w", err)
	case err := <-sess.failed():
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

// validate checks the data dir and restores it when needed, and records how it went.
func (s *Supervisor) validate(ctx context.Context) error {
	if err := embedded.CheckWritable(s.cfg.Etcd.Dir); err != nil {
		return err
	}
	start := time.Now()
	v := embedded.Inspect(ctx, s.cfg.Etcd.Dir, s.cfg.Etcd.WalDir)
	took := time.Since(start)
	s.metrics.validationDuration.Set(took.Seconds())
	s.metrics.validations.WithLabelValues(v.State.String()).Inc()
	s.mu.Lock()
	s.validation = ValidationStatus{Result: v.State.String(), Reason: v.Reason, Revision: v.Revision, DurationSeconds: took.Seconds()}
	s.mu.Unlock()
	return prepareDataDir(ctx, s.cfg, v, s.lg)
}

// prepareDataDir restores the data dir from the store when the verdict v says it is missing
// (and the store has a backup) or corrupt. A corrupt data dir with nothing to restore from is
// an error and the dir is left as it is.
func prepareDataDir(ctx context.Context, cfg Config, v embedded.Verdict, lg *slog.Logger) error {
	dir := cfg.Etcd.Dir
	switch v.State {
	case embedded.StateValid:
		lg.Info("data dir is valid", "data_dir", dir, "revision", v.Revision)
		return nil
	case embedded.StateMissing:
		lg.Info("no data dir", "data_dir", dir, "reason", v.Reason)
	default:
		lg.Error("data dir is corrupt", "data_dir", dir, "reason", v.Reason)
	}

	if n := clusterSize(cfg.Etcd); n > 1 {
		if v.State == embedded.StateMissing {
			lg.Info("the member belongs to a cluster of several members: starting it as configured so that it joins its peers", "members", n)
			return nil
		}
		return fmt.Errorf("data dir %q is corrupt (%s) and the member belongs to a cluster of %d members: "+
			"the data dir was left untouched; remove the member from the cluster, move the data dir away and add the member back so that it syncs from its peers", dir, v.Reason, n)
	}

	res, err := RestoreLatest(ctx, cfg.Store, cfg.Etcd, embedded.RestoreOptions{}, lg)
	switch {
	case err == nil:
		if res.MovedAside != "" {
			lg.Warn("the corrupt data dir was moved aside and kept; delete it once you no longer need it", "path", res.MovedAside)
		}
		return nil
	case errors.Is(err, ErrNoBackup) && v.State == embedded.StateMissing:
		lg.Info("the store has no backup: starting a new member", "store", cfg.Store.URL())
		return nil
	case errors.Is(err, ErrNoBackup):
		return fmt.Errorf("data dir %q is corrupt (%s) and the store %s has no full snapshot to restore from; "+
			"the data dir was left untouched: restore it from another copy, or move it away to start an empty member", dir, v.Reason, cfg.Store.URL())
	default:
		return fmt.Errorf("data dir %q: %w", dir, err)
	}
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
	s.etcd, s.sess = nil, nil
	s.mu.Unlock()
}

// recordError keeps err as the last error, for the status.
func (s *Supervisor) recordError(component string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastErr = &ErrorStatus{Component: component, Message: err.Error(), Time: time.Now().UTC()}
}
