package rebuild

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"

	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/server/v3/lease"
	"go.etcd.io/etcd/server/v3/lease/leasepb"
	"go.etcd.io/etcd/server/v3/storage/backend"
	"go.etcd.io/etcd/server/v3/storage/mvcc"
	"go.etcd.io/etcd/server/v3/storage/schema"

	"github.com/etcdbr/etcdbr/internal/dbrev"
	"github.com/etcdbr/etcdbr/snapstore"
)

// revisionWriter is the write side of a replay: it writes whole revisions into a db and
// checks each against the source's events.
type revisionWriter interface {
	// revision is the db's current revision, as etcd's store computes it when it opens
	// the db.
	revision() int64
	// hasLease reports whether the db holds lease id.
	hasLease(id int64) bool
	// longestTTL is the longest TTL of the leases the db held when it was opened (0: none).
	longestTTL() int64
	// grant grants lease id with ttl (raised to the minimum TTL, as etcd's lessor does).
	grant(id, ttl int64) error
	// apply writes one revision; an error says how it does not continue the db's state
	// as it did the source's. It keeps nothing of rev (its events, keys and values) once it
	// returns: the replay decodes later revisions into it.
	apply(rev *snapstore.Revision) error
	// bumpRevision raises the latest revision by amount and marks it compacted, as
	// etcdutl's restore does.
	bumpRevision(amount int64, log *slog.Logger) error
	// close commits what was written and closes the db.
	close() error
}

// directWriter writes revisions into the db exactly as etcd 3.6's mvcc store writes them
// (storeTxnWrite.put and delete), straight into bbolt: change i of revision R goes to the
// "key" bucket under the bucket key R_i (mvcc.RevToBytes), holding the marshaled
// mvccpb.KeyValue etcd stores (key, value, create and mod revision, version, lease) for a
// put, and the bucket key R_i with etcd's tombstone mark 't' appended, holding a
// KeyValue of only the key, for a delete. etcd's store writes nothing else per revision:
// its key index, lease attachments and the revision itself live in memory and are rebuilt
// from the "key" bucket when etcd opens the db; a lease grant is a leasepb.Lease in the
// "lease" bucket (lessor.Grant). What this skips of etcd's store is its in-memory state
// and its locking: the key index (a B-tree of every key's generations) becomes a map of
// every key's create revision and version, which is what the check of each event needs.
//
// Writes are committed in batches (etcd's backend does the same: 10,000 puts or 100 ms)
// without fsync; the caller syncs the file.
type directWriter struct {
	path   string
	db     *bolt.DB
	tx     *bolt.Tx
	keys   *bolt.Bucket
	minTTL int64
	// longest is the longest TTL of the leases the db held when it was opened.
	longest int64
	// plan, when set, makes the writer write nothing: it checks every revision and keeps
	// its index as when it writes (each key's last entry included), and keeps the leases
	// it grants in granted, for a compacted db written afterwards (compactWriter). Its
	// transaction is rolled back at close: the db is as it was.
	plan    bool
	granted []leasepb.Lease
	// spool, in plan mode, receives every put as the "key" bucket would (spoolWriter.put), in
	// revision order, for the compacted db to take those it keeps.
	spool *spoolWriter
	// loaded is the db's revision when it was opened.
	loaded int64

	current int64
	// index maps a key to its entry in states; a key deleted keeps its entry (version 0).
	index  map[string]int32
	states []genState
	leases map[int64]struct{}

	// arena holds the bucket keys and values of the open transaction.
	arena   txArena
	puts    int
	written int
	// failed is set once a write failed: close then throws the open transaction away.
	failed bool
}

// genState is what etcd's key index knows of a key at the current revision: the create
// revision and version of its live generation (version 0: not live), and the revision of
// its last entry in the "key" bucket (a put, or a tombstone when not live).
type genState struct {
	create, version int64
	last            mvcc.Revision
}

