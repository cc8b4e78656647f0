package supervisor

import (
	"context"
	"errors"
	"log/slog"
	"sync"

	"github.com/etcdbr/etcdbr/backup"
	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// backups are the backup runners of one etcd: the full snapshot runner on its schedule, the
// delta taker (when delta snapshots are on) and the garbage collector (when retention is on).
// They are started and stopped here only, for etcdbr run (one backups per start of etcd:
// Supervisor.startBackups) and for the sidecar (RunSidecar) alike.
//
// A zero backups is started once with start and stopped once with stop. Field by field:
type backups struct {
	// fullNow takes a full snapshot through the runner (after one in flight), abandoned when
	// the runner stops. Set by start, read-only after: the delta taker's backup.DeltaConfig.Full
	// and snapshots on request (Supervisor.TakeFull).
	fullNow backup.TakeFunc
	// gc is the garbage collector; nil when retention is off or its configuration was
	// refused. Set by start before the runner starts, read-only after: the runner triggers
	// it after each full snapshot.
	gc *backup.GC
	// stopFulls ends the context of the runner and the garbage collector. Set by start,
	// called by stop.
	stopFulls context.CancelFunc
	// stopDeltas ends the delta taker's context with a cause: a cause wrapping
	// backup.ErrSkipped drops the final delta. Set by start before the runner starts;
	// called by stop, or earlier by a full snapshot's Take (the store was given to another
	// cluster: Supervisor.startBackups).
	stopDeltas context.CancelCauseFunc
	// fullsDone, gcDone and deltasDone are closed by the goroutine of the runner, the garbage
	// collector and the delta taker when it returned, or by start at once for one that does
	// not run. stop waits for them; compactDone and heartbeatDone likewise for the
	// compaction of the chain and the liveness record's writer.
	fullsDone, gcDone, deltasDone, compactDone, heartbeatDone chan struct{}
	// errc receives the setup error of the runner or of the delta taker (each sends at most
	// one: its capacity of 2 never blocks them); never closed. Whoever waits while the
	// backups run selects on it (failed).
	errc chan error

	// mu guards fullsErr and deltasErr: written by the runner's and the delta taker's
	// goroutines when they returned, read by stop once they did.
	mu                  sync.Mutex
	fullsErr, deltasErr error
}

// backupsConfig is what start starts.
type backupsConfig struct {
	Store    *snapstore.Store
	Schedule backup.Schedule // of full snapshots
	// TakeAtStart makes the runner take a full snapshot at once, whatever the store holds.
	TakeAtStart bool
	// Take takes one full snapshot (backup.Runner.Take); after each one taken, the garbage
	// collector runs soon (a new full snapshot may let older backups go).
	Take backup.TakeFunc
	// Observer, when set, is told about the full snapshots (backup.Runner.Observer).
	Observer backup.Observer
	// GC, when set, turns retention on: a garbage collector with this configuration.
	GC *backup.GCConfig
	// Deltas, when set, turns delta snapshots on: it takes them until ctx ends, full taking
	// a full snapshot through the runner (backup.DeltaConfig.Full), and returns an error
	// only for a setup that cannot work.
	Deltas func(ctx context.Context, full backup.TakeFunc) error
	// Compact, when set, compacts the backup chain until ctx ends (compactor.run); it stops
	// with the full snapshot runner.
	Compact func(ctx context.Context)
	// Heartbeat, when set, writes the cluster's liveness record into the store until ctx
	// ends (Supervisor.heartbeat); it stops with the full snapshot runner, and calls
	// stopDeltas when the store was given to another cluster.
	Heartbeat func(ctx context.Context, stopDeltas context.CancelCauseFunc)
	// Log is where a refused GC configuration is reported, and the logger the runner's
	// ("component": "backup") derives from.
	Log *slog.Logger
}

// start starts the runners of cfg; they run until stop, whatever happens to ctx (only its
// values are kept).
func (b *backups) start(ctx context.Context, cfg backupsConfig) {
	runner := &backup.Runner{
		Store:       cfg.Store,
		Schedule:    cfg.Schedule,
		Log:         cfg.Log.With("component", "backup"),
		TakeAtStart: cfg.TakeAtStart,
		Observer:    cfg.Observer,
		Take: func(ctx context.Context) (catalog.Snapshot, error) {
			snap, err := cfg.Take(ctx)
			if err == nil && b.gc != nil {
				b.gc.Trigger() // a new full snapshot may let older backups go
			}
			return snap, err
		},
	}
	b.fullsDone = make(chan struct{})
	b.deltasDone = make(chan struct{})
	b.gcDone = make(chan struct{})
	b.errc = make(chan error, 2)
	bctx, stopFulls := context.WithCancel(context.WithoutCancel(ctx))
	b.stopFulls = stopFulls
	if cfg.GC != nil {
		gc, err := backup.NewGC(*cfg.GC)
		if err != nil {
			cfg.Log.Error("garbage collection is off: its configuration was refused", "err", err)
		} else {
			b.gc = gc
		}
	}
	if b.gc != nil {
		go func() {
			defer close(b.gcDone)
			b.gc.Run(bctx)
		}()
	} else {
		close(b.gcDone)
	}
	b.compactDone = make(chan struct{})
	if cfg.Compact != nil {
		go func() {
			defer close(b.compactDone)
			cfg.Compact(bctx)
		}()
	} else {
		close(b.compactDone)
	}
	dctx, stopDeltas := context.WithCancelCause(context.WithoutCancel(ctx))
	b.stopDeltas = stopDeltas // before the runner starts: a full snapshot refused may stop the deltas
	b.heartbeatDone = make(chan struct{})
	if cfg.Heartbeat != nil {
		go func() {
			defer close(b.heartbeatDone)
			cfg.Heartbeat(bctx, stopDeltas)
		}()
	} else {
		close(b.heartbeatDone)
	}
	b.fullNow = backup.FullFromRunner(bctx, runner)
	go func() {
		defer close(b.fullsDone)
		err := runner.Run(bctx) // only a setup error ends it early
		b.mu.Lock()
		b.fullsErr = err
		b.mu.Unlock()
		if err != nil {
			b.errc <- err
		}
	}()
	if cfg.Deltas == nil {
		close(b.deltasDone)
		return
	}
	go func() {
		defer close(b.deltasDone)
		err := cfg.Deltas(dctx, b.fullNow) // likewise
		b.mu.Lock()
		b.deltasErr = err
		b.mu.Unlock()
		if err != nil {
			b.errc <- err
		}
	}()
}

// failed receives the error of a runner that could not start.
func (b *backups) failed() <-chan error { return b.errc }

// stop stops the backups: the full snapshot runner first (a full snapshot in flight is
// abandoned and leaves nothing behind), the garbage collector, the compaction and the
// liveness record's writer, then the delta taker, which
// uploads its final delta (etcd must still run) unless cause wraps backup.ErrSkipped. It
// returns a runner's setup error, if any.
func (b *backups) stop(cause error) error {
	b.stopFulls()
	<-b.fullsDone
	<-b.gcDone
	<-b.compactDone
	<-b.heartbeatDone
	b.stopDeltas(cause)
	<-b.deltasDone
	b.mu.Lock()
	defer b.mu.Unlock()
	return errors.Join(b.fullsErr, b.deltasErr)
}
