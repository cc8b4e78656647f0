package rebuild

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/etcdbr/etcdbr/internal/progress"
	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// ReplayOptions says which deltas ReplayDeltas replays and where it stops.
type ReplayOptions struct {
	// Deltas are replayed in this order: a chain as catalog.PlanRestore returns it.
	Deltas []catalog.Snapshot
	// Open returns a delta's payload (snapstore.Store.Open); reading it to io.EOF must
	// vouch for all of it.
	Open func(ctx context.Context, delta catalog.Snapshot) (io.ReadCloser, error)
	// Stop is where the replay ends: after revision Stop.Revision, or before the first
	// revision observed after Stop.Time; the zero Target replays all the deltas.
	Stop catalog.Target
	// Reach is the lowest revision the db may end at (catalog.RestorePlan.MinRevision): ending
	// below it fails the replay.
	Reach int64
	// MustPassTime (time targets, catalog.RestorePlan.EndsAtGap): the deltas end at a gap, so
	// running out of deltas before a revision observed after Stop.Time fails the replay.
	MustPassTime bool
	// MinLeaseTTL is the member's minimum lease TTL in seconds (MinLeaseTTL(cfg)); leases
	// whose TTL the deltas do not know are granted with it. 0 means etcd's default, 2.
	MinLeaseTTL int64
	// UnrecordedLeaseTTL is the TTL in seconds of the leases whose TTL the deltas' source did
	// not record (deltas converted from etcd-backup-restore: snapstore.UnrecordedTTL). 0
	// means the longest TTL of the leases the db holds when the replay starts (those the
	// same cluster granted before the full snapshot), or DefaultUnrecordedLeaseTTL when it
	// holds none: long enough that no key is lost before its owner renews the lease.
	UnrecordedLeaseTTL int64
	// Log receives progress and warnings (nil: discarded).
	Log *slog.Logger
	// Progress, when set, is told the phase ("replay"), the revisions to replay (from the
	// deltas' revision ranges, up to Stop) and each batch of revisions replayed; for a time
	// target the total becomes the revisions replayed once the replay ends.
	Progress *progress.Progress
	// Go, when set, starts the goroutine that reads the deltas (a compaction in etcdbr run
	// starts it at low priority: lowprio.Go); nil starts a plain goroutine.
	Go func(func())
}

// ReplayResult says what ReplayDeltas did.
type ReplayResult struct {
	// FromRevision is the db's revision before the replay, Revision the one after.
	FromRevision, Revision int64
	// Time is when the last replayed revision was observed (zero when none was replayed).
	Time time.Time
	// Deltas counts the deltas read (a time target may not need all of them).
	Deltas int
	// Revisions and Events count what was written; Skipped counts revisions the db held
	// already (a delta that starts before the full snapshot).
	Revisions, Events, Skipped int64
	// Leases counts the leases granted; UnknownTTL those of them granted with the minimum
	// TTL because the deltas did not know their TTL; Unrecorded those granted with
	// UnrecordedTTL because the deltas' source did not record their TTL.
	Leases, UnknownTTL, Unrecorded int
	// UnrecordedTTL is the TTL granted to the Unrecorded leases (ReplayOptions.UnrecordedLeaseTTL
	// or what it defaults to).
	UnrecordedTTL int64
	// PassedTime reports that the replay stopped at a revision observed after Stop.Time.
	PassedTime bool
	// Duration is how long the replay took.
	Duration time.Duration
}

// ObjectError is the failure to read one backup object. When it wraps snapstore.ErrCorrupt
// or snapstore.ErrMalformedDelta the object itself is bad: a restore can leave it out and
// plan again.
type ObjectError struct {
	Object catalog.Snapshot
	Err    error
}

func (e *ObjectError) Error() string { return e.Err.Error() }

// Unwrap returns the cause.
func (e *ObjectError) Unwrap() error { return e.Err }

// BadObject returns the object an error reports as corrupt or malformed, if any.
func BadObject(err error) (catalog.Snapshot, bool) {
	var oe *ObjectError
	if errors.As(err, &oe) && (errors.Is(oe.Err, snapstore.ErrCorrupt) || errors.Is(oe.Err, snapstore.ErrMalformedDelta)) {
		return oe.Object, true
	}
	return catalog.Snapshot{}, false
}

// DefaultUnrecordedLeaseTTL is the TTL in seconds of a lease whose TTL the deltas' source did
// not record, when the db holds no lease to take the TTL from: an hour, Kubernetes' event TTL.
const DefaultUnrecordedLeaseTTL = 3600

