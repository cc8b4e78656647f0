package supervisor

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/etcdbr/etcdbr/backup"
	"github.com/etcdbr/etcdbr/embedded"
	"github.com/etcdbr/etcdbr/embedded/rebuild"
	"github.com/etcdbr/etcdbr/internal/backoff"
	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// CompactConfig turns on the compaction of the backup chain in etcdbr run: while this
// member takes backups, every Period the chain since the newest full snapshot is checked
// against Bound, and once it passes the bound it is compacted (Compact) at low priority.
type CompactConfig struct {
	Bound catalog.CompactBound
	// Period is how often the chain is checked (0: DefaultCompactPeriod): one listing of the
	// store's full snapshots and deltas each time.
	Period time.Duration
	// SpoolDir is where the compacted db is built ("": CompactSpoolDir of the data dir).
	SpoolDir string
}

// DefaultCompactPeriod is how often etcdbr run checks the chain by default.
const DefaultCompactPeriod = time.Minute

// Waits after a failed compaction before the next try: the check goes on every period, but
// a compaction that failed is tried again only after this backoff (a refusal, a damaged
// delta, needs a person; the log says so once per try).
const (
	compactRetryMin = 5 * time.Minute
	compactRetryMax = 2 * time.Hour
)

// CompactSpoolDir is where etcdbr run builds compacted dbs by default: a sibling of the data
// dir (its filesystem is sized for the db), <data-dir>.etcdbr-compact.
func CompactSpoolDir(dataDir string) string {
	return filepath.Clean(dataDir) + ".etcdbr-compact"
}

// compactor is the compaction of the backup chain of one etcd in etcdbr run, started and
// stopped with its backups (backupsConfig.Compact). Its fields are set by newCompactor and
// read-only after; retry and notBefore belong to run's goroutine.
type compactor struct {
	s      *Supervisor
	e      *embedded.Etcd
	store  *snapstore.Store
	cfg    CompactConfig
	active func() bool
	minTTL int64
	log    *slog.Logger

	retry     backoff.Backoff
	notBefore time.Time
}

// newCompactor returns the compactor of e's backups.
func (s *Supervisor) newCompactor(e *embedded.Etcd) *compactor {
	cfg := *s.cfg.Compact
	if cfg.Period <= 0 {
		cfg.Period = DefaultCompactPeriod
	}
	if cfg.SpoolDir == "" {
		cfg.SpoolDir = CompactSpoolDir(s.cfg.Etcd.Dir)
	}
	return &compactor{
		s: s, e: e, store: s.cfg.Store, cfg: cfg, minTTL: rebuild.MinLeaseTTL(s.cfg.Etcd),
		// The garbage collector's check, cheap (no request): the leader (a single member
		// always is), once the store is known to be this cluster's. Before it compacts, the
		// compactor proves its leadership as the full snapshot runner does.
		active: func() bool { srv := e.Server(); return srv.Leader() == srv.MemberID() && s.claim.claimed(e) },
		log:    s.lg.With("component", "compact"),
		retry:  backoff.Backoff{Min: compactRetryMin, Max: compactRetryMax},
	}
}

// run checks the chain at once and then every period until ctx ends, compacting it when it
// passes the bound.
func (c *compactor) run(ctx context.Context) {
	c.log.Info("the backup chain is compacted when it passes a bound", "revisions", c.cfg.Bound.Revisions,
		"bytes", c.cfg.Bound.Bytes, "check_period", c.cfg.Period, "spool_dir", c.cfg.SpoolDir)
	t := time.NewTicker(c.cfg.Period)
	defer t.Stop()
	for {
		c.check(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// check compacts the chain when this member takes backups and the chain passes the bound.
func (c *compactor) check(ctx context.Context) {
	if !c.active() || time.Now().Before(c.notBefore) {
		return
	}
	l, err := c.store.ListBackups(ctx)
	if err != nil {
		if ctx.Err() == nil {
			c.log.Warn("cannot list the store to check the backup chain; the next check tries again", "err", err)
		}
		return
	}
	plan, err := catalog.PlanCompaction(l.Fulls, l.Deltas, catalog.Target{}, nil, nil)
	if err != nil {
		// No chain to the newest point (no full snapshot yet, a gap): nothing a compaction
		// can do; listings and the readiness checks report it.
		c.log.Debug("no chain to compact", "reason", err)
		c.s.metrics.chain(catalog.Chain{})
		return
	}
	c.s.metrics.chain(plan.Chain)
	why, due := c.cfg.Bound.Due(plan.Chain)
	if !due {
		return
	}
	// The full snapshot runner's check: this member leads, proven by a read etcd
	// linearizes; the upload is fenced by that leadership.
	leadership, err := lead(ctx, c.e)
	if err != nil {
		c.log.Debug("no compaction: this member's leadership is not proven", "err", err)
		return
	}
	c.log.Info("compacting the backup chain at low priority", "why", why, "full", plan.Full.Key, "deltas", plan.Chain.Deltas,
		"revisions", plan.Chain.Revisions, "delta_bytes", plan.Chain.Bytes)
	res, err := Compact(ctx, c.store, CompactOptions{
		SpoolDir:    c.cfg.SpoolDir,
		CleanSpool:  true,
		MinLeaseTTL: c.minTTL,
		LowPriority: true,
		Fence:       leadershipFence(leadership),
		Log:         c.log,
	})
	switch {
	case err == nil:
		c.retry.Reset()
		c.notBefore = time.Time{}
		if res.Full.Key != "" {
			c.s.metrics.compacted(res, nil)
			c.s.health.noteNewest(res.Full)
			c.s.metrics.chain(catalog.Chain{Full: res.Full, Revision: res.Full.Revision})
		}
	case ctx.Err() != nil:
		c.log.Info("compaction abandoned: stopping (its scratch dir is removed, nothing was uploaded)")
	case errors.Is(err, backup.ErrFenced):
		observer{c.s}.Fenced(catalog.KindFull, err)
		c.log.Info("compaction abandoned: this member stopped leading before its full snapshot became visible", "err", err)
	default:
		c.s.metrics.compacted(res, err)
		wait := c.retry.Next()
		c.notBefore = time.Now().Add(wait)
		c.log.Error("compaction of the backup chain failed; restores replay the whole chain until it succeeds",
			"err", err, "next_try_in", wait)
		c.s.recordError("compact", err)
	}
}