// Batches of the direct writer: a transaction is committed after this many puts or bytes
// of bucket keys and values, between two revisions.
const (
	directBatchPuts  = 10000
	directBatchBytes = 16 << 20
)

// etcdBoltOptions are etcd's backend options (backend.New with UnsafeNoFsync) for a db that
// a restore writes: the same freelist handling, no fsync (the staged tree is synced once at
// the end), and a mapping large enough that the growing file is never remapped.
func etcdBoltOptions() *bolt.Options {
	return &bolt.Options{
		NoFreelistSync:  true,
		InitialMmapSize: int(backend.InitialMmapSize),
		NoSync:          true,
		NoGrowSync:      true,
	}
}

// openDirectWriter opens the db at path as etcd's backend does (without fsync), or only to
// read it in plan mode, and reads its "key" bucket once to learn every key's state and the
// current revision.
func openDirectWriter(path string, minTTL int64, plan bool) (w *directWriter, err error) {
	defer func() {
		if p := recover(); p != nil {
			if w != nil && w.db != nil {
				_ = w.db.Close()
			}
			w, err = nil, fmt.Errorf("replay deltas: open the db %q: bbolt failed: %v", path, p)
		}
	}()
	bopts := etcdBoltOptions()
	// Read-only, bbolt does not walk every page of the db to rebuild its freelist
	// (etcd's backend does not keep it on disk).
	bopts.ReadOnly = plan
	db, err := bolt.Open(path, 0o600, bopts)
	if err != nil {
		return nil, fmt.Errorf("replay deltas: open the db %q: %w", path, err)
	}
	w = &directWriter{path: path, db: db, minTTL: minTTL, plan: plan, index: map[string]int32{}, leases: map[int64]struct{}{}}
	if err := w.begin(); err != nil {
		_ = db.Close()
		return nil, err
	}
	if err := w.load(); err != nil {
		_ = w.tx.Rollback()
		_ = db.Close()
		return nil, err
	}
	return w, nil
}

// begin opens the next write transaction, creating the buckets etcd's store and lessor
// create when they open a db.
func (w *directWriter) begin() error {
	if w.plan {
		tx, err := w.db.Begin(false)
		if err != nil {
			return fmt.Errorf("replay deltas: read the db %q: %w", w.path, err)
		}
		if w.keys = tx.Bucket(schema.Key.Name()); w.keys == nil {
			_ = tx.Rollback()
			return fmt.Errorf("replay deltas: the db %q has no %q bucket: not an etcd v3 database", w.path, schema.Key.Name())
		}
		w.tx = tx
		return nil
	}
	tx, err := w.db.Begin(true)
	if err != nil {
		return dbWriteError{fmt.Errorf("replay deltas: write to the db %q: %w", w.path, err)}
	}
	for _, b := range []backend.Bucket{schema.Key, schema.Meta, schema.Lease} {
		if _, err := tx.CreateBucketIfNotExists(b.Name()); err != nil {
			_ = tx.Rollback()
			return fmt.Errorf("replay deltas: bucket %q of the db %q: %w", b.Name(), w.path, err)
		}
	}
	w.tx, w.keys = tx, tx.Bucket(schema.Key.Name())
	// etcd's UnsafeSeqPut: the "key" bucket is appended to, so its pages are filled more.
	w.keys.FillPercent = 0.9
	w.arena.reset()
	w.puts, w.written = 0, 0
	return nil
}