// defaultMinLeaseTTL is etcd's minimum lease TTL with its default heartbeat (100ms) and
// election timeout (1000ms): ceil(1.5 election timeouts).
const defaultMinLeaseTTL = 2

// MinLeaseTTL is the minimum lease TTL etcd enforces for cfg's member, in seconds: one and a
// half election timeouts, rounded up (as etcdserver computes it).
func MinLeaseTTL(cfg *embed.Config) int64 {
	if cfg.TickMs == 0 || cfg.ElectionMs == 0 {
		return defaultMinLeaseTTL
	}
	minTTL := time.Duration((3*cfg.ElectionTicks())/2) * time.Duration(cfg.TickMs) * time.Millisecond
	return int64(math.Ceil(minTTL.Seconds()))
}

// progressEvery is how often a long replay logs its progress.
const progressEvery = 10 * time.Second

// ReplayDeltas writes the revisions of opts.Deltas into the etcd db at dbPath (a plain bbolt
// file: no sha256 appended), offline: no raft, no network, no lease expiry. Each original
// revision is written as etcd's mvcc store writes a write transaction, byte for byte, into
// the db's "key" bucket (see directWriter), so revisions, create and mod revisions and
// versions come out as the source's; the writes are committed in batches without fsync,
// and the caller copies or syncs the file afterwards. Revisions the db already holds are
// skipped.
//
// A lease is granted, with the TTL its lease record carries, right before the first
// revision that attaches a key to it (leases the db already holds are kept as they are); a
// TTL of 0 (unknown) becomes the minimum TTL, and the log says so. Leases that no replayed
// key uses are not granted, and leases revoked in the source after the full snapshot stay
// in the db (with no keys) until they expire once the member runs: the deltas carry no
// revocations.
//
// Every replayed event is checked against the source's: the key-value etcd writes must have
// the event's create and mod revisions, version and lease, and a delete must find its key.
// A delta is read to its end even when the replay stops inside it, so that everything
// written is vouched for by its checksum. A bad object is reported as an *ObjectError; on
// any error the db is left half-written and must be thrown away.
//
// The deltas are read (fetched, decompressed, verified, decoded) on a goroutine of their
// own while the revisions before are written, at most a few MiB ahead (readAhead batches),
// and never past the delta that holds opts.Stop: a delta after it is not opened.
func ReplayDeltas(ctx context.Context, dbPath string, opts ReplayOptions) (ReplayResult, error) {
	if err := checkSnapshotDB(dbPath); err != nil {
		return ReplayResult{}, fmt.Errorf("replay deltas into %q: %w", dbPath, err)
	}
	return replayDeltas(ctx, dbPath, opts, replayExtras{})
}

// replayExtras are what BuildDataDir adds to a replay.
type replayExtras struct {
	// bump, after a replay that succeeded up to revision, returns how much to raise the
	// db's revision; when not 0 it is raised and marked compacted, as etcdutl's restore
	// does (bumpRevision). Nil: no bump.
	bump func(revision int64) int64
	// compact, with bump, writes the db compacted at the bumped revision when the bump is
	// not 0 (replayCompacted): what etcd's compaction there would leave.
	compact bool
	// spoolRelease, with compact, is how many bytes of the spool the compacted writer reads
	// between freeing them (0: spoolRelease).
	spoolRelease int64
	// from, with compact, is a fetched full snapshot's db to read instead of the db at the
	// replay's path, which holds the seed etcdutl restored: the compacted db takes the
	// seed's records as adoptSnapshot does, and the fetched db is removed once the compacted
	// db replaced the seed; when the replay is not compacted after all, the fetched db is
	// adopted first.
	from string
	// onDelta is called when the replay begins to write the records of delta number i.
	onDelta func(i int)
	// writer opens the write side (nil: openDirectWriter); tests replay through etcd's
	// own store with it.
	writer func(path string, opts ReplayOptions) (revisionWriter, error)
}

