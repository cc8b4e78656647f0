package backup

import (
	"context"
	"fmt"
	"time"

	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// writeDelta uploads one delta holding b's revisions and leases. The object is named with
// the batch's exact revision range and the time of the upload, which is after every
// revision in it was observed. fence (nil: none) is checked just before the object becomes
// visible, which must then happen within DeltaCommitWindow. On failure nothing appears in
// the store; the error is classified ReasonStore (ReasonEtcd when the fence could not prove
// the right to upload), and wraps ErrFenced when the fence refused.
func writeDelta(ctx context.Context, store *snapstore.Store, b *deltaBatch, fence Fence) (catalog.Snapshot, error) {
	snap, err := encodeDelta(ctx, store, b, fence)
	return snap, classify(ReasonStore, err)
}

// encodeDelta is writeDelta without the classification.
func encodeDelta(ctx context.Context, store *snapstore.Store, b *deltaBatch, fence Fence) (catalog.Snapshot, error) {
	ctx, cancel := context.WithTimeout(ctx, deltaUploadTimeout)
	defer cancel()
	from, to := b.from(), b.to()
	w, err := store.Create(ctx, catalog.Snapshot{Kind: catalog.KindDelta, From: from, Revision: to, Time: time.Now()})
	if err != nil {
		return catalog.Snapshot{}, fmt.Errorf("delta %d..%d: %w", from, to, err)
	}
	defer w.Abort() //nolint:errcheck // a no-op once committed
	enc, err := snapstore.NewDeltaEncoder(w, from, to)
	if err != nil {
		return catalog.Snapshot{}, fmt.Errorf("delta %d..%d: %w", from, to, err)
	}
	for _, l := range b.leases {
		if err := enc.Lease(l); err != nil {
			return catalog.Snapshot{}, fmt.Errorf("delta %d..%d: write lease %x: %w", from, to, l.ID, err)
		}
	}
	for _, r := range b.revs {
		if err := enc.Revision(r); err != nil {
			return catalog.Snapshot{}, fmt.Errorf("delta %d..%d: write revision %d: %w", from, to, r.Revision, err)
		}
	}
	if err := enc.Close(); err != nil {
		return catalog.Snapshot{}, fmt.Errorf("delta %d..%d: %w", from, to, err)
	}
	snap, err := w.CommitFenced(fence.check(), DeltaCommitWindow)
	if err != nil {
		return catalog.Snapshot{}, fmt.Errorf("delta %d..%d: %w", from, to, err)
	}
	return snap, nil
}
