package rebuild

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"

	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/server/v3/storage/mvcc"
	"go.etcd.io/etcd/server/v3/storage/schema"

	"github.com/etcdbr/etcdbr/internal/diskspace"
)

// A replay that ends in a revision bump marks the bumped revision compacted, and etcd's
// compaction at that revision keeps, of the "key" bucket, the last entry of every key
// whose last entry is a put, and deletes the rest (kvindex.Compact, then
// store.scheduleCompaction). Written uncompacted, the replayed db holds every revision
// of the deltas besides the full snapshot's (2.7 GB for a 1.3 GB full snapshot and 1M
// events that rewrite most of its keys); etcd rebuilds its key index from all of them
// when it starts and then compacts them away in the background for half a minute.
//
// replayCompacted writes that compacted db directly. The replay checks every revision as
// it does when it writes them (directWriter in plan mode), keeps each key's state and
// last entry, and writes each put into a spool file instead of the db, in revision order.
// Once it knows where the replay ends, and so the bump, it writes a new db
// (compactWriter): the full snapshot's buckets but "key" as they are, the leases granted,
// then the "key" entries etcd's compaction keeps, the full snapshot's and the spool's in
// revision order, and the bump's entry with the compaction recorded as scheduled and
// finished at the bumped revision. The new db then replaces the full snapshot's. When
// the end needs no bump after all, the deltas are replayed into the full snapshot's db as
// without compaction.
//
// Until it replaces it, the full snapshot's db is only read: when the file system has no
// room for the spool and the new db beside it, the deltas are replayed into it instead,
// which needs less room (etcd then compacts it when it starts).
func replayCompacted(ctx context.Context, dbPath string, opts ReplayOptions, extras replayExtras) (ReplayResult, error) {
	res, done, err := writeCompacted(ctx, dbPath, opts, extras)
	switch {
	case done:
		return res, nil
	case err == nil: // no bump after all: the replay continues the history
	case diskspace.Full(err):
		opts.Log.Warn("no room to write the replayed db compacted beside the full snapshot's; replaying the deltas "+
			"into that db instead (etcd compacts it when it starts)", "db", dbPath, "error", err)
	default:
		return res, err
	}
	if extras.from != "" {
		if err := adoptSnapshot(extras.from, dbPath, 0, opts.Log); err != nil {
			return res, err
		}
	}
	rest := extras
	rest.onDelta, rest.from = nil, ""
	return replayDirect(ctx, dbPath, opts, rest)
}

// writeCompacted is replayCompacted but its fallback: done reports that the compacted db
// replaced the full snapshot's; it is false with a nil error when the bump is 0.
func writeCompacted(ctx context.Context, dbPath string, opts ReplayOptions, extras replayExtras) (res ReplayResult, done bool, err error) {
	source := dbPath
	if extras.from != "" {
		source = extras.from
	}
	plan, err := openDirectWriter(source, opts.MinLeaseTTL, true)
	if err != nil {
		return res, false, err
	}
	spoolPath := dbPath + ".spool"
	var spool *spoolWriter
	defer func() {
		if plan != nil {
			_ = plan.close()
		}
		if spool != nil {
			_ = spool.f.Close() // closed already when finished
		}
		_ = os.Remove(spoolPath)
	}()
	if spool, err = createSpool(spoolPath); err != nil {
		return res, false, err
	}
	plan.spool = spool
	first := extras
	first.bump = nil
	r := newReplayer(plan, dbPath, opts, first)
	if err := r.run(ctx); err != nil {
		return r.res, false, err
	}
	res = r.res
	bump := extras.bump(res.Revision)
	if bump == 0 {
		return res, false, nil
	}
	if err := spool.finish(); err != nil {
		return res, false, err
	}
	opts.Progress.SetPhase("write") // the compacted db

	out := dbPath + ".compacted"
	defer func() {
		if err != nil {
			_ = os.Remove(out)
		}
	}()
	keep := plan.kept()
	opts.Log.Info("writing the replayed db compacted at the bumped revision", "db", dbPath, "keys", len(keep),
		"spooled_puts", spool.puts)
	cw, err := newCompactWriter(plan, out)
	if err != nil {
		return res, false, err
	}
	if extras.from != "" {
		err = cw.copySeed(dbPath)
	}
	if err == nil {
		err = cw.copyKept(keep, spoolPath, cmp.Or(extras.spoolRelease, spoolRelease))
	}
	if err == nil {
		err = cw.bump(res.Revision, bump, opts.Log)
	}
	if err != nil {
		cw.failed = true
		_ = cw.close()
		return res, false, err
	}
	if err := cw.close(); err != nil {
		return res, false, err
	}
	p := plan
	plan = nil
	if err := p.close(); err != nil {
		return res, false, fmt.Errorf("replay deltas into %q: %w", dbPath, err)
	}
	if err := os.Rename(out, dbPath); err != nil {
		return res, false, dbWriteError{fmt.Errorf("replay deltas: replace %q with the compacted db: %w", dbPath, err)}
	}
	if extras.from != "" {
		if err := os.Remove(extras.from); err != nil {
			return res, false, fmt.Errorf("replay deltas: remove the fetched db: %w", err)
		}
	}
	opts.Log.Info("compacted db written", "db", dbPath, "entries", cw.entries,
		"from_full_snapshot", cw.fromFull, "from_deltas", cw.entries-cw.fromFull)
	return res, true, nil
}