// replayDeltas is ReplayDeltas on a db checked already.
func replayDeltas(ctx context.Context, dbPath string, opts ReplayOptions, extras replayExtras) (res ReplayResult, err error) {
	if err := opts.Stop.Validate(); err != nil {
		return res, fmt.Errorf("replay deltas: %w", err)
	}
	if len(opts.Deltas) > 0 && opts.Open == nil {
		return res, errors.New("replay deltas: no way to open them (ReplayOptions.Open is nil)")
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.MinLeaseTTL <= 0 {
		opts.MinLeaseTTL = defaultMinLeaseTTL
	}
	started := time.Now()
	defer func() { res.Duration = time.Since(started) }()
	if extras.compact && extras.bump != nil {
		return replayCompacted(ctx, dbPath, opts, extras)
	}
	return replayDirect(ctx, dbPath, opts, extras)
}

// replayDirect writes every revision of the deltas into the db at dbPath, then bumps.
func replayDirect(ctx context.Context, dbPath string, opts ReplayOptions, extras replayExtras) (res ReplayResult, err error) {
	r, err := openReplayer(dbPath, opts, extras)
	if err != nil {
		return res, err
	}
	defer func() {
		if cerr := r.close(); cerr != nil && err == nil {
			err = fmt.Errorf("replay deltas into %q: %w", dbPath, cerr)
		}
	}()
	err = r.run(ctx)
	res = r.res
	if err == nil && extras.bump != nil {
		if n := extras.bump(res.Revision); n > 0 {
			err = r.w.bumpRevision(n, opts.Log)
		}
	}
	return res, err
}

// replayer is one ReplayDeltas.
type replayer struct {
	opts    ReplayOptions
	extras  replayExtras
	path    string
	w       revisionWriter
	res     ReplayResult
	pending map[int64]int64 // lease records seen, not granted yet: ID -> TTL
	unknown []string        // leases granted with the minimum TTL (the first few)
	unrec   []string        // leases granted with the unrecorded TTL (the first few)
	lastLog time.Time
	// free holds revisions replayed, for the reader to decode the next ones into
	// (DeltaDecoder.NextInto): run sends a batch's once it replayed them, and the reader
	// takes them; neither waits for the other. Made by run.
	free chan *snapstore.Revision
}

func openReplayer(path string, opts ReplayOptions, extras replayExtras) (*replayer, error) {
	open := extras.writer
	if open == nil {
		open = func(path string, opts ReplayOptions) (revisionWriter, error) {
			return openDirectWriter(path, opts.MinLeaseTTL, false)
		}
	}
	w, err := open(path, opts)
	if err != nil {
		return nil, err
	}
	return newReplayer(w, path, opts, extras), nil
}

// newReplayer is a replay of opts.Deltas through w, the writer of the db at path.
func newReplayer(w revisionWriter, path string, opts ReplayOptions, extras replayExtras) *replayer {
	r := &replayer{opts: opts, extras: extras, path: path, w: w, pending: map[int64]int64{}, lastLog: time.Now()}
	r.res.UnrecordedTTL = opts.UnrecordedLeaseTTL
	if r.res.UnrecordedTTL <= 0 {
		r.res.UnrecordedTTL = w.longestTTL()
	}
	if r.res.UnrecordedTTL <= 0 {
		r.res.UnrecordedTTL = DefaultUnrecordedLeaseTTL
	}
	r.res.FromRevision = w.revision()
	r.res.Revision = r.res.FromRevision
	return r
}

func (r *replayer) close() error { return r.w.close() }

func (r *replayer) run(ctx context.Context) error {
	stop := r.opts.Stop
	if stop.Revision > 0 && stop.Revision < r.res.FromRevision {
		return fmt.Errorf("replay deltas: the db is at revision %d, after the target revision %d", r.res.FromRevision, stop.Revision)
	}
	r.opts.Log.Info("replaying deltas", "db", r.path, "from_revision", r.res.FromRevision, "deltas", len(r.opts.Deltas), "target", stop.String())
	r.opts.Progress.SetPhase("replay")
	r.opts.Progress.SetRevisionsTotal(revisionsToReplay(r.opts.Deltas, r.res.FromRevision, stop))
	// The deltas are read and decoded on a goroutine of their own, a bounded stretch ahead
	// of the writes; it stops once this returns.
	rctx, cancel := context.WithCancel(ctx)
	batches := make(chan readBatch, readAhead)
	r.free = make(chan *snapstore.Revision, recycled)
	if g := r.opts.Go; g != nil {
		g(func() { r.read(rctx, batches) })
	} else {
		go r.read(rctx, batches)
	}
	defer func() {
		cancel()
		for range batches { // until the reader closed its delta and ended
		}
	}()
	current, stopped := -1, false
	for b := range batches {
		if b.delta != current {
			if stopped {
				break // the delta that held the stop was read to its end
			}
			current = b.delta
			r.res.Deltas++
			if r.extras.onDelta != nil {
				r.extras.onDelta(current)
			}
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("replay deltas: %w", err)
			}
		}
		if b.err != nil {
			return b.err
		}
		if !stopped {
			var err error
			if stopped, err = r.batch(ctx, r.opts.Deltas[current], b.items); err != nil {
				return err
			}
			r.recycle(b.items)
		}
		if b.end && stopped {
			break
		}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("replay deltas: %w", err)
	}
	switch {
	case stop.Revision > 0 && r.res.Revision != stop.Revision:
		return fmt.Errorf("replay deltas: they end at revision %d, not at the target revision %d", r.res.Revision, stop.Revision)
	case r.res.Revision < r.opts.Reach && stop.Latest():
		return fmt.Errorf("replay deltas: they end at revision %d, below revision %d, the newest in the store", r.res.Revision, r.opts.Reach)
	case r.res.Revision < r.opts.Reach:
		return fmt.Errorf("replay deltas: they end at revision %d, below revision %d, which the store's names show was written by %s",
			r.res.Revision, r.opts.Reach, stop.Time.UTC().Format(time.RFC3339Nano))
	case r.opts.MustPassTime && !r.res.PassedTime:
		return fmt.Errorf("replay deltas: every revision up to %d was observed at or before %s, and the store holds no delta "+
			"right after it (a gap): the state at that time is not in the store", r.res.Revision, stop.Time.UTC().Format(time.RFC3339Nano))
	}
	if !stop.Time.IsZero() {
		r.opts.Progress.SetRevisionsTotal(r.res.Revisions) // where the time stopped it
	}
	if r.res.UnknownTTL > 0 {
		r.opts.Log.Warn("leases whose TTL the deltas did not know were granted with the member's minimum TTL",
			"count", r.res.UnknownTTL, "ttl_seconds", r.opts.MinLeaseTTL, "leases", r.unknown)
	}
	if r.res.Unrecorded > 0 {
		r.opts.Log.Warn("leases whose TTL the backups' source never recorded (etcd-backup-restore's deltas hold no TTLs) "+
			"were granted with the TTL of --unrecorded-lease-ttl (default: the longest TTL among the full snapshot's leases): "+
			"their keys are kept, and expire that long after the member starts unless their owner renews the lease",
			"count", r.res.Unrecorded, "ttl_seconds", r.res.UnrecordedTTL, "leases", r.unrec)
	}
	return nil
}

