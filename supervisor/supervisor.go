package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/etcdbr/etcdbr/backup"
	"github.com/etcdbr/etcdbr/embedded"
	"github.com/etcdbr/etcdbr/embedded/datadir"
	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// Config is what the supervisor needs to run one member.
type Config struct {
	Etcd  *embed.Config    // the member's etcd configuration (Dir set)
	Store *snapstore.Store // where backups go and restores come from
	// RestoreFrom, when set, is where the start-up restores from while Store holds no full
	// snapshot: another tool's backups (etcd-backup-restore, a snapshot file) or another
	// store, read only.
	RestoreFrom *snapstore.Store
	Schedule    backup.Schedule // full snapshot schedule
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
	// Cluster is how a member of a cluster of several reaches its peers when its own etcd
	// is down, and how its etcdbr looks after learners while it leads (members.go).
	Cluster ClusterConfig
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
	// Compact, when set, compacts the backup chain while this member takes backups, once the
	// chain since the newest full snapshot passes its bound.
	Compact *CompactConfig
	// Defrag, when set, defragments the members whose free space passes its threshold (or
	// on its schedule): the leader's etcdbr, one member at a time, itself last (defrag.go).
	Defrag *DefragConfig
	// ClusterRestorePoll is how often the store is read for a whole-cluster restore (0:
	// DefaultClusterRestorePoll).
	ClusterRestorePoll time.Duration
	// AutoRestoreAfter, when not 0, makes this member record a cluster restore of the
	// store's newest point by itself once the quorum has been lost this long and the store
	// received nothing since (clusterrestore.DecideAuto); off by default.
	AutoRestoreAfter time.Duration
	// TakeoverAfter is the bound this member's etcdbr records in the store with its
	// cluster's liveness record, rewritten every TakeoverRefresh of it while it backs up: a
	// single member with a missing data dir whose configuration creates another cluster (a
	// new machine) takes the store over once the record stayed unchanged this long
	// (DecideTakeover). 0: never (the record says so).
	TakeoverAfter time.Duration
	Log           *slog.Logger
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

// Supervisor is the lifecycle of one member: validate -> restore -> start etcd -> back up ->
// stop, and restores while running (RequestRestore, the API, a CORRUPT alarm), which stop
// the backups and etcd, restore, and start both again. Make one with New and call Run once.
//
// Its other jobs are types of their own, which it creates and wires: health (what is known
// of etcd and the backups), cluster (what is known of etcd's cluster: roles, quorum, catching
// up), metrics, storeClaim (the store's cluster record), backups (the runners of one etcd)
// and apiServer (the HTTP API). The readiness checks (ready.go) and the
// status (status.go) read them all at one moment.
type Supervisor struct {
	// Set by New, read-only after.
	cfg     Config
	lg      *slog.Logger
	members int // in the initial cluster
	pid     int
	// clientTLS and clientAutoTLS are etcd's client TLS settings, copied before etcd
	// starts (etcd's start writes into its configuration): the cluster prober's clients
	// of the other members use them.
	clientTLS     transport.TLSInfo
	clientAutoTLS bool
	// metrics, health, cluster and claim are created by New and live as long as the
	// Supervisor; each documents itself. flusher lets FlushDeltas ask the delta taker of
	// the serving etcd to upload at once.
	metrics *metrics
	health  *health
	cluster *cluster
	claim   *storeClaim
	flusher *backup.Flusher
	// serving tells the cluster prober that an etcd began to serve, so that it probes at
	// once: created by New with room for one signal; setState sends without blocking,
	// probeCluster receives. Never closed.
	serving chan struct{}
	// startCfg is the configuration etcd starts with: cfg.Etcd, or the one a member that
	// joined its cluster again starts with (set by validate; read by Run's loop only).
	startCfg *embed.Config
	// restores hands a restore while running to Run's loop: created by New with room for
	// one job; startRestore sends (with mu held, and only when no job runs: it never
	// blocks), Run's serve and refuseQueuedRestore receive. Never closed.
	restores chan *restoreJob
	// backendReads is held for reading while a full snapshot reads this member's db
	// (startBackups' Take), and for writing (TryLock) by the defragger around a defrag of
	// this member: etcd's defrag waits for every read transaction with writes blocked, so
	// the two never overlap. Created zero by New, never replaced.
	backendReads sync.RWMutex

	// mu guards the fields below; when others are held with it (health's, the claim's),
	// it is taken first. Readers that must see the lifecycle and health at one moment (the
	// status, the readiness checks, refresh) hold it throughout.
	mu         sync.Mutex
	state      State
	stateSince time.Time
	etcd       *embedded.Etcd // while starting or serving: set and cleared by Run (setEtcd, clearEtcd)
	backups    *backups       // the backups of the serving etcd: set by startBackups, cleared by clearEtcd
	job        *restoreJob    // the restore running, or the last one: set by startRestore
	jobs       int64          // restores requested so far (the job IDs)
	lastErr    *ErrorStatus   // the last error reported (recordError, finishRestore)
	validation ValidationStatus
	apiAddr    string   // where the API listens: set by Run once it started it
	disk       diskView // the data dir's file system, as the monitor last saw it (guardDisk)
	// intents is what watchIntents last read and decided about cluster restores;
	// intentData what the cluster restore that built the data dir made of it (set by
	// readDataIntent at start and restoreForIntent); intentStopped the old etcd's revision
	// when a cluster restore stopped it; intentFreeze the freeze this member raised for
	// a cluster restore (set by freezeForIntent); cancelWait cuts short the wait for the peers
	// or for a quorum to start etcd (set by validate and Run around the wait, nil otherwise).
	intents       intentView
	intentData    intentData
	intentStopped int64
	intentFreeze  intentFreeze
	cancelWait    context.CancelCauseFunc
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
	if cfg.Defrag != nil {
		if err := cfg.Defrag.Validate(); err != nil {
			return nil, err
		}
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.MaxBackupAge <= 0 {
		cfg.MaxBackupAge = DefaultMaxBackupAge(cfg.DeltaPeriod, cfg.Schedule, time.Now())
	}
	m := newMetrics()
	s := &Supervisor{
		cfg:      cfg,
		lg:       cfg.Log,
		metrics:  m,
		health:   newHealth(m),
		cluster:  newCluster(),
		serving:  make(chan struct{}, 1),
		flusher:  backup.NewFlusher(),
		restores: make(chan *restoreJob, 1),
		members:  clusterSize(cfg.Etcd),
		pid:      os.Getpid(),
		// The logger is etcd's, set by its start: the copy has none.
		clientTLS:     cfg.Etcd.ClientTLSInfo,
		clientAutoTLS: cfg.Etcd.ClientAutoTLS,
		startCfg:      cfg.Etcd,
	}
	if cfg.Cluster.Explicit && len(cfg.Cluster.Endpoints) > 0 {
		// --cluster-endpoints names other members: a cluster of several, whatever
		// --initial-cluster says (kubeadm's first control-plane node names only itself).
		s.members = max(s.members, 1+len(cfg.Cluster.Endpoints))
	}
	s.claim = newStoreClaim(cfg.Store, cfg.Etcd, cfg.Log, m, s.health, s.recordError)
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
	api, err := startAPI(ctx, s.cfg.API, s, s.lg)
	if err != nil {
		return err
	}
	defer api.close()
	s.mu.Lock()
	s.apiAddr = api.addr
	s.mu.Unlock()
	mctx, stopMonitors := context.WithCancel(context.WithoutCancel(ctx))
	var monitors sync.WaitGroup
	monitors.Go(func() { s.monitor(mctx) })
	monitors.Go(func() { s.probeStore(mctx) })
	monitors.Go(func() { s.probeCluster(mctx) })
	monitors.Go(func() { s.watchIntents(mctx) })
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
		sctx, cancelStart := context.WithCancelCause(ctx)
		s.setWaiting(cancelStart) // a cluster restore cuts short a start that waits for a quorum
		bootstrap := newBootstrap(s.startCfg)
		e, err := embedded.Start(sctx, s.startCfg, s.lg)
		s.setWaiting(nil)
		cut := errors.Is(context.Cause(sctx), errIntentSeen)
		cancelStart(nil)
		if err != nil && cut && ctx.Err() == nil {
			s.lg.Warn("cluster restore: etcd's start on the old data dir was cut short", "err", err)
			h, handled, herr := s.intentAtStart(ctx)
			if herr != nil {
				s.recordError("cluster-restore", herr)
				return herr
			}
			if handled {
				history = h
			}
			continue
		}
		if err != nil {
			bootstrap.undo(s.lg)
			err = startDiskFault(fmt.Errorf("start etcd: %w", err), s.cfg.Etcd.Dir, s.cfg.Etcd.WalDir)
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
			if err := s.claim.claim(ctx, e, false); err != nil {
				s.lg.Warn("the store is not claimed for this cluster: the new history is not recorded in it", "err", err)
			} else {
				s.recordHistory(ctx, *history)
			}
			takeFull, history = true, nil
		}
		b := s.startBackups(ctx, e, takeFull)
		stopTending := func() {}
		if s.cfg.Cluster.TendLearners {
			stopTending = s.tendLearners(ctx, e)
		}
		stopDefrag := func() {}
		if s.cfg.Defrag != nil {
			stopDefrag = s.startDefrag(ctx, e)
		}
		next, runErr := s.serve(ctx, e, b)
		stopDefrag() // waits for a defrag in flight: a restore never overlaps one
		stopTending()
		if next == nil {
			s.setState(StateStopping)
			s.refuseQueuedRestore()
			if err := b.stop(nil); err != nil && runErr == nil {
				runErr = err
			}
			s.clearEtcd()
			e.Close()
			if runErr != nil && ctx.Err() == nil && s.rejoined(ctx, runErr) {
				continue // removed from its cluster: it joined again, etcd starts on no data
			}
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
	if st == StateServing {
		select {
		case s.serving <- struct{}{}:
		default:
		}
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
		s.health.setRevision(s.etcd.Server().KV().Rev())
	}
	s.etcd, s.backups = nil, nil
	s.mu.Unlock()
	s.claim.forget() // claimed again by the next etcd, whose cluster a restore may change
}

// recordError keeps err as the last error, for the status.
func (s *Supervisor) recordError(component string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastErr = &ErrorStatus{Component: component, Message: err.Error(), Time: time.Now().UTC()}
}
