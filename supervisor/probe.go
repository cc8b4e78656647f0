package supervisor

import (
	"context"
	"time"

	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// How often, and for how long at most, the prober checks that the store is reachable.
const (
	storeProbeInterval = 15 * time.Second
	storeProbeTimeout  = 10 * time.Second
)

// probeStore learns the newest objects of the store once (one listing of each kind, so
// that status and readiness know them before the first backup), then checks every
// storeProbeInterval that the store is reachable, until ctx ends. Failures are only
// recorded: a store that is unreachable never stops etcd.
func (s *Supervisor) probeStore(ctx context.Context) {
	listed := false
	tick := time.NewTicker(storeProbeInterval)
	defer tick.Stop()
	for {
		if !listed {
			listed = s.learnNewest(ctx)
		} else {
			s.checkStore(ctx)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// learnNewest lists the store's newest full snapshot and delta; it reports whether it could.
func (s *Supervisor) learnNewest(ctx context.Context) bool {
	for _, kind := range []catalog.Kind{catalog.KindFull, catalog.KindDelta} {
		lctx, cancel := context.WithTimeout(ctx, storeProbeTimeout)
		snap, ok, err := s.cfg.Store.Latest(lctx, kind)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				s.metrics.storeErrors.WithLabelValues(storeOpList).Inc()
				s.health.storeResult(err)
				s.lg.Warn("cannot list the store; listing again later", "store", s.cfg.Store.URL(), "err", err, "in", storeProbeInterval)
			}
			return false
		}
		if ok {
			s.health.noteNewest(snap)
		}
	}
	s.health.storeResult(nil)
	return true
}

// checkStore checks that the store is reachable.
func (s *Supervisor) checkStore(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, storeProbeTimeout)
	defer cancel()
	err := s.cfg.Store.Check(cctx)
	if ctx.Err() != nil {
		return
	}
	if err != nil {
		s.metrics.storeErrors.WithLabelValues(storeOpCheck).Inc()
		s.lg.Warn("the store is not reachable; backups are retried, etcd keeps serving", "err", err)
	}
	s.health.storeResult(err)
}