// batch replays the records of one batch of delta d; it reports whether the replay reached
// its stop.
func (r *replayer) batch(ctx context.Context, d catalog.Snapshot, items []readItem) (stopped bool, err error) {
	stop := r.opts.Stop
	if p := r.opts.Progress; p != nil {
		before := r.res.Revisions
		defer func() { p.AddRevisions(r.res.Revisions-before, r.res.Revision) }()
	}
	for _, it := range items {
		if l := it.lease; l != nil {
			// Every delta repeats the records of the leases it uses: keep the known TTL of
			// leases not granted yet, and nothing of those granted.
			if old, ok := r.pending[l.ID]; (!ok || betterTTL(l.TTL, old)) && !r.w.hasLease(l.ID) {
				r.pending[l.ID] = l.TTL
			}
			continue
		}
		rev := it.rev
		if rev.Revision <= r.res.Revision {
			r.res.Skipped++
			continue
		}
		if rev.Revision != r.res.Revision+1 {
			return false, fmt.Errorf("replay deltas: %s continues at revision %d, but the db is at revision %d", d.Key, rev.Revision, r.res.Revision)
		}
		if pastStop(stop, rev) {
			r.res.PassedTime = !stop.Time.IsZero()
			return true, nil
		}
		if err := r.apply(rev); err != nil {
			return false, &ObjectError{Object: d, Err: fmt.Errorf("delta %s: %w", d.Key, err)}
		}
		if r.res.Revision%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return false, fmt.Errorf("replay deltas: %w", err)
			}
			r.progress()
		}
		if stop.Revision > 0 && rev.Revision == stop.Revision {
			return true, nil
		}
	}
	return false, nil
}

// revisionsToReplay is how many revisions a replay of deltas into a db at revision from
// writes when it runs to stop: the deltas' revision ranges above from, up to stop's
// revision (a time target: up to the deltas' end, an upper bound).
func revisionsToReplay(deltas []catalog.Snapshot, from int64, stop catalog.Target) int64 {
	end := from
	for _, d := range deltas {
		end = max(end, d.Revision)
	}
	if stop.Revision > 0 {
		end = min(end, stop.Revision)
	}
	return max(end-from, 0)
}

