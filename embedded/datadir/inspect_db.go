package datadir

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/coreos/go-semver/semver"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/server/v3/lease/leasepb"
	"go.etcd.io/etcd/server/v3/storage/backend"
	"go.etcd.io/etcd/server/v3/storage/schema"

	"github.com/etcdbr/etcdbr/internal/boltfmt"
	"github.com/etcdbr/etcdbr/internal/dbrev"
)

const (
	// dbLockTimeout is how long Inspect waits for the db's file lock before it
	// reports the db as held by another process.
	dbLockTimeout = 250 * time.Millisecond
	// maxReportedProblems is how many db problems a reason names.
	maxReportedProblems = 10
)

// requiredBuckets are the buckets every db written by etcd 3.x has; without
// them the db is not an etcd db (or lost its data).
var requiredBuckets = []backend.Bucket{schema.Key, schema.Meta, schema.Members}

// dbIndex is what the db says it has applied.
type dbIndex struct {
	consistentIndex uint64
	term            uint64
}

// checkDB checks the db file and reads its consistent index and revision. It
// runs on Inspect's fault-protected goroutine.
func (in *inspection) checkDB() (dbIndex, error) {
	path := in.layout.db
	f, err := os.Open(path)
	if err != nil {
		return dbIndex{}, fmt.Errorf("cannot read db file %q: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return dbIndex{}, fmt.Errorf("cannot read db file %q: %w", path, err)
	}

	// Take bbolt's shared lock first, so that a running etcd is reported
	// instead of its half-written pages.
	db, err := bolt.Open(path, 0o400, &bolt.Options{ReadOnly: true, Timeout: dbLockTimeout})
	if errors.Is(err, berrors.ErrTimeout) {
		return dbIndex{}, fmt.Errorf("db file %q is %w (is etcd running on this data dir?)", path, errLocked)
	}
	if err != nil {
		if werr := boltfmt.Check(f, st.Size(), maxReportedProblems); werr != nil {
			return dbIndex{}, fmt.Errorf("db file %q is damaged: %v", path, werr)
		}
		return dbIndex{}, fmt.Errorf("db file %q cannot be opened by bbolt: %v", path, err)
	}
	defer db.Close()

	// bbolt's own checks run on goroutines Inspect cannot protect; only a
	// structurally sound file goes to them.
	if err := boltfmt.Check(f, st.Size(), maxReportedProblems); err != nil {
		return dbIndex{}, fmt.Errorf("db file %q is damaged: %v", path, err)
	}

	var idx dbIndex
	err = db.View(func(tx *bolt.Tx) error {
		probs := &boltfmt.Problems{Max: maxReportedProblems}
		for cerr := range tx.Check() {
			probs.Add("%v", cerr)
		}
		if err := probs.Err(); err != nil {
			return fmt.Errorf("fails bbolt's consistency check: %v", err)
		}
		// A plain value under the name of one of etcd's buckets (damage: bbolt's API writes
		// none in the root) makes etcd exit at start, when it creates that bucket.
		for _, b := range schema.AllBuckets {
			if k, v := tx.Cursor().Seek(b.Name()); bytes.Equal(k, b.Name()) && v != nil {
				return fmt.Errorf("has a value, not a bucket, named %q (etcd exits at start: failed to create a bucket)", b.Name())
			}
		}
		for _, b := range requiredBuckets {
			if tx.Bucket(b.Name()) == nil {
				return fmt.Errorf("has no %q bucket: not an etcd db, or its data is lost", b.Name())
			}
		}
		meta := tx.Bucket(schema.Meta.Name())
		if v := meta.Get(schema.MetaStorageVersionName); v != nil {
			sv, err := semver.NewVersion(string(v))
			if err != nil {
				return fmt.Errorf("has an unreadable storage version %q: %v", v, err)
			}
			if sv.Major != 3 || sv.Minor < 5 || sv.Minor > 6 {
				return fmt.Errorf("has storage version %s, which etcd 3.6 cannot open", sv)
			}
		}
		if err := checkKeyBucket(tx.Bucket(schema.Key.Name())); err != nil {
			return err
		}
		if err := checkLeaseBucket(tx.Bucket(schema.Lease.Name())); err != nil {
			return err
		}
		var err error
		if idx.consistentIndex, err = uint64Value(meta, schema.MetaConsistentIndexKeyName); err != nil {
			return err
		}
		if idx.term, err = uint64Value(meta, schema.MetaTermKeyName); err != nil {
			return err
		}
		in.revision, err = dbrev.Revision(tx)
		return err
	})
	if err != nil {
		return dbIndex{}, fmt.Errorf("db file %q %v", path, err)
	}
	return idx, nil
}

// checkKeyBucket decodes every revision of the key bucket, as etcd does when it
// rebuilds its index at start (it exits on a value it cannot decode).
func checkKeyBucket(b *bolt.Bucket) error {
	c := b.Cursor()
	var kv mvccpb.KeyValue
	for k, v := c.First(); k != nil; k, v = c.Next() {
		main, _, err := dbrev.ParseKey(k)
		if err != nil {
			return fmt.Errorf("has a malformed revision key %x in the key bucket", k)
		}
		if err := kv.Unmarshal(v); err != nil {
			return fmt.Errorf("has an undecodable value at revision %d in the key bucket: %v", main, err)
		}
	}
	return nil
}

// checkLeaseBucket decodes every lease, as etcd's lessor does at start (it
// panics on one it cannot decode). A missing lease bucket is created by etcd.
func checkLeaseBucket(b *bolt.Bucket) error {
	if b == nil {
		return nil
	}
	var l leasepb.Lease
	return b.ForEach(func(k, v []byte) error {
		if err := l.Unmarshal(v); err != nil {
			return fmt.Errorf("has an undecodable lease %x in the lease bucket: %v", k, err)
		}
		return nil
	})
}

// uint64Value reads an 8-byte big-endian value of the meta bucket (0 when absent).
func uint64Value(meta *bolt.Bucket, key []byte) (uint64, error) {
	v := meta.Get(key)
	if v == nil {
		return 0, nil
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("has a %d-byte %q in the meta bucket (want 8)", len(v), key)
	}
	return binary.BigEndian.Uint64(v), nil
}