// kept is the revisions of the entries etcd's compaction keeps at the current revision:
// every key's last entry when it is a put, in revision order.
func (w *directWriter) kept() []mvcc.Revision {
	keep := make([]mvcc.Revision, 0, len(w.states))
	for _, st := range w.states {
		if st.version > 0 {
			keep = append(keep, st.last)
		}
	}
	slices.SortFunc(keep, func(a, b mvcc.Revision) int {
		return cmp.Or(cmp.Compare(a.Main, b.Main), cmp.Compare(a.Sub, b.Sub))
	})
	return keep
}

// spoolWriter writes the puts of a replay in plan mode to a file, in revision order: each
// a record of the "key" bucket's key (mvcc.RevToBytes), the length of the value (4 bytes,
// little-endian) and the value, the marshaled mvccpb.KeyValue etcd stores.
type spoolWriter struct {
	path string
	f    *os.File
	w    *bufio.Writer
	buf  []byte
	puts int64
}

const spoolHeader = 17 + 4

// spoolRelease is how many bytes of the spool the compacted writer reads between freeing
// them (punchHole).
const spoolRelease = 64 << 20

func createSpool(path string) (*spoolWriter, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, dbWriteError{fmt.Errorf("replay deltas: create the spool %q: %w", path, err)}
	}
	return &spoolWriter{path: path, f: f, w: bufio.NewWriterSize(f, 1<<20)}, nil
}

func (s *spoolWriter) put(at mvcc.Revision, kv *mvccpb.KeyValue) error {
	n := kv.Size()
	if cap(s.buf) < spoolHeader+n {
		s.buf = make([]byte, spoolHeader+n)
	}
	b := s.buf[:spoolHeader+n]
	mvcc.RevToBytes(at, b[:17])
	binary.LittleEndian.PutUint32(b[17:spoolHeader], uint32(n))
	if _, err := kv.MarshalToSizedBuffer(b[spoolHeader:]); err != nil {
		return fmt.Errorf("marshal the key-value of %q: %w", kv.Key, err)
	}
	if _, err := s.w.Write(b); err != nil {
		return dbWriteError{fmt.Errorf("replay deltas: write the spool %q: %w", s.path, err)}
	}
	s.puts++
	return nil
}

// finish flushes the spool and closes it.
func (s *spoolWriter) finish() error {
	err := s.w.Flush()
	if cerr := s.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return dbWriteError{fmt.Errorf("replay deltas: write the spool %q: %w", s.path, err)}
	}
	return nil
}

// compactWriter writes the compacted db of replayCompacted, in batches as the direct
// writer does, without fsync.
type compactWriter struct {
	plan *directWriter
	path string
	db   *bolt.DB
	tx   *bolt.Tx
	keys *bolt.Bucket

	// entries counts the "key" entries written, fromFull those of the full snapshot.
	entries, fromFull int64
	arena             txArena
	puts, written     int
	failed            bool
	// back writes the db's pages back after each commit but the last (nil: it could not
	// open the db again); stopped by close.
	back *writeBack
}

