// Package dbrev reads the mvcc revision held in an etcd bbolt database: through bbolt
// (Revision, FileRevision), or from the db's bytes as a snapshot stream carries them, with
// internal/boltfmt's decoding of the pages (Scanner); and it reads the revision keys of the
// "key" bucket (ParseKey).
package dbrev

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/server/v3/storage/schema"
)

// revBytesLen is the length of an encoded mvcc revision: 8 bytes main, '_', 8 bytes sub.
const revBytesLen = 8 + 1 + 8

// mainRevision reads the main revision of an encoded mvcc revision (a "key" bucket's key, or
// a compaction's record in "meta"): an error where etcd's mvcc.BytesToRev panics (too short,
// or no '_' after the main revision).
func mainRevision(b []byte) (int64, error) {
	if len(b) < revBytesLen || b[8] != '_' {
		return 0, fmt.Errorf("not a revision (8 bytes, '_', 8 bytes): %x", b)
	}
	return int64(binary.BigEndian.Uint64(b)), nil
}

// Reader is the part of a bbolt read transaction dbrev needs. *bolt.Tx implements it, and so
// does the snapshot etcd's backend returns (it embeds its *bolt.Tx).
type Reader interface {
	Bucket(name []byte) *bolt.Bucket
}

// Revision returns the revision etcd reports after starting from the database seen through
// tx: the highest of the newest main revision in the key bucket and the finished and
// scheduled compaction revisions in the meta bucket (as etcd's mvcc store computes it when
// it restores its state), and at least 1, the revision of an empty store.
func Revision(tx Reader) (int64, error) {
	keys := tx.Bucket(schema.Key.Name())
	if keys == nil {
		return 0, errors.New("read revision: the db has no \"key\" bucket: not an etcd v3 database")
	}
	rev := int64(1)
	if k, _ := keys.Cursor().Last(); k != nil {
		main, err := mainRevision(k)
		if err != nil {
			return 0, fmt.Errorf("read revision: malformed revision key in the \"key\" bucket: %w", err)
		}
		rev = max(rev, main)
	}
	if meta := tx.Bucket(schema.Meta.Name()); meta != nil {
		for _, name := range [][]byte{schema.FinishedCompactKeyName, schema.ScheduledCompactKeyName} {
			v := meta.Get(name)
			if v == nil {
				continue
			}
			r, err := mainRevision(v)
			if err != nil {
				return 0, fmt.Errorf("read revision: malformed %s value in the \"meta\" bucket: %w", name, err)
			}
			rev = max(rev, r)
		}
	}
	return rev, nil
}

// FileRevision opens the bbolt db at path read-only (waiting at most lockTimeout for the
// file lock; bolt's ErrTimeout is wrapped when it is held) and returns Revision of it.
func FileRevision(path string, lockTimeout time.Duration) (int64, error) {
	db, err := bolt.Open(path, 0o400, &bolt.Options{ReadOnly: true, Timeout: lockTimeout})
	if err != nil {
		return 0, fmt.Errorf("open db %q: %w", path, err)
	}
	defer db.Close()
	var rev int64
	err = db.View(func(tx *bolt.Tx) error {
		var err error
		rev, err = Revision(tx)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("db %q: %w", path, err)
	}
	return rev, nil
}