// load reads what etcd's store reads when it opens a db (store.restore): every key's
// latest state from the "key" bucket in revision order, and the current revision: the
// highest in the bucket (at least 1), or the finished or scheduled compaction's when
// higher. And the leases the "lease" bucket holds.
func (w *directWriter) load() error {
	c := w.keys.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		main, tombstone, err := dbrev.ParseKey(k)
		if err != nil {
			return fmt.Errorf("replay deltas: the db %q: %w", w.path, err)
		}
		key, create, version, err := parseKeyValue(v)
		if err != nil {
			return fmt.Errorf("replay deltas: the db %q, revision %d_%d: %w", w.path, main, mvcc.BytesToRev(k).Sub, err)
		}
		i, ok := w.index[string(key)]
		last := mvcc.BytesToRev(k)
		if tombstone {
			if ok {
				w.states[i] = genState{last: last}
			}
			continue
		}
		if ok && w.states[i].version > 0 {
			// etcd's index counts the puts of a live generation from its first one; the
			// stored versions say the same in a db etcd wrote.
			version = w.states[i].version + 1
			create = w.states[i].create
		}
		w.set(key, i, ok, genState{create: create, version: version, last: last})
	}
	// etcd's store starts at revision 1 even with no key, and at a compaction past its keys.
	rev, err := dbrev.Revision(w.tx)
	if err != nil {
		return fmt.Errorf("replay deltas: the db %q: %w", w.path, err)
	}
	w.current, w.loaded = rev, rev
	leases := w.tx.Bucket(schema.Lease.Name())
	if leases == nil {
		return nil // read-only, in plan mode: etcd's lessor creates it
	}
	return leases.ForEach(func(k, v []byte) error {
		if len(k) != 8 {
			return fmt.Errorf("replay deltas: the db %q holds a lease key %x that is no lease ID", w.path, k)
		}
		w.leases[int64(binary.BigEndian.Uint64(k))] = struct{}{}
		var l leasepb.Lease
		if err := l.Unmarshal(v); err != nil {
			return fmt.Errorf("replay deltas: the db %q holds lease %x that does not decode: %w", w.path, k, err)
		}
		w.longest = max(w.longest, l.TTL)
		return nil
	})
}

func (w *directWriter) longestTTL() int64 { return w.longest }

// set records the state of key (index entry i when known).
func (w *directWriter) set(key []byte, i int32, known bool, st genState) {
	if known {
		w.states[i] = st
		return
	}
	w.index[string(key)] = int32(len(w.states))
	w.states = append(w.states, st)
}

func (w *directWriter) revision() int64 { return w.current }

func (w *directWriter) hasLease(id int64) bool {
	_, ok := w.leases[id]
	return ok
}

// grant writes the lease record etcd's lessor writes (lease.Lease.persistTo): ID, TTL
// raised to the minimum, no remaining TTL.
func (w *directWriter) grant(id, ttl int64) error {
	switch {
	case id == int64(lease.NoLease):
		return lease.ErrLeaseNotFound
	case ttl > lease.MaxLeaseTTL:
		return lease.ErrLeaseTTLTooLarge
	case w.hasLease(id):
		return lease.ErrLeaseExists
	}
	l := leasepb.Lease{ID: id, TTL: max(ttl, w.minTTL)}
	if w.plan {
		w.granted = append(w.granted, l)
	} else {
		ut := &boltWriter{tx: w.tx}
		schema.MustUnsafePutLease(ut, &l)
		if ut.err != nil {
			return ut.err
		}
	}
	w.leases[id] = struct{}{}
	return nil
}