// newCompactWriter creates the db at path and writes into it every bucket of the plan's db
// but "key" as it is, and the leases the plan granted.
func newCompactWriter(plan *directWriter, path string) (cw *compactWriter, err error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, dbWriteError{fmt.Errorf("write the compacted db: %w", err)}
	}
	db, err := bolt.Open(path, 0o600, etcdBoltOptions())
	if err != nil {
		return nil, dbWriteError{fmt.Errorf("write the compacted db %q: %w", path, err)}
	}
	cw = &compactWriter{plan: plan, path: path, db: db, back: newWriteBack(path)}
	defer func() {
		if p := recover(); p != nil {
			err = dbWriteError{fmt.Errorf("write the compacted db %q: bbolt failed: %v", path, p)}
		}
		if err != nil {
			cw.failed = true
			_ = cw.close()
			cw = nil
		}
	}()
	if err := cw.begin(); err != nil {
		return cw, err
	}
	err = plan.tx.ForEach(func(name []byte, b *bolt.Bucket) error {
		if bytes.Equal(name, schema.Key.Name()) {
			return nil
		}
		to, err := cw.tx.CreateBucketIfNotExists(name)
		if err != nil {
			return dbWriteError{fmt.Errorf("write the compacted db %q: bucket %q: %w", path, name, err)}
		}
		return b.ForEach(func(k, v []byte) error {
			if v == nil {
				return fmt.Errorf("write the compacted db: bucket %q of %q holds a bucket %q (etcd's db has none)", name, plan.path, k)
			}
			return cw.put(to, k, v)
		})
	})
	if err != nil {
		return cw, err
	}
	ut := &boltWriter{tx: cw.tx}
	for i := range plan.granted {
		schema.MustUnsafePutLease(ut, &plan.granted[i])
	}
	if ut.err != nil {
		return cw, dbWriteError{fmt.Errorf("write the compacted db %q: %w", path, ut.err)}
	}
	return cw, nil
}

// copySeed writes into the compacted db the records etcdutl's restore wrote into the seed
// db at seedPath, as adoptSnapshot writes them into a fetched db (copySeed).
func (cw *compactWriter) copySeed(seedPath string) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = dbWriteError{fmt.Errorf("write the compacted db %q: bbolt failed: %v", cw.path, p)}
		}
	}()
	seed, err := bolt.Open(seedPath, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("open the restored seed db %q: %w", seedPath, err)
	}
	defer seed.Close()
	if err := seed.View(func(from *bolt.Tx) error { return copySeed(from, cw.tx) }); err != nil {
		return fmt.Errorf("write the new membership into the compacted db %q: %w", cw.path, err)
	}
	// Committed while the seed is open: bbolt holds the records where the seed maps them.
	return cw.commit()
}

// copyKept writes the "key" entries at the revisions of keep (in order): those of the
// full snapshot from the plan's db, the others from the spool, whose bytes it frees as it
// reads them, release bytes at a time.
func (cw *compactWriter) copyKept(keep []mvcc.Revision, spoolPath string, release int64) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = dbWriteError{fmt.Errorf("write the compacted db %q: bbolt failed: %v", cw.path, p)}
		}
	}()
	// The full snapshot's entries point into the plan's db, mapped while its transaction is open.
	c := cw.plan.keys.Cursor()
	i := 0
	for k, v := c.First(); k != nil && i < len(keep) && keep[i].Main <= cw.plan.loaded; k, v = c.Next() {
		at := mvcc.BytesToRev(k)
		if revLess(keep[i], at) {
			return fmt.Errorf("write the compacted db: the db %q has no entry at revision %d_%d", cw.plan.path, keep[i].Main, keep[i].Sub)
		}
		if at != keep[i] || len(k) != 17 {
			continue
		}
		if err := cw.put(cw.keys, k, v); err != nil {
			return err
		}
		cw.fromFull++
		i++
		if err := cw.maybeCommit(); err != nil {
			return err
		}
	}
	f, err := os.OpenFile(spoolPath, os.O_RDWR, 0)
	if err != nil {
		return dbWriteError{fmt.Errorf("write the compacted db: open the spool: %w", err)}
	}
	defer f.Close()
	// Read ahead no more than is freed at a time: a test that frees every few records then
	// catches any freeing of bytes not read yet.
	r := bufio.NewReaderSize(f, int(min(release, 1<<20)))
	// The spool is read once, from its start: what was read is freed as the reading goes
	// on, so that its pages need no writing back and its removal at the end has little left
	// to free (removing a file waits for the pages being written back).
	var read, released int64
	var head [spoolHeader]byte
	for i < len(keep) {
		if read-released >= release {
			if err := punchHole(f, released, read-released); err != nil {
				return dbWriteError{fmt.Errorf("write the compacted db: free what was read of the spool %q: %w", spoolPath, err)}
			}
			released = read
		}
		if _, err := io.ReadFull(r, head[:]); err != nil {
			return dbWriteError{fmt.Errorf("write the compacted db: read the spool %q: %w", spoolPath, err)}
		}
		at := mvcc.BytesToRev(head[:17])
		n := int(binary.LittleEndian.Uint32(head[17:]))
		read += int64(spoolHeader + n)
		if revLess(keep[i], at) {
			return fmt.Errorf("write the compacted db: the spool %q has no entry at revision %d_%d", spoolPath, keep[i].Main, keep[i].Sub)
		}
		if at != keep[i] {
			if _, err := r.Discard(n); err != nil {
				return dbWriteError{fmt.Errorf("write the compacted db: read the spool %q: %w", spoolPath, err)}
			}
			continue
		}
		rec := cw.arena.alloc(17 + n)
		copy(rec, head[:17])
		if _, err := io.ReadFull(r, rec[17:]); err != nil {
			return dbWriteError{fmt.Errorf("write the compacted db: read the spool %q: %w", spoolPath, err)}
		}
		if err := cw.put(cw.keys, rec[:17], rec[17:]); err != nil {
			return err
		}
		i++
		if err := cw.maybeCommit(); err != nil {
			return err
		}
	}
	return nil
}

