package backup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// DefaultGCPeriod is how often garbage collection runs by default.
const DefaultGCPeriod = time.Minute

// GCConfig configures a GC runner.
type GCConfig struct {
	Store  *snapstore.Store
	Policy catalog.Policy
	// Period is how often garbage collection runs (0: DefaultGCPeriod). It also runs at
	// start and soon after Trigger.
	Period time.Duration
	// Active reports whether this member takes backups now (the leader, or the only
	// member); runs are skipped while it returns false. Nil means always.
	Active func() bool
	// Fence, when set, proves that this member still holds the right to write to the store
	// before the first deletion of a run and again at most 2 s apart while it deletes
	// (snapstore.ApplyOptions.Fence): when it refuses, the run stops there.
	Fence Fence
	// OnRun, when set, is called after every run (for metrics and tests).
	OnRun func(GCRun)
	// Now is the clock the policy counts from (nil: time.Now).
	Now func() time.Time
	Log *slog.Logger
}

// GCRun is what one garbage collection run did.
type GCRun struct {
	Plan   catalog.GCPlan
	Result snapstore.GCResult
	// Err is why the run failed (it wraps ErrSkipped when this member does not take
	// backups now).
	Err      error
	Duration time.Duration
}

// GC runs garbage collection on a store: one listing, the policy's plan, the deletions in
// order (see catalog.PlanGC and Store.ApplyGC). Runs never overlap. A failed run is
// logged and the next one tries again; failures never stop the member.
type GC struct {
	cfg     GCConfig
	trigger chan struct{}
	mu      sync.Mutex // held during a run
	paused  string     // the last reason a run deleted nothing, logged once
}

// NewGC returns a GC runner after checking the policy.
func NewGC(cfg GCConfig) (*GC, error) {
	if err := cfg.Policy.Validate(); err != nil {
		return nil, err
	}
	if cfg.Store == nil {
		return nil, errors.New("garbage collection: no store")
	}
	if cfg.Period <= 0 {
		cfg.Period = DefaultGCPeriod
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &GC{cfg: cfg, trigger: make(chan struct{}, 1)}, nil
}

// Run runs garbage collection at once, then every Period and soon after each Trigger, until
// ctx ends. A run in progress when ctx ends is cut short (what it deleted stays deleted; what
// is left restores, and the next run goes on). It returns nil.
func (g *GC) Run(ctx context.Context) error {
	t := time.NewTicker(g.cfg.Period)
	defer t.Stop()
	for {
		g.RunOnce(ctx) //nolint:errcheck // logged and reported by RunOnce
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-g.trigger:
		}
	}
}

// Trigger asks Run for a run soon (after a full snapshot: older ones may now go). It never
// blocks; triggers while a run is due are merged.
func (g *GC) Trigger() {
	select {
	case g.trigger <- struct{}{}:
	default:
	}
}

// RunOnce runs garbage collection now (after any run in progress), unless this member does
// not take backups now: then it returns an error wrapping ErrSkipped.
func (g *GC) RunOnce(ctx context.Context) (GCRun, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	start := time.Now()
	run := g.run(ctx)
	run.Duration = time.Since(start)
	g.logRun(ctx, run)
	if g.cfg.OnRun != nil {
		g.cfg.OnRun(run)
	}
	return run, run.Err
}

func (g *GC) run(ctx context.Context) GCRun {
	if g.cfg.Active != nil && !g.cfg.Active() {
		return GCRun{Err: fmt.Errorf("garbage collection: this member does not take backups now: %w", ErrSkipped)}
	}
	listing, err := g.cfg.Store.ListForGC(ctx)
	if err != nil {
		return GCRun{Err: fmt.Errorf("garbage collection: %w", err)}
	}
	plan, err := catalog.PlanGC(listing, g.cfg.Policy, g.cfg.Now())
	if err != nil {
		return GCRun{Err: fmt.Errorf("garbage collection in %s: %w", g.cfg.Store.URL(), err)}
	}
	if len(plan.Delete) > 0 {
		// The start of the deletions, for whoever must know that one was under way (the
		// crash trials tell a kill during garbage collection by it).
		g.cfg.Log.Debug("garbage collection: deleting", "objects", len(plan.Delete))
	}
	res, err := g.cfg.Store.ApplyGC(ctx, plan, snapstore.ApplyOptions{Now: g.cfg.Now, Log: g.cfg.Log, Fence: g.cfg.Fence})
	return GCRun{Plan: plan, Result: res, Err: err}
}

func (g *GC) logRun(ctx context.Context, run GCRun) {
	lg := g.cfg.Log
	switch {
	case errors.Is(run.Err, ErrSkipped):
		lg.Debug("garbage collection skipped", "reason", run.Err)
		return
	case errors.Is(run.Err, ErrFenced):
		lg.Warn("garbage collection fenced: this member no longer leads; it deletes nothing more",
			"deleted", run.Result.DeletedFulls+run.Result.DeletedDeltas, "left", run.Result.Left, "err", run.Err)
		return
	case errors.Is(run.Err, catalog.ErrUnsafeGC):
		lg.Error("garbage collection refused to delete anything", "store", g.cfg.Store.URL(), "err", run.Err)
		return
	case run.Err != nil && ctx.Err() != nil:
		lg.Info("garbage collection interrupted: stopping; the next start goes on",
			"deleted", run.Result.DeletedFulls+run.Result.DeletedDeltas, "left", run.Result.Left)
		return
	case run.Err != nil:
		lg.Warn("garbage collection failed; the next run tries again", "store", g.cfg.Store.URL(),
			"deleted", run.Result.DeletedFulls+run.Result.DeletedDeltas, "left", run.Result.Left, "err", run.Err)
		return
	}
	if p := run.Plan.Paused; p != g.paused {
		g.paused = p
		if p != "" {
			lg.Info("garbage collection deletes nothing for now", "reason", p)
		}
	}
	if run.Result.Stopped != "" {
		lg.Info("garbage collection stopped early", "reason", run.Result.Stopped,
			"deleted", run.Result.DeletedFulls+run.Result.DeletedDeltas, "left", run.Result.Left)
	}
	attrs := []any{
		"deleted_fulls", run.Result.DeletedFulls, "deleted_deltas", run.Result.DeletedDeltas, "bytes", run.Result.Bytes,
		"kept_fulls", run.Plan.KeptFulls, "kept_deltas", run.Plan.KeptDeltas,
		"window_from", run.Plan.WindowFrom.UTC().Format(time.RFC3339Nano), "duration", run.Duration.Round(time.Millisecond),
	}
	if run.Result.DeletedFulls+run.Result.DeletedDeltas+run.Result.StaleLocks > 0 {
		lg.Info("garbage collection", attrs...)
	} else {
		lg.Debug("garbage collection: nothing to delete", attrs...)
	}
}