// pastStop reports whether rev comes after the replay's stop: after its revision, or
// observed after its time.
func pastStop(stop catalog.Target, rev *snapstore.Revision) bool {
	return (stop.Revision > 0 && rev.Revision > stop.Revision) || (!stop.Time.IsZero() && rev.Time.After(stop.Time))
}

// Reading ahead: the reader hands the records over in batches of at most readBatchRevisions
// revisions or readBatchBytes bytes of keys and values (or one revision, when it is
// larger), and at most readAhead batches wait in the channel: with the batch being
// filled and the one being replayed, about 4 MiB of records are held at most, whatever
// the size of the deltas.
const (
	readAhead          = 2
	readBatchRevisions = 256
	readBatchBytes     = 1 << 20
)

// The reader decodes into revisions already replayed (replayer.free): at most recycled of
// them wait, each keeping at most recycleMaxBytes of key and value buffers (a larger one is
// left to the collector), so that what waits stays small whatever the deltas hold.
const (
	recycled        = (readAhead + 2) * readBatchRevisions
	recycleMaxBytes = 16 << 10
)

// recycle hands the revisions of items, replayed, to the reader to decode into again; those
// whose buffers are larger than recycleMaxBytes, and those the reader has no room for, are
// dropped.
func (r *replayer) recycle(items []readItem) {
	for _, it := range items {
		if it.rev == nil || retained(it.rev) > recycleMaxBytes {
			continue
		}
		select {
		case r.free <- it.rev:
		default:
			return
		}
	}
}

// retained is the size of the key and value buffers rev keeps, those of the events past its
// length included (NextInto reuses its events' whole capacity).
func retained(rev *snapstore.Revision) int {
	n := 0
	for _, ev := range rev.Events[:cap(rev.Events)] {
		if ev != nil && ev.Kv != nil {
			n += cap(ev.Kv.Key) + cap(ev.Kv.Value)
		}
	}
	return n
}

// reusable returns a replayed revision to decode into, or nil when none waits.
func (r *replayer) reusable() *snapstore.Revision {
	select {
	case rev := <-r.free:
		return rev
	default:
		return nil
	}
}

// readItem is a lease record or a revision record of a delta.
type readItem struct {
	lease *snapstore.Lease
	rev   *snapstore.Revision
}

// readBatch is the next records of delta number delta (an index of ReplayOptions.Deltas).
type readBatch struct {
	delta int
	items []readItem
	// end reports that the delta was read to its end, so that its checksum vouches for
	// every record handed over.
	end bool
	// err is the failure to read the delta (the last batch).
	err error
}

// read reads the deltas in order and sends their records in batches, up to the delta that
// holds the replay's stop, which it reads to its end without decoding the rest. It follows
// the revisions as the replay does on success; when the replay fails or stops earlier, it
// cancels ctx. read closes out when it returns.
func (r *replayer) read(ctx context.Context, out chan<- readBatch) {
	defer close(out)
	send := func(b readBatch) bool {
		select {
		case out <- b:
			return true
		case <-ctx.Done():
			return false
		}
	}
	stop := r.opts.Stop
	reached := r.res.FromRevision // the revision the replay reaches with what was read
	for i, d := range r.opts.Deltas {
		if stop.Revision > 0 && reached >= stop.Revision {
			return
		}
		if ctx.Err() != nil {
			return
		}
		stopped, err := r.readDelta(ctx, i, d, &reached, send)
		if err != nil {
			send(readBatch{delta: i, err: &ObjectError{Object: d, Err: err}})
			return
		}
		if stopped {
			return
		}
	}
}