func revLess(a, b mvcc.Revision) bool {
	return a.Main < b.Main || a.Main == b.Main && a.Sub < b.Sub
}

func (cw *compactWriter) begin() error {
	tx, err := cw.db.Begin(true)
	if err != nil {
		return dbWriteError{fmt.Errorf("write the compacted db %q: %w", cw.path, err)}
	}
	keys, err := tx.CreateBucketIfNotExists(schema.Key.Name())
	if err != nil {
		_ = tx.Rollback()
		return dbWriteError{fmt.Errorf("write the compacted db %q: %w", cw.path, err)}
	}
	// Revisions only grow: the bucket is only ever appended to, so its pages are filled.
	keys.FillPercent = 1
	cw.tx, cw.keys = tx, keys
	cw.arena.reset()
	cw.puts, cw.written = 0, 0
	return nil
}

func (cw *compactWriter) put(b *bolt.Bucket, k, v []byte) error {
	if err := b.Put(k, v); err != nil {
		return dbWriteError{fmt.Errorf("write the compacted db %q: %w", cw.path, err)}
	}
	cw.puts++
	cw.written += len(k) + len(v)
	if b == cw.keys {
		cw.entries++
	}
	return nil
}

// maybeCommit commits a batch as the direct writer does, and begins the next.
func (cw *compactWriter) maybeCommit() error {
	if cw.puts < directBatchPuts && cw.written < directBatchBytes {
		return nil
	}
	return cw.commit()
}

// commit commits the open transaction and begins the next.
func (cw *compactWriter) commit() error {
	if err := cw.tx.Commit(); err != nil {
		cw.tx = nil
		return dbWriteError{fmt.Errorf("write the compacted db %q: commit: %w", cw.path, err)}
	}
	cw.back.kick()
	return cw.begin()
}

// bump writes the bump's entry at revision plus amount, as bumpLatest does after the
// replay's last revision, and records the compaction at it as scheduled and finished: the
// db holds what etcd's compaction there leaves.
func (cw *compactWriter) bump(revision, amount int64, log *slog.Logger) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = dbWriteError{fmt.Errorf("bump the revision of %q: bbolt failed: %v", cw.path, p)}
		}
	}()
	if err := bumpFrom(cw.tx, revision, amount, true, log); err != nil {
		return dbWriteError{fmt.Errorf("bump the revision of %q: %w", cw.path, err)}
	}
	return nil
}

func (cw *compactWriter) close() error {
	var err error
	switch {
	case cw.tx != nil && cw.failed:
		_ = cw.tx.Rollback()
	case cw.tx != nil:
		// The last commit writes the freelist, which etcd's backend does not keep: etcd
		// reads it when it opens the db instead of walking every page to rebuild it (and
		// stops keeping it with its first commit).
		cw.db.NoFreelistSync = false
		if err = cw.tx.Commit(); err != nil {
			err = dbWriteError{fmt.Errorf("write the compacted db %q: commit: %w", cw.path, err)}
		}
	}
	cw.tx = nil
	cw.back.stop()
	cw.back = nil
	if cerr := cw.db.Close(); cerr != nil && err == nil {
		err = dbWriteError{fmt.Errorf("write the compacted db: close %q: %w", cw.path, cerr)}
	}
	return err
}
