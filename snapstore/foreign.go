package snapstore

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"
	"sync"

	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"

	"github.com/etcdbr/etcdbr/internal/dbrev"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
	"github.com/etcdbr/etcdbr/snapstore/foreign"
)

// Layout is how the objects under a store URL are laid out: etcdbr's own store, or the
// backups of another tool, which etcdbr reads and never writes (docs/migrate.md).
type Layout string

// The layouts a store URL may name (its layout= query parameter) or Detect finds.
const (
	// LayoutEtcdbr is etcdbr's own store (docs/store-format.md).
	LayoutEtcdbr Layout = "etcdbr"
	// LayoutEtcdBackupRestore is a store of etcd-backup-restore (gardener/etcd-backup-restore):
	// the URL names its --store-prefix, under which it keeps v2/ (and, from its early versions,
	// v1/); a URL that names v1/ or v2/ itself is taken for its parent.
	LayoutEtcdBackupRestore Layout = "etcd-backup-restore"
	// LayoutSnapshot is one etcd snapshot file (etcdctl snapshot save, k3s, rke2): a local file
	// or an object, plain, gzip or a k3s zip archive.
	LayoutSnapshot Layout = "snapshot"
)

// layoutParam is the store URL's query parameter that names the layout; it is etcdbr's, not
// the driver's.
const layoutParam = "layout"

// parseLayout reads the value of the layout= parameter.
func parseLayout(v string) (Layout, error) {
	switch Layout(v) {
	case LayoutEtcdbr, LayoutEtcdBackupRestore, LayoutSnapshot:
		return Layout(v), nil
	case "ebr", "etcdbrctl":
		return LayoutEtcdBackupRestore, nil
	}
	return "", fmt.Errorf("unknown layout=%q in the store URL: use layout=%s, layout=%s or layout=%s (or leave it out: "+
		"the commands that read a store detect it)", v, LayoutEtcdbr, LayoutEtcdBackupRestore, LayoutSnapshot)
}

// ErrReadOnly is wrapped by the errors of writes to a store of another tool: etcdbr reads
// such a store (restore, list, verify, copy from it) and never writes or deletes anything in
// it.
var ErrReadOnly = errors.New("the store holds another tool's backups, which etcdbr only reads")

// foreignSource presents the backups of another tool as etcdbr snapshots: names as
// catalog.Snapshot values, payloads as etcdbr's (a full snapshot's payload is the db and its
// SHA-256 as etcd's Maintenance API sends it; a delta's is etcdbr's delta payload).
type foreignSource interface {
	layout() Layout
	// list returns the objects of kind, sorted as Store.List sorts.
	list(ctx context.Context, s *Store, kind catalog.Kind) ([]catalog.Snapshot, error)
	// parse maps a key to the snapshot it names (Size unset).
	parse(key string) (catalog.Snapshot, bool)
	// payload turns the object's stored bytes into its payload; the payload's io.EOF vouches
	// for what the source's format can vouch for (a checksum where it has one).
	payload(snap catalog.Snapshot, body io.Reader) (io.ReadCloser, error)
	// lacks says what the source does not hold that an etcdbr store would.
	lacks() string
}

// Layout returns the store's layout.
func (s *Store) Layout() Layout {
	if s.foreign != nil {
		return s.foreign.layout()
	}
	return LayoutEtcdbr
}

// ReadOnly reports whether the store holds another tool's backups: etcdbr reads it and
// writes nothing into it.
func (s *Store) ReadOnly() bool {
	return s.foreign != nil
}

// readOnly returns the error for a write of what into a store of another tool (nil for
// etcdbr's own).
func (s *Store) readOnly(what string) error {
	if s.foreign == nil {
		return nil
	}
	return fmt.Errorf("%s in %q: %w (an %s store): copy it into an etcdbr store with etcdbr copy --from %s --to URL, "+
		"and back up into that one", what, s.url, ErrReadOnly, s.foreign.layout(), s.url)
}

