package rebuild

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"syscall"

	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/server/v3/storage/backend"
	"go.etcd.io/etcd/server/v3/storage/mvcc"
	"go.etcd.io/etcd/server/v3/storage/schema"
)

// Adopting a fetched db. etcdutl's restore copies the snapshot db into the new member and
// then changes the copy in three ways: it empties the membership buckets, adds the new
// members to them, and sets the consistent index and term of the raft log it writes. The
// WAL and the raft snapshot it writes do not depend on the db. So when the snapshot db is a
// file of the restore's own (RestoreOptions.MoveSnapshot), etcdutl restores a seed db
// instead, a db of only the buckets those changes write to, and the fetched db takes what
// etcdutl wrote into the seed and is moved in its place: the same db as etcdutl's, without
// copying gigabytes. A replay that writes the member's db compacted (replay_compact.go)
// reads the fetched db where it is and writes the seed's records into the new db itself.
// TestReplayDeltas/a_fetched_db_moved_into_the_member_is_etcdutl's_copy compares the two
// bucket by bucket; should a later etcdutl write to a bucket the seed lacks,
// etcd's backend ends the process on the seed ("failed to find a bucket"), and that test
// with it.

// seedBuckets are the buckets of the seed db: those etcdutl's restore writes to.
var seedBuckets = []backend.Bucket{schema.Meta, schema.Members, schema.MembersRemoved, schema.Cluster}

// replacedBuckets are the buckets whose content etcdutl's restore replaces (it trims the
// membership, then adds the new members); into the others it only puts.
var replacedBuckets = []backend.Bucket{schema.Members, schema.MembersRemoved}

// writeSeedDB creates at path the seed db: empty buckets that etcdutl's restore writes to.
func writeSeedDB(path string) error {
	db, err := bolt.Open(path, 0o600, &bolt.Options{NoSync: true})
	if err != nil {
		return fmt.Errorf("create the seed db %q: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range seedBuckets {
			if _, err := tx.CreateBucketIfNotExists(b.Name()); err != nil {
				return err
			}
		}
		return nil
	})
	if cerr := db.Close(); cerr != nil && err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("create the seed db %q: %w", path, err)
	}
	return nil
}

// adoptSnapshot makes the fetched db at dbPath the member's db at memberDB, which etcdutl's
// restore built from the seed db: every record etcdutl wrote into the seed is written into
// the fetched db (the membership buckets emptied first, as etcdutl trims them), the latest
// revision is raised by bump and marked compacted when bump > 0 (etcdutl's RevisionBump with
// MarkCompacted), and the fetched db is renamed over memberDB (copied when a rename cannot:
// another file system). The fetched db is gone afterwards, whether adoptSnapshot succeeds or
// not: a failed restore removes its staging dir.
func adoptSnapshot(dbPath, memberDB string, bump int64, lg *slog.Logger) error {
	if err := writeSeedInto(memberDB, dbPath, bump, lg); err != nil {
		return err
	}
	return moveFile(dbPath, memberDB)
}

// writeSeedInto writes the records of the seed db at seedPath into the db at dbPath (see
// adoptSnapshot), and bumps its latest revision when bump > 0.
func writeSeedInto(seedPath, dbPath string, bump int64, lg *slog.Logger) error {
	seed, err := bolt.Open(seedPath, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("open the restored seed db %q: %w", seedPath, err)
	}
	defer seed.Close()
	db, err := openFetched(dbPath)
	if err != nil {
		return err
	}
	err = seed.View(func(from *bolt.Tx) error {
		return db.Update(func(to *bolt.Tx) error {
			if err := copySeed(from, to); err != nil {
				return err
			}
			if bump > 0 {
				return bumpLatest(to, bump, lg)
			}
			return nil
		})
	})
	if cerr := db.Close(); cerr != nil && err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write the new membership into the db %q: %w", dbPath, err)
	}
	return nil
}

