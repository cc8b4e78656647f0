package supervisor

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/etcdbr/etcdbr/backup"
	"github.com/etcdbr/etcdbr/embedded"
	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// session is the backups of one running etcd: the full snapshot runner and the delta taker
// (while this member leads). It ends when etcd stops, or before a restore.
type session struct {
	runner      *backup.Runner
	fullNow     backup.TakeFunc // a full snapshot through the runner, abandoned when it stops
	deltas      bool            // delta snapshots are enabled
	stopBackups context.CancelFunc
	stopDeltas  context.CancelCauseFunc
	backupsDone chan struct{}
	deltasDone  chan struct{}
	errc        chan error // the first setup error of either

	gc     *backup.GC    // nil when retention is off
	gcDone chan struct{} // closed when the GC runner has returned

	mu                    sync.Mutex
	backupsErr, deltasErr error
}

// startSession starts taking backups of e. takeFull makes the runner take a full snapshot at
// once, whatever the store holds. Nothing is uploaded before the store is claimed for e's
// cluster (claimStore): the full snapshot runner claims (and reads the claim again) before
// each full snapshot, the delta taker waits for the claim; a store of another cluster gets
// neither, nor any garbage collection.
func (s *Supervisor) startSession(ctx context.Context, e *embedded.Etcd, takeFull bool) *session {
	lg := s.lg
	store := s.cfg.Store
	ss := &session{}
	runner := &backup.Runner{
		Store:       store,
		Schedule:    s.cfg.Schedule,
		Log:         lg.With("component", "backup"),
		TakeAtStart: takeFull,
		Observer:    observer{s},
		Take: func(ctx context.Context) (catalog.Snapshot, error) {
			srv := e.Server()
			if srv.Leader() != srv.MemberID() {
				return catalog.Snapshot{}, fmt.Errorf("member %s is not the leader: %w", srv.MemberID(), backup.ErrSkipped)
			}
			if hasCorruptAlarm(srv.Alarms()) {
				return catalog.Snapshot{}, fmt.Errorf("etcd raised a CORRUPT alarm: no full snapshot of a member whose data may be corrupt: %w", backup.ErrSkipped)
			}
			wasClaimed := s.claimed(e)
			if err := s.claimStore(ctx, e, true); errors.Is(err, snapstore.ErrClusterMismatch) {
				if wasClaimed {
					// The store was given to another cluster meanwhile: no delta either (the
					// taker stops without a final delta, until etcdbr restarts).
					s.lg.Error("the store's record names another cluster now: no more backups; delta snapshots stay off until etcdbr restarts", "err", err)
					ss.stopDeltas(fmt.Errorf("%w: %w", err, backup.ErrSkipped))
				}
				return catalog.Snapshot{}, fmt.Errorf("no full snapshot: %w: %w", err, backup.ErrSkipped)
			} else if err != nil {
				return catalog.Snapshot{}, err // retried by the runner
			}
			snap, err := backup.FullFromBackend(ctx, srv.Backend(), store)
			if err == nil && ss.gc != nil {
				ss.gc.Trigger() // a new full snapshot may let older backups go
			}
			return snap, err
		},
	}
	*ss = session{
		runner:      runner,
		deltas:      s.cfg.DeltaPeriod > 0,
		backupsDone: make(chan struct{}),
		deltasDone:  make(chan struct{}),
		errc:        make(chan error, 2),
		gcDone:      make(chan struct{}),
	}
	bctx, stopBackups := context.WithCancel(context.WithoutCancel(ctx))
	if s.cfg.GC != nil {
		gc, err := backup.NewGC(backup.GCConfig{
			Store:  store,
			Policy: *s.cfg.GC,
			Period: s.cfg.GCPeriod,
			// Only once the store is known to be this cluster's: never another cluster's backups.
			Active: func() bool { srv := e.Server(); return srv.Leader() == srv.MemberID() && s.claimed(e) },
			OnRun: func(r backup.GCRun) {
				s.GCDeleted(catalog.KindFull, r.Result.DeletedFulls)
				s.GCDeleted(catalog.KindDelta, r.Result.DeletedDeltas)
			},
			Log: lg.With("component", "gc"),
		})
		if err != nil {
			lg.Error("garbage collection is off: its configuration was refused", "err", err)
			close(ss.gcDone)
		} else {
			ss.gc = gc
		}
	}
	if ss.gc != nil {
		go func() {
			defer close(ss.gcDone)
			ss.gc.Run(bctx)
		}()
	} else if s.cfg.GC == nil {
		close(ss.gcDone)
	}
	ss.stopBackups = stopBackups
	dctx, stopDeltas := context.WithCancelCause(context.WithoutCancel(ctx))
	ss.stopDeltas = stopDeltas // before the runner starts: a full snapshot refused may stop the deltas
	ss.fullNow = backup.FullFromRunner(bctx, runner)
	go func() {
		defer close(ss.backupsDone)
		err := runner.Run(bctx) // only a setup error ends it early
		ss.mu.Lock()
		ss.backupsErr = err
		ss.mu.Unlock()
		if err != nil {
			ss.errc <- err
		}
	}()

	if ss.deltas {
		dcfg := backup.DeltaConfig{
			Store:       store,
			Client:      e.Client(),
			Events:      e.Events,
			Period:      s.cfg.DeltaPeriod,
			MemoryLimit: s.cfg.DeltaMemoryLimit,
			Full:        ss.fullNow,
			Log:         lg.With("component", "delta"),
			Observer:    observer{s},
			Flusher:     s.flusher,
		}
		go func() {
			defer close(ss.deltasDone)
			if !s.waitClaim(dctx, e, dcfg.Log) { // no delta before the store is this cluster's
				return
			}
			err := deltasWhileLeader(dctx, e, dcfg, lg) // likewise
			ss.mu.Lock()
			ss.deltasErr = err
			ss.mu.Unlock()
			if err != nil {
				ss.errc <- err
			}
		}()
	} else {
		close(ss.deltasDone)
		lg.Info("delta snapshots are disabled (--delta-snapshot-period 0): a restore loses the writes since the last full snapshot")
	}
	s.mu.Lock()
	s.sess = ss
	s.mu.Unlock()
	return ss
}

// failed receives the error of a runner that could not start.
func (ss *session) failed() <-chan error { return ss.errc }

// stop stops the backups: the full snapshot runner first (a full snapshot in flight is
// abandoned and leaves nothing behind), then the delta taker, which uploads its final delta
// (etcd must still run) unless cause wraps backup.ErrSkipped. It returns a runner's setup
// error, if any.
func (ss *session) stop(cause error) error {
	ss.stopBackups()
	<-ss.backupsDone
	<-ss.gcDone
	ss.stopDeltas(cause)
	<-ss.deltasDone
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return errors.Join(ss.backupsErr, ss.deltasErr)
}