// Detect finds the layout of a store whose URL names none (layout=), for the commands that
// read a store: etcdbr's own when it holds etcdbr objects (full/, delta/); etcd-backup-
// restore's when it holds none but holds etcd-backup-restore snapshots under v1/ or v2/ (of
// the prefix, or of its parent when the prefix itself ends in v1/ or v2/); a snapshot file
// when the URL names an object rather than a prefix; etcdbr's otherwise (an empty store).
// It lists a few keys, and logs what it found when that is not etcdbr's layout.
func (s *Store) Detect(ctx context.Context) (Layout, error) {
	if s.foreign != nil || s.layoutSet {
		return s.Layout(), nil
	}
	for _, dir := range []string{string(catalog.KindFull) + "/", string(catalog.KindDelta) + "/"} {
		found, err := s.anyObject(ctx, dir, func(key string) bool { _, ok := catalog.ParseName(key); return ok })
		if err != nil || found {
			return LayoutEtcdbr, err
		}
	}
	if ok, err := s.useEBR(ctx, true); err != nil || ok {
		return s.Layout(), err
	}
	if ok, err := s.useSnapshotObject(ctx, true); err != nil || ok {
		return s.Layout(), err
	}
	return LayoutEtcdbr, nil
}

// anyObject reports whether some key under dir satisfies match.
func (s *Store) anyObject(ctx context.Context, dir string, match func(key string) bool) (bool, error) {
	errFound := errors.New("found")
	err := s.eachObject(ctx, dir, func(obj *blob.ListObject) error {
		if match(obj.Key) {
			return errFound
		}
		return nil
	})
	if errors.Is(err, errFound) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("detect the layout of store %q: %w", s.url, err)
	}
	return false, nil
}

// useEBR makes the store read etcd-backup-restore's layout, at the store's prefix or, when
// the prefix ends in v1/ or v2/, at its parent. With detect it does so only when snapshots of
// etcd-backup-restore are there.
func (s *Store) useEBR(ctx context.Context, detect bool) (bool, error) {
	probe := *s
	switch last := path.Base(strings.TrimSuffix(s.prefix, "/")); {
	case s.localDir != "" && (path.Base(s.localDir) == "v1" || path.Base(s.localDir) == "v2"):
		dir := path.Dir(s.localDir)
		loc, err := localLocation(dir, s.loc.query)
		if err != nil {
			return false, err
		}
		if probe.bucket, err = s.reopen(ctx, loc, "/"); err != nil {
			return false, err
		}
		probe.localDir, probe.loc = dir, loc
	case s.prefix != "" && (last == "v1" || last == "v2"):
		probe.prefix = strings.TrimSuffix(strings.TrimSuffix(s.prefix, "/"), last)
		var err error
		if probe.bucket, err = s.reopen(ctx, s.loc, orRoot(probe.prefix)); err != nil {
			return false, err
		}
	}
	keep := false
	defer func() {
		if probe.bucket != s.bucket && !keep {
			_ = probe.bucket.Close()
		}
	}()
	if detect {
		found := false
		for _, dir := range foreign.LayoutDirs {
			var err error
			found, err = probe.anyObject(ctx, dir, func(key string) bool { _, ok := foreign.ParseEBRKey(key); return ok })
			if err != nil || found {
				if err != nil {
					return false, err
				}
				break
			}
		}
		if !found {
			return false, nil
		}
	}
	if probe.bucket != s.bucket {
		_ = s.bucket.Close()
		keep = true
	}
	s.bucket, s.localDir, s.prefix, s.loc = probe.bucket, probe.localDir, probe.prefix, probe.loc
	s.foreign = &ebrSource{}
	s.opts.Log.Info("reading an etcd-backup-restore store (read-only)", "store", s.url, "lacks", s.foreign.lacks())
	return true, nil
}