// openFetched opens the fetched db for writing (etcdBoltOptions), turning a panic of bbolt on
// a damaged file into an error.
func openFetched(path string) (db *bolt.DB, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("open the db %q: bbolt failed: %v", path, p)
		}
	}()
	db, err = bolt.Open(path, 0o600, etcdBoltOptions())
	if err != nil {
		return nil, fmt.Errorf("open the db %q: %w", path, err)
	}
	return db, nil
}

// copySeed writes every record of the seed's buckets into to, after emptying the
// replacedBuckets of to.
func copySeed(from, to *bolt.Tx) error {
	for _, b := range seedBuckets {
		name := b.Name()
		src := from.Bucket(name)
		if src == nil {
			continue
		}
		dst, err := to.CreateBucketIfNotExists(name)
		if err != nil {
			return fmt.Errorf("bucket %q: %w", name, err)
		}
		for _, r := range replacedBuckets {
			if bytes.Equal(r.Name(), name) {
				if err := emptyBucket(dst); err != nil {
					return fmt.Errorf("bucket %q: %w", name, err)
				}
			}
		}
		if err := src.ForEach(func(k, v []byte) error { return dst.Put(k, v) }); err != nil {
			return fmt.Errorf("bucket %q: %w", name, err)
		}
	}
	return nil
}

// emptyBucket deletes every key of b.
func emptyBucket(b *bolt.Bucket) error {
	c := b.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.First() {
		if err := c.Delete(); err != nil {
			return err
		}
	}
	return nil
}

// bumpLatest is etcdutl's RevisionBump with MarkCompacted (v3Manager.modifyLatestRevision):
// an empty value is put at the latest revision of the "key" bucket (main and sub; bucket
// keys sort as revisions) plus amount, sub 0, and that revision becomes the scheduled
// compaction, which etcd finishes when it starts.
func bumpLatest(tx *bolt.Tx, amount int64, lg *slog.Logger) error {
	keys := tx.Bucket(schema.Key.Name())
	if keys == nil {
		return fmt.Errorf("the db has no %q bucket", schema.Key.Name())
	}
	var latest int64
	if k, _ := keys.Cursor().Last(); k != nil {
		latest = mvcc.BytesToRev(k).Main
	}
	return bumpFrom(tx, latest, amount, false, lg)
}

// bumpFrom puts the bump's empty value at revision latest+amount (sub 0) and schedules the
// compaction there; finished records it done as well (the db holds what it leaves).
func bumpFrom(tx *bolt.Tx, latest, amount int64, finished bool, lg *slog.Logger) error {
	lg.Info("bumping the latest revision and marking it compacted", "latest_revision", latest,
		"bump", amount, "new_latest_revision", latest+amount)
	bumped := mvcc.Revision{Main: latest + amount}
	ut := &boltWriter{tx: tx}
	ut.UnsafePut(schema.Key, mvcc.RevToBytes(bumped, mvcc.NewRevBytes()), []byte{})
	mvcc.UnsafeSetScheduledCompact(ut, bumped.Main)
	if finished {
		mvcc.UnsafeSetFinishedCompact(ut, bumped.Main)
	}
	return ut.err
}

// moveFile renames from to to, replacing it; across file systems (EXDEV) it copies from
// into to and removes from.
func moveFile(from, to string) error {
	err := os.Rename(from, to)
	if !errors.Is(err, syscall.EXDEV) {
		if err != nil {
			return fmt.Errorf("move the db %q into %q: %w", from, to, err)
		}
		return nil
	}
	src, err := os.Open(from)
	if err != nil {
		return fmt.Errorf("copy the db %q into %q: %w", from, to, err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("copy the db %q into %q: %w", from, to, err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return fmt.Errorf("copy the db %q into %q: %w", from, to, err)
	}
	if err := dst.Close(); err != nil {
		return fmt.Errorf("copy the db %q into %q: %w", from, to, err)
	}
	return os.Remove(from)
}
