package supervisor

import (
	"context"

	"github.com/etcdbr/etcdbr/embedded/datadir"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// historyOf is the store's record of the history that the restore m describes started.
func historyOf(m datadir.RestoredMarker) catalog.History {
	return catalog.History{
		Start: m.DataRevision, Began: m.Written, Revision: m.Revision, RevisionTime: m.RevisionTime,
		Served: m.Served, Trigger: m.Trigger,
	}
}

// recordHistory records in the store the history that the restore m started. Call it only
// once the store is claimed for the member's cluster (storeClaim.claim): a store of another
// cluster gets nothing. A failure is logged: the history's backups restore without the
// record, which only tells a listing where the history began.
func (s *Supervisor) recordHistory(ctx context.Context, m datadir.RestoredMarker) {
	h := historyOf(m)
	if err := s.cfg.Store.RecordHistory(ctx, h); err != nil {
		s.lg.Warn("cannot record the new history in the store: its backups restore all the same, but a listing shows "+
			"the revisions it skipped as pruned", "start", h.Start, "err", err)
		return
	}
	s.lg.Info("new history recorded in the store", "start", h.Start, "restored_revision", h.Revision, "trigger", h.Trigger)
}