// apply writes the changes of one revision as etcd's store does, checking that each event
// continues the key's state exactly as it did in the source.
func (w *directWriter) apply(rev *snapstore.Revision) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = dbWriteError{fmt.Errorf("write revision %d to the db %q: bbolt failed: %v", rev.Revision, w.path, p)}
		}
		if err != nil {
			w.failed = true
		}
	}()
	main := rev.Revision
	if main != w.current+1 {
		return fmt.Errorf("revision %d does not follow the db's %d", main, w.current)
	}
	for sub, ev := range rev.Events {
		kv := ev.Kv
		if kv == nil {
			return fmt.Errorf("event %d has no key-value", sub)
		}
		i, known := w.index[string(kv.Key)]
		var st genState
		if known {
			st = w.states[i]
		}
		at := mvcc.Revision{Main: main, Sub: int64(sub)}
		var stored mvccpb.KeyValue
		tombstone := false
		switch ev.Type {
		case mvccpb.PUT:
			want := genState{create: main, version: 1}
			if st.version > 0 {
				want = genState{create: st.create, version: st.version + 1}
			}
			if kv.CreateRevision != want.create || kv.ModRevision != main || kv.Version != want.version {
				return fmt.Errorf("key %q: create %d mod %d version %d, the source had create %d mod %d version %d",
					kv.Key, want.create, main, want.version, kv.CreateRevision, kv.ModRevision, kv.Version)
			}
			if kv.Lease != 0 && !w.hasLease(kv.Lease) {
				return fmt.Errorf("key %q: lease %x is not granted", kv.Key, kv.Lease)
			}
			stored = mvccpb.KeyValue{Key: kv.Key, Value: kv.Value, CreateRevision: want.create, ModRevision: main,
				Version: want.version, Lease: kv.Lease}
			want.last = at
			w.set(kv.Key, i, known, want)
			w.puts++
		case mvccpb.DELETE:
			if st.version == 0 {
				return fmt.Errorf("delete of %q: the key does not exist", kv.Key)
			}
			tombstone = true
			stored = mvccpb.KeyValue{Key: kv.Key}
			w.states[i] = genState{last: at}
		default:
			return fmt.Errorf("event %d of key %q has the unknown type %d", sub, kv.Key, ev.Type)
		}
		if w.plan {
			if !tombstone {
				if err := w.spool.put(at, &stored); err != nil {
					return err
				}
			}
			continue
		}
		bk := w.alloc(18)[:17]
		mvcc.RevToBytes(at, bk)
		if tombstone {
			bk = append(bk, dbrev.TombstoneMark)
		}
		val := w.alloc(stored.Size())
		if _, err := stored.MarshalToSizedBuffer(val); err != nil {
			return fmt.Errorf("marshal the key-value of %q: %w", kv.Key, err)
		}
		if err := w.keys.Put(bk, val); err != nil {
			return dbWriteError{fmt.Errorf("write revision %d_%d to the db %q: %w", main, sub, w.path, err)}
		}
	}
	w.current = main
	if !w.plan && (w.puts >= directBatchPuts || w.written >= directBatchBytes) {
		return w.commit(true)
	}
	return nil
}

// alloc returns n bytes of the arena, valid until the transaction commits.
func (w *directWriter) alloc(n int) []byte {
	w.written += n
	return w.arena.alloc(n)
}

// txArena holds the bucket keys and values a bbolt write transaction is given: bbolt keeps
// references to them until it commits, after which the arena is used again (reset).
type txArena struct{ b []byte }

// alloc returns n bytes of the arena, valid until the transaction commits.
func (a *txArena) alloc(n int) []byte {
	if len(a.b)+n > cap(a.b) {
		// The full arena stays referenced by the transaction; a new one takes over.
		a.b = make([]byte, 0, max(directBatchBytes/4, n))
	}
	out := a.b[len(a.b) : len(a.b)+n : len(a.b)+n]
	a.b = a.b[:len(a.b)+n]
	return out
}

// reset makes the arena's bytes free again, once the transaction that held them committed.
func (a *txArena) reset() { a.b = a.b[:0] }

// commit commits the open transaction, and begins the next one when more follows.
func (w *directWriter) commit(more bool) error {
	if err := w.tx.Commit(); err != nil {
		w.tx = nil
		return dbWriteError{fmt.Errorf("replay deltas: commit to the db %q: %w", w.path, err)}
	}
	w.tx = nil
	if !more {
		return nil
	}
	return w.begin()
}

// bumpRevision raises the latest revision by amount and marks it compacted (bumpLatest).
func (w *directWriter) bumpRevision(amount int64, log *slog.Logger) (err error) {
	defer func() {
		if p := recover(); p != nil {
			w.failed = true
			err = fmt.Errorf("bump the revision of %q: bbolt failed: %v", w.path, p)
		}
	}()
	if err := bumpLatest(w.tx, amount, log); err != nil {
		return fmt.Errorf("bump the revision of %q: %w", w.path, err)
	}
	return nil
}

