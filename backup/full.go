package backup

import (
	"context"
	"fmt"
	"io"
	"time"

	"go.etcd.io/etcd/server/v3/storage/backend"

	"github.com/etcdbr/etcdbr/internal/dbrev"
	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// FullFromBackend takes a full snapshot of an in-process etcd backend and streams it into the
// store, compressed, without a second copy on disk or in memory.
//
// The object holds exactly what etcd's Maintenance API would send: the bbolt db followed by
// its SHA-256. Its name carries the revision read from the snapshot's own read transaction, so
// it is the exact revision inside the snapshot whatever is written meanwhile.
//
// When ctx ends before the upload commits, the upload is abandoned and nothing appears in the
// store.
func FullFromBackend(ctx context.Context, be backend.Backend, store *snapstore.Store) (catalog.Snapshot, error) {
	return FullFromBackendFenced(ctx, be, store, nil)
}

// FullFromBackendFenced is FullFromBackend with a fence, checked once the whole snapshot is
// uploaded and just before it becomes visible: when it refuses, nothing becomes visible and
// the error wraps its error (ErrFenced when it refused for good). A full snapshot has no
// commit window: it may become visible up to one commit request after the fence, and a full
// snapshot, named with the exact revision inside, never overlaps anything in the store.
func FullFromBackendFenced(ctx context.Context, be backend.Backend, store *snapstore.Store, fence Fence) (catalog.Snapshot, error) {
	snap := be.Snapshot()
	defer snap.Close()
	tx, ok := snap.(dbrev.Reader)
	if !ok {
		return catalog.Snapshot{}, fmt.Errorf("full snapshot: etcd backend snapshot %T does not expose its read transaction", snap)
	}
	rev, err := dbrev.Revision(tx)
	if err != nil {
		return catalog.Snapshot{}, classify(ReasonEtcd, fmt.Errorf("full snapshot: %w", err))
	}
	return upload(ctx, store, rev, time.Now(), fence, func(w io.Writer) error {
		_, err := snap.WriteTo(w)
		if err != nil && ReasonOf(err) == ReasonOther {
			err = classify(ReasonEtcd, err) // not the store's: reading etcd's db
		}
		return err
	})
}

// upload streams a db written by writeDB into a new full snapshot object at revision rev,
// followed by the db's SHA-256 as etcd's Maintenance API appends it, and commits it once
// fence (nil: none) lets it. The store's errors are classified ReasonStore.
func upload(ctx context.Context, store *snapstore.Store, rev int64, at time.Time, fence Fence, writeDB func(io.Writer) error) (catalog.Snapshot, error) {
	w, err := store.Create(ctx, catalog.Snapshot{Kind: catalog.KindFull, Revision: rev, Time: at})
	if err != nil {
		return catalog.Snapshot{}, classify(ReasonStore, fmt.Errorf("full snapshot at revision %d: %w", rev, err))
	}
	defer w.Abort() //nolint:errcheck // a no-op once committed
	cw := &ctxWriter{ctx: ctx, w: storeWriter{w}}
	if err := writeDB(cw); err != nil {
		return catalog.Snapshot{}, fmt.Errorf("full snapshot at revision %d: stream db: %w", rev, err)
	}
	// The Writer hashes what it compresses: so far, the db.
	if _, err := cw.Write(w.Sum()); err != nil {
		return catalog.Snapshot{}, fmt.Errorf("full snapshot at revision %d: write checksum: %w", rev, err)
	}
	s, err := w.CommitFenced(fence.check(), 0)
	if err != nil {
		return catalog.Snapshot{}, classify(ReasonStore, fmt.Errorf("full snapshot at revision %d: commit: %w", rev, err))
	}
	return s, nil
}

// storeWriter classifies the errors of a store upload's writes as ReasonStore.
type storeWriter struct{ w io.Writer }

func (s storeWriter) Write(p []byte) (int, error) {
	n, err := s.w.Write(p)
	return n, classify(ReasonStore, err)
}

// ctxWriter fails writes once its context is done, so that a long stream stops promptly when
// the snapshot is abandoned.
type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (c *ctxWriter) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.w.Write(p)
}
