package supervisor

import (
	"context"
	"time"

	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// How often, and for how long at most, the prober checks that the store is reachable; it
// reads the store's damage records every damageProbeEvery checks.
const (
	storeProbeInterval = 15 * time.Second
	storeProbeTimeout  = 10 * time.Second
	damageProbeEvery   = 4
)

// probeStore learns the newest objects of the store once (one listing of each kind, so
// that status and readiness know them before the first backup), then checks every
// storeProbeInterval that the store is reachable, until ctx ends; it reads the store's
// damage records with the first listing and then every damageProbeEvery checks. Failures
// are only recorded: a store that is unreachable never stops etcd.
func (s *Supervisor) probeStore(ctx context.Context) {
	listed := false
	checks := 0
	tick := time.NewTicker(storeProbeInterval)
	defer tick.Stop()
	for {
		if !listed {
			if listed = s.learnNewest(ctx); listed {
				s.learnDamage(ctx)
			}
		} else {
			s.checkStore(ctx)
			if checks++; checks%damageProbeEvery == 0 {
				s.learnDamage(ctx)
			}
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

// learnDamage reads the store's damage records that apply (Store.DamageRecords), for the
// status, the backup readiness check and etcdbr_store_damaged_objects, and logs the ones it
// did not know yet: damage stays visible until a person replaces the object or removes its
// record.
func (s *Supervisor) learnDamage(ctx context.Context) {
	lctx, cancel := context.WithTimeout(ctx, storeProbeTimeout)
	defer cancel()
	ds, err := s.cfg.Store.DamageRecords(lctx)
	if err != nil {
		if ctx.Err() == nil {
			s.lg.Warn("cannot read the store's damage records; reading them again later", "store", s.cfg.Store.URL(), "err", err)
		}
		return
	}
	if added := s.health.noteDamaged(ds); len(added) > 0 {
		s.lg.Error("the store records damaged backup objects: every restore leaves them out, so the points after them "+
			"that only they hold cannot be restored; garbage collection keeps them. Replace each from a copy if there is one, "+
			"then remove its record under "+snapstore.DamagePrefix+" (etcdbr list and etcdbr verify name them)",
			"store", s.cfg.Store.URL(), "damaged", added, "recorded", len(ds))
	}
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