// useSnapshotObject makes the store the one snapshot file its URL names (an object whose
// key is the prefix without its last slash). With detect it does so only when that object
// exists.
func (s *Store) useSnapshotObject(ctx context.Context, detect bool) (bool, error) {
	p := strings.TrimSuffix(s.prefix, "/")
	if p == "" || s.localDir != "" {
		if detect {
			return false, nil
		}
		return false, fmt.Errorf("open store %q: layout=%s needs the URL of a snapshot file or object, not a bucket", s.url, LayoutSnapshot)
	}
	dir, key := path.Split(p)
	bucket, err := s.reopen(ctx, s.loc, orRoot(dir))
	if err != nil {
		return false, err
	}
	if detect {
		ok, err := bucket.Exists(ctx, key)
		if err != nil || !ok {
			_ = bucket.Close()
			if err != nil {
				return false, fmt.Errorf("detect the layout of store %q: %w", s.url, err)
			}
			return false, nil
		}
	}
	_ = s.bucket.Close()
	s.bucket, s.prefix = bucket, dir
	s.foreign = &snapshotSource{key: key}
	s.opts.Log.Info("reading an etcd snapshot file (read-only)", "store", s.url, "lacks", s.foreign.lacks())
	return true, nil
}

// useSnapshotFile makes the store the snapshot file key in the store's directory.
func (s *Store) useSnapshotFile(key string) {
	s.foreign = &snapshotSource{key: key}
	s.opts.Log.Info("reading an etcd snapshot file (read-only)", "store", s.url, "lacks", s.foreign.lacks())
}

// reopen opens the bucket of loc again, with prefix (see openBucket). An in-memory store
// cannot be opened again (each opening is a new, empty bucket).
func (s *Store) reopen(ctx context.Context, loc location, prefix string) (*blob.Bucket, error) {
	if loc.scheme == "mem" {
		return nil, fmt.Errorf("open store %q: an in-memory store is private to the Store that opened it: give its layout's own URL", s.url)
	}
	b, _, err := openBucket(ctx, loc, prefix, s.opts.Log, s.opts.SendTimeout)
	if err != nil {
		return nil, fmt.Errorf("open store %q: %w", s.url, scrubError(err, s.rawURL))
	}
	return b, nil
}

// orRoot is prefix, or "/" (openBucket's "no prefix") when it is empty.
func orRoot(prefix string) string {
	if prefix == "" {
		return "/"
	}
	return prefix
}

// ebrSource reads an etcd-backup-restore store (package foreign has its format).
type ebrSource struct{}

func (*ebrSource) layout() Layout { return LayoutEtcdBackupRestore }

func (*ebrSource) lacks() string {
	return "lease TTLs in its deltas (leases granted after a full snapshot get --unrecorded-lease-ttl), the exact " +
		"revision of a full snapshot (its name has the revision read just before it was taken: a lower bound), " +
		"times finer than a second in names, and a record of the cluster it belongs to"
}

// ebrSnapshot is the catalog's view of an etcd-backup-restore object. Times in its names are
// whole seconds, taken after what the object holds was read: the end of that second is a
// time at or after everything in it, which is what a delta's time must be, and the time a
// full snapshot is taken at or before for a time target to use it.
func ebrSnapshot(o foreign.EBRObject) catalog.Snapshot {
	t := o.Created.Add(ebrTimeSlack)
	if o.Kind == foreign.EBRFull {
		return catalog.Snapshot{Kind: catalog.KindFull, Revision: o.Last, Time: t, Key: o.Key, RevisionAtLeast: true}
	}
	return catalog.Snapshot{Kind: catalog.KindDelta, From: o.Start, Revision: o.Last, Time: t, Key: o.Key}
}

func (*ebrSource) parse(key string) (catalog.Snapshot, bool) {
	o, ok := foreign.ParseEBRKey(key)
	if !ok {
		return catalog.Snapshot{}, false
	}
	return ebrSnapshot(o), true
}

