package backup

import (
	"context"
	"fmt"
	"io"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/etcdbr/etcdbr/internal/dbrev"
	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// FullFromDB uploads the etcd db file at path (a bbolt file that no one writes meanwhile,
// such as the db a compaction of the backup chain built) as a full snapshot taken at time
// at, the time its newest revision was observed.
//
// The object holds what FullFromBackend's hold, what etcd's Maintenance API sends: the db as
// one read transaction of it writes it (bbolt's Tx.WriteTo, the call etcd's own snapshot
// makes) followed by its SHA-256. Its name carries the revision read from that same
// transaction; when want is not 0 and the db holds another revision, nothing is uploaded.
// fence (nil: none) is checked once the whole db is uploaded, just before the object becomes
// visible, as FullFromBackendFenced's. When ctx ends before the upload commits, the upload
// is abandoned and nothing appears in the store.
func FullFromDB(ctx context.Context, path string, store *snapstore.Store, at time.Time, want int64, fence Fence) (catalog.Snapshot, error) {
	db, err := bolt.Open(path, 0o400, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		return catalog.Snapshot{}, fmt.Errorf("full snapshot of %q: open: %w", path, err)
	}
	defer db.Close()
	tx, err := db.Begin(false)
	if err != nil {
		return catalog.Snapshot{}, fmt.Errorf("full snapshot of %q: %w", path, err)
	}
	defer tx.Rollback() //nolint:errcheck // a read transaction
	rev, err := dbrev.Revision(tx)
	if err != nil {
		return catalog.Snapshot{}, fmt.Errorf("full snapshot of %q: %w", path, err)
	}
	if want > 0 && rev != want {
		return catalog.Snapshot{}, fmt.Errorf("full snapshot of %q: the db holds revision %d, not %d", path, rev, want)
	}
	return upload(ctx, store, rev, at, fence, func(w io.Writer) error {
		_, err := tx.WriteTo(w)
		return err
	})
}