// readDelta reads delta number i; it reports whether the replay's stop is inside it. Its
// errors are the delta's.
func (r *replayer) readDelta(ctx context.Context, i int, d catalog.Snapshot, reached *int64, send func(readBatch) bool) (stopped bool, err error) {
	rc, err := r.opts.Open(ctx, d)
	if err != nil {
		return false, fmt.Errorf("open delta %s: %w", d.Key, err)
	}
	defer rc.Close()
	dec, err := snapstore.NewDeltaDecoder(rc)
	if err != nil {
		return false, fmt.Errorf("delta %s: %w", d.Key, err)
	}
	if dec.From() != d.From || dec.To() != d.Revision {
		return false, fmt.Errorf("delta %s: %w: it holds revisions %d..%d, its name says %d..%d",
			d.Key, snapstore.ErrMalformedDelta, dec.From(), dec.To(), d.From, d.Revision)
	}
	b := readBatch{delta: i}
	revs, size := 0, 0
	var reuse *snapstore.Revision
	for {
		if reuse == nil {
			reuse = r.reusable()
		}
		l, rev, err := dec.NextInto(reuse)
		if rev != nil {
			reuse = nil // handed over; a lease record leaves it for the next call
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			// What was read before goes first: the replay reports the first problem of
			// the delta, as it comes.
			if len(b.items) > 0 && !send(b) {
				return false, ctx.Err()
			}
			return false, fmt.Errorf("delta %s: %w", d.Key, err)
		}
		b.items = append(b.items, readItem{lease: l, rev: rev})
		if rev == nil {
			continue
		}
		if rev.Revision > *reached {
			if pastStop(r.opts.Stop, rev) || rev.Revision == r.opts.Stop.Revision {
				stopped = true
				break
			}
			*reached = rev.Revision
		}
		revs++
		for _, ev := range rev.Events {
			size += len(ev.Kv.Key) + len(ev.Kv.Value)
		}
		if revs >= readBatchRevisions || size >= readBatchBytes {
			if !send(b) {
				return false, ctx.Err()
			}
			b, revs, size = readBatch{delta: i}, 0, 0
		}
	}
	if stopped {
		// The replay stops inside the delta: read the rest, so that its checksum vouches
		// for the revisions written.
		if _, err := io.Copy(io.Discard, rc); err != nil {
			return false, fmt.Errorf("delta %s: %w", d.Key, err)
		}
	}
	b.end = true
	if !send(b) {
		return false, ctx.Err()
	}
	return stopped, nil
}

// apply writes one revision and checks it against the events.
func (r *replayer) apply(rev *snapstore.Revision) error {
	// The leases its puts attach keys to are granted first, as etcd requires.
	for _, ev := range rev.Events {
		if ev.Type == mvccpb.PUT && ev.Kv != nil && ev.Kv.Lease != 0 {
			if err := r.grant(ev.Kv.Lease, rev.Revision, ev.Kv.Key); err != nil {
				return err
			}
		}
	}
	if err := r.w.apply(rev); err != nil {
		if errors.As(err, new(dbWriteError)) {
			return fmt.Errorf("replay revision %d: %w", rev.Revision, err) // the disk's fault, not the delta's
		}
		return fmt.Errorf("%w: revision %d does not apply to the db as it did to the source (%v): "+
			"the delta does not belong to the history of the full snapshot", snapstore.ErrMalformedDelta, rev.Revision, err)
	}
	r.res.Revision = rev.Revision
	r.res.Time = rev.Time
	r.res.Revisions++
	r.res.Events += int64(len(rev.Events))
	return nil
}

// betterTTL reports whether a lease record's TTL says more than the one kept: a granted TTL
// more than "gone" (0), and either more than "not recorded" (UnrecordedTTL).
func betterTTL(ttl, kept int64) bool {
	return kept == snapstore.UnrecordedTTL && ttl != kept || kept == 0 && ttl > 0
}

// maxUnknownListed bounds the lease IDs the warning about unknown TTLs lists.
const maxUnknownListed = 10

// grant grants lease id unless the db has it, with the TTL of its lease record.
func (r *replayer) grant(id, rev int64, key []byte) error {
	if r.w.hasLease(id) {
		return nil
	}
	ttl, ok := r.pending[id]
	if !ok {
		return fmt.Errorf("%w: revision %d attaches %q to lease %x, which no lease record before it describes",
			snapstore.ErrMalformedDelta, rev, key, id)
	}
	switch ttl {
	case 0:
		ttl = r.opts.MinLeaseTTL
		r.res.UnknownTTL++
		if len(r.unknown) < maxUnknownListed {
			r.unknown = append(r.unknown, fmt.Sprintf("%x", id))
		}
	case snapstore.UnrecordedTTL:
		ttl = r.res.UnrecordedTTL
		r.res.Unrecorded++
		if len(r.unrec) < maxUnknownListed {
			r.unrec = append(r.unrec, fmt.Sprintf("%x", id))
		}
	}
	if err := r.w.grant(id, ttl); err != nil {
		return fmt.Errorf("grant lease %x with TTL %d: %w", id, ttl, err)
	}
	delete(r.pending, id)
	r.res.Leases++
	return nil
}

func (r *replayer) progress() {
	if time.Since(r.lastLog) < progressEvery {
		return
	}
	r.lastLog = time.Now()
	r.opts.Log.Info("replaying deltas", "revision", r.res.Revision, "revisions", r.res.Revisions, "events", r.res.Events)
}
