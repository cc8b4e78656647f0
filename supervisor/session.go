package supervisor

import (
	"context"
	"errors"
	"fmt"

	"github.com/etcdbr/etcdbr/backup"
	"github.com/etcdbr/etcdbr/embedded"
	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// startBackups starts taking backups of e (backups.go): the full snapshot runner, the delta
// taker while this member leads, and retention. takeFull makes the runner take a full
// snapshot at once, whatever the store holds. Nothing is uploaded before the store is claimed
// for e's cluster (storeClaim): the full snapshot runner claims (and reads the claim again)
// before each full snapshot, the delta taker waits for the claim; a store of another cluster
// gets neither, nor any garbage collection. The backups end when etcd stops, or before a
// restore.
func (s *Supervisor) startBackups(ctx context.Context, e *embedded.Etcd, takeFull bool) *backups {
	lg := s.lg
	store := s.cfg.Store
	b := &backups{}
	cfg := backupsConfig{
		Store:       store,
		Schedule:    s.cfg.Schedule,
		TakeAtStart: takeFull,
		Observer:    observer{s},
		Log:         lg,
		Take: func(ctx context.Context) (catalog.Snapshot, error) {
			srv := e.Server()
			if srv.Leader() != srv.MemberID() {
				return catalog.Snapshot{}, fmt.Errorf("member %s is not the leader: %w", srv.MemberID(), backup.ErrSkipped)
			}
			l, err := lead(ctx, e)
			if errors.Is(err, embedded.ErrNotLeader) {
				return catalog.Snapshot{}, fmt.Errorf("%w: %w", err, backup.ErrSkipped)
			} else if err != nil {
				return catalog.Snapshot{}, err // retried by the runner
			}
			if hasFreeze(srv.Alarms()) {
				return catalog.Snapshot{}, fmt.Errorf("the cluster is frozen for a cluster restore: no full snapshot (it would carry the freeze into the restored data): %w", backup.ErrSkipped)
			}
			if hasCorruptAlarm(srv.Alarms()) {
				return catalog.Snapshot{}, fmt.Errorf("etcd raised a CORRUPT alarm: no full snapshot of a member whose data may be corrupt: %w", backup.ErrSkipped)
			}
			wasClaimed := s.claim.claimed(e)
			if err := s.claim.claim(ctx, e, true); errors.Is(err, snapstore.ErrClusterMismatch) {
				if wasClaimed {
					// The store was given to another cluster meanwhile: no delta either (the
					// taker stops without a final delta, until etcdbr restarts).
					s.lg.Error("the store's record names another cluster now: no more backups; delta snapshots stay off until etcdbr restarts", "err", err)
					b.stopDeltas(fmt.Errorf("%w: %w", err, backup.ErrSkipped))
				}
				return catalog.Snapshot{}, fmt.Errorf("no full snapshot: %w: %w", err, backup.ErrSkipped)
			} else if err != nil {
				return catalog.Snapshot{}, err // retried by the runner
			}
			// Never while this member is defragmented (its writes would wait for the
			// snapshot's read transaction): the defragger holds backendReads meanwhile.
			s.backendReads.RLock()
			defer s.backendReads.RUnlock()
			// Fenced by the leadership proven before it began: it becomes visible only if this
			// member still leads in that term once the whole snapshot is uploaded.
			return backup.FullFromBackendFenced(ctx, srv.Backend(), store, leadershipFence(l))
		},
	}
	if s.cfg.GC != nil {
		cfg.GC = &backup.GCConfig{
			Store:  store,
			Policy: *s.cfg.GC,
			Period: s.cfg.GCPeriod,
			// Only once the store is known to be this cluster's: never another cluster's backups.
			Active: func() bool { srv := e.Server(); return srv.Leader() == srv.MemberID() && s.claim.claimed(e) },
			Fence:  leaderFence(e),
			OnRun: func(r backup.GCRun) {
				s.GCDeleted(catalog.KindFull, r.Result.DeletedFulls)
				s.GCDeleted(catalog.KindDelta, r.Result.DeletedDeltas)
			},
			Log: lg.With("component", "gc"),
		}
	}
	if s.cfg.Compact != nil {
		cfg.Compact = s.newCompactor(e).run
	}
	cfg.Heartbeat = func(ctx context.Context, stopDeltas context.CancelCauseFunc) { s.heartbeat(ctx, e, stopDeltas) }
	if s.cfg.DeltaPeriod > 0 {
		dcfg := backup.DeltaConfig{
			Store:  store,
			Client: e.Client(),
			Events: e.Events,
			// The member's own revision, read locally: a leader cut off from its peers still
			// answers it, so that its flushes and its final delta reach the fence.
			Revision:    func(context.Context) (int64, error) { return e.Server().KV().Rev(), nil },
			Period:      s.cfg.DeltaPeriod,
			MemoryLimit: s.cfg.DeltaMemoryLimit,
			Log:         lg.With("component", "delta"),
			Observer:    observer{s},
			Flusher:     s.flusher,
		}
		cfg.Deltas = func(ctx context.Context, full backup.TakeFunc) error {
			dcfg.Full = full
			if !s.claim.wait(ctx, e, dcfg.Log) { // no delta before the store is this cluster's
				return nil
			}
			return deltasWhileLeader(ctx, e, dcfg, lg) // likewise
		}
	}
	b.start(ctx, cfg)
	if cfg.Deltas == nil {
		lg.Info("delta snapshots are disabled (--delta-snapshot-period 0): a restore loses the writes since the last full snapshot")
	}
	s.mu.Lock()
	s.backups = b
	s.mu.Unlock()
	return b
}