func (e *ebrSource) list(ctx context.Context, s *Store, kind catalog.Kind) ([]catalog.Snapshot, error) {
	var snaps []catalog.Snapshot
	for _, dir := range foreign.LayoutDirs {
		err := s.eachObject(ctx, dir, func(obj *blob.ListObject) error {
			if snap, ok := e.parse(obj.Key); ok && snap.Kind == kind {
				snap.Size = obj.Size
				snaps = append(snaps, snap)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	slices.SortFunc(snaps, catalog.CompareSnapshots)
	return snaps, nil
}

func (*ebrSource) payload(snap catalog.Snapshot, body io.Reader) (io.ReadCloser, error) {
	o, ok := foreign.ParseEBRKey(snap.Key)
	if !ok {
		return nil, fmt.Errorf("%q is not the name of an etcd-backup-restore snapshot", snap.Key)
	}
	plain, err := foreign.Decompress(body, o.Compression)
	if err != nil {
		return nil, err
	}
	if o.Kind == foreign.EBRFull {
		return plain, nil
	}
	return convertEBRDelta(plain, o), nil
}

// snapshotSource reads one etcd snapshot file.
type snapshotSource struct {
	key  string
	mu   sync.Mutex
	seen *catalog.Snapshot // what the last listing found, with the revision scanned from it
}

func (*snapshotSource) layout() Layout { return LayoutSnapshot }

func (*snapshotSource) lacks() string {
	return "deltas (it restores to its own revision only), the time it was taken (its modification time stands for it), " +
		"and a record of the cluster it belongs to"
}

// parse knows the one key; its revision and time are known once the file was listed.
func (f *snapshotSource) parse(key string) (catalog.Snapshot, bool) {
	if key != f.key {
		return catalog.Snapshot{}, false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.seen == nil {
		return catalog.Snapshot{Kind: catalog.KindFull, Key: key}, true
	}
	return *f.seen, true
}

// list returns the file as the one full snapshot: its revision is read from the db itself,
// once for each size and modification time the file has (the whole file is read: a
// snapshot object is downloaded once more by the restore).
func (f *snapshotSource) list(ctx context.Context, s *Store, kind catalog.Kind) ([]catalog.Snapshot, error) {
	if kind != catalog.KindFull {
		return nil, nil
	}
	attrs, err := s.bucket.Attributes(ctx, f.key)
	if gcerrors.Code(err) == gcerrors.NotFound {
		return nil, fmt.Errorf("%w: the snapshot file %q is gone", ErrNotFound, f.key)
	}
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	seen := f.seen
	f.mu.Unlock()
	if seen != nil && seen.Size == attrs.Size && seen.Time.Equal(attrs.ModTime.UTC().Truncate(timePrecision)) {
		return []catalog.Snapshot{*seen}, nil
	}
	rev, err := f.scanRevision(ctx, s)
	if err != nil {
		return nil, err
	}
	snap := catalog.Snapshot{Kind: catalog.KindFull, Revision: rev, Time: attrs.ModTime.UTC().Truncate(timePrecision),
		Key: f.key, Size: attrs.Size}
	f.mu.Lock()
	f.seen = &snap
	f.mu.Unlock()
	return []catalog.Snapshot{snap}, nil
}

// scanRevision reads the snapshot's db through dbrev.Scanner and returns its revision.
func (f *snapshotSource) scanRevision(ctx context.Context, s *Store) (int64, error) {
	body, err := openResuming(ctx, bucketRange(s.bucket, f.key), f.key, s.url, s.opts.Retry, s.opts.Log)
	if err != nil {
		return 0, err
	}
	defer body.Close()
	db, err := f.payload(catalog.Snapshot{Key: f.key}, body)
	if err != nil {
		return 0, fmt.Errorf("read the snapshot file %q: %w", f.key, err)
	}
	defer db.Close()
	scan := dbrev.NewScanner()
	if _, err := io.Copy(scan, db); err != nil {
		return 0, fmt.Errorf("read the snapshot file %q: %w", f.key, err)
	}
	rev, err := scan.Revision()
	if err != nil {
		return 0, fmt.Errorf("the snapshot file %q: %w", f.key, err)
	}
	return rev, nil
}

func (*snapshotSource) payload(_ catalog.Snapshot, body io.Reader) (io.ReadCloser, error) {
	br := bufio.NewReaderSize(body, 64<<10)
	head, err := br.Peek(foreign.SniffLen)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	format, err := foreign.SniffSnapshot(head)
	if err != nil {
		return nil, err
	}
	return foreign.OpenSnapshot(br, format)
}