func (w *directWriter) close() error {
	var err error
	switch {
	case w.tx != nil && (w.failed || w.plan):
		_ = w.tx.Rollback() // the db is thrown away, or was only read
	case w.tx != nil:
		err = w.commit(false)
	}
	if cerr := w.db.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("replay deltas: close the db %q: %w", w.path, cerr)
	}
	return err
}

// boltWriter is etcd's backend.UnsafeWriter over a bbolt transaction, so that the
// records etcd's own functions write (schema.MustUnsafePutLease,
// mvcc.UnsafeSetScheduledCompact) are written by them. It keeps the first error.
type boltWriter struct {
	tx  *bolt.Tx
	err error
}

var _ backend.UnsafeWriter = (*boltWriter)(nil)

func (b *boltWriter) bucket(bk backend.Bucket) *bolt.Bucket {
	bu := b.tx.Bucket(bk.Name())
	if bu == nil && b.err == nil {
		b.err = fmt.Errorf("the db has no %q bucket", bk.Name())
	}
	return bu
}

func (b *boltWriter) UnsafeCreateBucket(bk backend.Bucket) {
	if _, err := b.tx.CreateBucketIfNotExists(bk.Name()); err != nil && b.err == nil {
		b.err = err
	}
}

func (b *boltWriter) UnsafeDeleteBucket(bk backend.Bucket) {
	if err := b.tx.DeleteBucket(bk.Name()); err != nil && !errors.Is(err, bolt.ErrBucketNotFound) && b.err == nil {
		b.err = err
	}
}

func (b *boltWriter) UnsafePut(bk backend.Bucket, key, value []byte) {
	if bu := b.bucket(bk); bu != nil {
		if err := bu.Put(key, value); err != nil && b.err == nil {
			b.err = err
		}
	}
}

func (b *boltWriter) UnsafeSeqPut(bk backend.Bucket, key, value []byte) {
	if bu := b.bucket(bk); bu != nil {
		bu.FillPercent = 0.9
		if err := bu.Put(key, value); err != nil && b.err == nil {
			b.err = err
		}
	}
}

func (b *boltWriter) UnsafeDelete(bk backend.Bucket, key []byte) {
	if bu := b.bucket(bk); bu != nil {
		if err := bu.Delete(key); err != nil && b.err == nil {
			b.err = err
		}
	}
}

// parseKeyValue reads the key, create revision and version of a marshaled
// mvccpb.KeyValue without copying its value.
func parseKeyValue(b []byte) (key []byte, create, version int64, err error) {
	for len(b) > 0 {
		tag, n := binary.Uvarint(b)
		if n <= 0 {
			return nil, 0, 0, errors.New("a damaged key-value record")
		}
		b = b[n:]
		field, wire := tag>>3, tag&7
		switch wire {
		case 0:
			v, n := binary.Uvarint(b)
			if n <= 0 {
				return nil, 0, 0, errors.New("a damaged key-value record")
			}
			b = b[n:]
			switch field {
			case 2:
				create = int64(v)
			case 4:
				version = int64(v)
			}
		case 2:
			l, n := binary.Uvarint(b)
			if n <= 0 || l > uint64(len(b)-n) {
				return nil, 0, 0, errors.New("a damaged key-value record")
			}
			if field == 1 {
				key = b[n : n+int(l)]
			}
			b = b[n+int(l):]
		default:
			return nil, 0, 0, fmt.Errorf("a key-value record with a field of wire type %d", wire)
		}
	}
	return key, create, version, nil
}

// dbWriteError is an error of the staged db itself (a write, a commit or a transaction that
// failed, bbolt giving up): the local disk's fault (full, read-only, failing), never the
// delta's, so that a restore never takes it for a damaged backup object.
type dbWriteError struct{ err error }

func (e dbWriteError) Error() string { return e.err.Error() }
func (e dbWriteError) Unwrap() error { return e.err }
