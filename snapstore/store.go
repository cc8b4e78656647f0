package snapstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"filippo.io/age"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"

	// The drivers of the supported store schemes register with blob's
	// default URL mux.
	_ "gocloud.dev/blob/azureblob"
	_ "gocloud.dev/blob/fileblob"
	_ "gocloud.dev/blob/gcsblob"
	_ "gocloud.dev/blob/memblob"
	_ "gocloud.dev/blob/s3blob"

	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// Options configures a Store.
type Options struct {
	// Recipients, when not empty, make new objects encrypted with age to
	// all of them; their names get the .age suffix.
	Recipients []age.Recipient
	// Identities decrypt .age objects. Reading an .age object without an
	// identity that matches it is an error wrapping ErrNoIdentity.
	Identities []age.Identity
	// Retry is how reads retry transient failures and resume broken
	// streams; the zero value means up to 8 tries over about a minute.
	Retry RetryPolicy
	// Log receives warnings about retried and resumed transfers; nil
	// discards them.
	Log *slog.Logger
	// MustExist opens only a store that exists already: a file store's
	// directory is not created, and a missing one is an error wrapping
	// ErrNoStore. Commands that only read a store (list, verify, restore,
	// gc, copy's source) set it, so that a mistyped URL is reported
	// instead of answered as an empty store, and creates nothing. Buckets
	// are never created; Check reports a missing one. With MustExist, a
	// local path that names a file (not a directory) is read as an etcd
	// snapshot file (LayoutSnapshot).
	MustExist bool
	// Layout, when set, is the store's layout; the URL's layout= parameter overrides it.
	// Unset, the store is etcdbr's own; Detect finds another tool's.
	Layout Layout
	// SendTimeout is how long an upload to an s3:// store may go without handing a byte of
	// its request to the network before its connection is given up (and the request tried
	// again); zero means s3SendTimeout, a minute.
	SendTimeout time.Duration
}

// Store is a backup store: the objects under one URL prefix. It is safe for
// concurrent use.
type Store struct {
	url      string // redacted
	bucket   *blob.Bucket
	opts     Options
	localDir string     // the directory of a file store, "" otherwise
	s3       *s3.Client // the upload client of an s3:// store (openS3), nil otherwise
	// loc is where the URL points (rawURL, unredacted, for error scrubbing), prefix the key
	// prefix the store reads under ("" or ending in "/"): a store of another tool may read
	// under another prefix than the URL's (Detect).
	loc    location
	rawURL string
	prefix string
	// foreign, when set, reads another tool's backups (read-only); layoutSet says that the
	// layout was given, not to be detected.
	foreign   foreignSource
	layoutSet bool
}

// Open opens the store at url:
//
//   - file:///abs/dir, file:rel/dir, file://./rel/dir or a plain path: a
//     local directory, created (mode 0700) when missing unless
//     opts.MustExist;
//   - s3://bucket/prefix?region=..., gs://bucket/prefix,
//     azblob://container/prefix: a bucket and a key prefix inside it, with
//     the query parameters of gocloud's driver for that scheme;
//   - mem://prefix: an in-memory store for tests, private to this Store.
//
// Open does not access the bucket (gocloud's drivers only load their
// configuration and credentials), so a store that is unreachable for now
// still opens; use Check to see whether it is reachable.
func Open(ctx context.Context, url string, opts Options) (*Store, error) {
	shown := url
	if !isPlainPath(url) {
		shown = redactURL(url)
	}
	loc, err := parseLocation(url)
	if err != nil {
		return nil, fmt.Errorf("open store %q: %w", shown, err)
	}
	layout := opts.Layout
	if loc.layout != "" {
		layout = loc.layout
	}
	snapshotFile := "" // the key of a local snapshot file, whose directory the store opens
	if loc.localDir != "" && opts.MustExist && (layout == "" || layout == LayoutSnapshot) && isFile(loc.localDir) {
		file := loc.localDir
		if loc, err = localLocation(filepath.Dir(file), loc.query); err != nil {
			return nil, fmt.Errorf("open store %q: %w", shown, err)
		}
		snapshotFile = filepath.Base(file)
	}
	if loc.localDir != "" {
		if err := prepareDir(loc.localDir, opts.MustExist); err != nil {
			return nil, fmt.Errorf("open store %q: %w", shown, err)
		}
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.SendTimeout <= 0 {
		opts.SendTimeout = s3SendTimeout
	}
	bucket, s3Uploads, err := openBucket(ctx, loc, "", log, opts.SendTimeout)
	if err != nil {
		// gocloud's errors quote the URL: keep its secrets out of logs.
		return nil, fmt.Errorf("open store %q: %w%s", shown, scrubError(err, url), openHint(loc.scheme, err))
	}
	s := &Store{
		url:    shown,
		bucket: bucket,
		opts: Options{
			Recipients:  slices.Clone(opts.Recipients),
			Identities:  slices.Clone(opts.Identities),
			Retry:       opts.Retry.orDefault(),
			Log:         log,
			SendTimeout: opts.SendTimeout,
		},
		localDir:  loc.localDir,
		s3:        s3Uploads,
		loc:       loc,
		rawURL:    url,
		prefix:    loc.prefix,
		layoutSet: layout != "",
	}
	configureRetries(s, loc.scheme)
	switch {
	case snapshotFile != "":
		s.useSnapshotFile(snapshotFile)
	case layout == LayoutEtcdBackupRestore:
		_, err = s.useEBR(ctx, false)
	case layout == LayoutSnapshot && loc.localDir != "":
		err = fmt.Errorf("open store %q: layout=%s needs the path of a snapshot file, and %s is a directory", shown, LayoutSnapshot, loc.localDir)
	case layout == LayoutSnapshot:
		_, err = s.useSnapshotObject(ctx, false)
	}
	if err != nil {
		_ = s.bucket.Close()
		return nil, err
	}
	return s, nil
}

// openBucket opens the bucket of loc with prefix ("" for loc's own; "/" for none). An s3://
// bucket also returns the client its uploads use, which gives up a connection that cannot
// send for sendTimeout.
func openBucket(ctx context.Context, loc location, prefix string, log *slog.Logger, sendTimeout time.Duration) (*blob.Bucket, *s3.Client, error) {
	var bucket *blob.Bucket
	var s3Uploads *s3.Client
	var err error
	switch loc.scheme {
	case "s3":
		bucket, s3Uploads, err = openS3(ctx, loc.bucketURL, log, sendTimeout)
	case "azblob":
		bucket, err = openAzure(ctx, loc.bucketURL)
	default:
		bucket, err = blob.OpenBucket(ctx, loc.bucketURL)
	}
	if err != nil {
		return nil, nil, err
	}
	switch prefix {
	case "":
		prefix = loc.prefix
	case "/":
		prefix = ""
	}
	if prefix != "" {
		bucket = blob.PrefixedBucket(bucket, prefix)
	}
	return bucket, s3Uploads, nil
}

// isFile reports whether path is a regular file.
func isFile(path string) bool {
	info, err := os.Stat(path)
	return err == nil && info.Mode().IsRegular()
}

// prepareDir makes sure a file store's directory is there: it creates it
// (mode 0700), or with mustExist checks that it exists.
func prepareDir(dir string, mustExist bool) error {
	if !mustExist {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("create directory: %w", err)
		}
		return nil
	}
	info, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%w: directory %s does not exist: check the path (a store is created only by "+
			"the commands that back up into it: etcdbr run and etcdbr snapshot)", ErrNoStore, dir)
	case err != nil:
		return fmt.Errorf("read directory: %w", err)
	case !info.IsDir():
		return fmt.Errorf("%s is not a directory: give the directory that holds the backups", dir)
	}
	return nil
}

// openHint returns advice for errors of gocloud's URL openers that do not
// say how to fix them.
func openHint(scheme string, err error) string {
	if scheme == "azblob" && strings.Contains(err.Error(), "AccountName is required") {
		return ": set AZURE_STORAGE_ACCOUNT or add ?storage_account=NAME to the URL"
	}
	return ""
}

// URL returns the URL the store was opened with, with passwords and secret
// query parameters replaced by "xxxxx".
func (s *Store) URL() string {
	return s.url
}

// Encrypts reports whether the objects this Store writes are encrypted (it has recipients).
func (s *Store) Encrypts() bool {
	return len(s.opts.Recipients) > 0
}

// Close releases the store's resources.
func (s *Store) Close() error {
	if err := s.bucket.Close(); err != nil {
		return fmt.Errorf("close store %q: %w", s.url, err)
	}
	return nil
}

// Check verifies that the store's bucket exists and can be listed.
func (s *Store) Check(ctx context.Context) error {
	ok, err := s.bucket.IsAccessible(ctx)
	if err != nil {
		return fmt.Errorf("check store %q: %w", s.url, err)
	}
	if !ok {
		return fmt.Errorf("check store %q: %w: the bucket does not exist: check its name, or create it first "+
			"(etcdbr never creates buckets)", s.url, ErrNoStore)
	}
	return nil
}

// List returns all objects of the given kind, sorted by Revision, then
// From, then Time (then Key). It is one paged listing of <prefix>full/ or
// <prefix>delta/ and reads no object; keys that ParseName rejects are
// skipped.
func (s *Store) List(ctx context.Context, kind catalog.Kind) ([]catalog.Snapshot, error) {
	if kind != catalog.KindFull && kind != catalog.KindDelta {
		return nil, fmt.Errorf("list store %q: unknown snapshot kind %q: use %q or %q", s.url, kind, catalog.KindFull, catalog.KindDelta)
	}
	if s.foreign != nil {
		snaps, err := s.foreign.list(ctx, s, kind)
		if err != nil {
			return nil, fmt.Errorf("list %s snapshots in %q: %w", kind, s.url, err)
		}
		return snaps, nil
	}
	var snaps []catalog.Snapshot
	err := s.eachObject(ctx, string(kind)+"/", func(obj *blob.ListObject) error {
		if snap, ok := catalog.ParseName(obj.Key); ok && snap.Kind == kind {
			snap.Size = obj.Size
			snaps = append(snaps, snap)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %s snapshots in %q: %w", kind, s.url, err)
	}
	slices.SortFunc(snaps, catalog.CompareSnapshots)
	return snaps, nil
}

// writeRecord writes a small record (JSON) as key in one write, mode 0600 in a file store
// (a record may say what the store holds); ifNotExist makes the write conditional where the
// driver supports it: when key exists, the error wraps errRecordExists (a driver without
// conditional writes returns one whose gcerrors.Code is Unimplemented).
func (s *Store) writeRecord(ctx context.Context, key string, data []byte, ifNotExist bool) error {
	if err := s.readOnly("write " + key); err != nil {
		return err
	}
	if ifNotExist && s.localDir != "" {
		return s.explainLocal(s.createLocal(key, data), nothingWritten)
	}
	var file *os.File
	err := s.bucket.WriteAll(ctx, key, data, &blob.WriterOptions{
		ContentType: "application/json",
		IfNotExist:  ifNotExist,
		BeforeWrite: func(as func(any) bool) error {
			if as(&file) {
				return file.Chmod(0o600)
			}
			return nil
		},
	})
	if ifNotExist && gcerrors.Code(err) == gcerrors.FailedPrecondition {
		return fmt.Errorf("%w: %w", errRecordExists, err)
	}
	return s.explainLocal(err, nothingWritten)
}

// eachObject calls fn for every object under prefix, in one paged listing, until fn
// returns an error. A file store's directory is read by listDir, so that uploads committing
// beside the listing never fail it.
func (s *Store) eachObject(ctx context.Context, prefix string, fn func(*blob.ListObject) error) error {
	if s.localDir != "" {
		return listDir(ctx, s.localDir, prefix, fn)
	}
	it := s.bucket.List(&blob.ListOptions{Prefix: prefix})
	for {
		obj, err := it.Next(ctx)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := fn(obj); err != nil {
			return err
		}
	}
}

// ListBackups lists the store's backups: its full snapshots, then its deltas, each sorted as
// List sorts them (two paged listings, of <prefix>full/ and <prefix>delta/; Locks is left
// empty: ListForGC reads them). The full snapshots are listed first because garbage
// collection deletes deltas before the full snapshots they continue: a listing that runs
// beside it may miss deltas it deleted, but never lists a delta whose full snapshot it
// deleted before.
func (s *Store) ListBackups(ctx context.Context) (catalog.Listing, error) {
	fulls, err := s.List(ctx, catalog.KindFull)
	if err != nil {
		return catalog.Listing{}, err
	}
	deltas, err := s.List(ctx, catalog.KindDelta)
	if err != nil {
		return catalog.Listing{}, err
	}
	return catalog.Listing{Fulls: fulls, Deltas: deltas}, nil
}

// Latest returns the last object of the given kind in List's order: the one
// with the highest Revision. It reports false when there is none.
func (s *Store) Latest(ctx context.Context, kind catalog.Kind) (catalog.Snapshot, bool, error) {
	snaps, err := s.List(ctx, kind)
	if err != nil {
		return catalog.Snapshot{}, false, err
	}
	if len(snaps) == 0 {
		return catalog.Snapshot{}, false, nil
	}
	return snaps[len(snaps)-1], true, nil
}

// Newest returns the newest revision the store holds a backup of: the highest revision of
// its newest full snapshot and its newest delta (0 when it holds none).
func (s *Store) Newest(ctx context.Context) (int64, error) {
	l, err := s.ListBackups(ctx)
	if err != nil {
		return 0, err
	}
	var newest int64
	for _, snaps := range [][]catalog.Snapshot{l.Fulls, l.Deltas} {
		if len(snaps) > 0 {
			newest = max(newest, snaps[len(snaps)-1].Revision)
		}
	}
	return newest, nil
}

// Delete removes the object snap.Key (or, when Key is empty, the name built
// from snap's fields). Only names that ParseName accepts are deleted.
// Deleting an object that does not exist is not an error, so that an
// interrupted garbage collection can simply run again.
func (s *Store) Delete(ctx context.Context, snap catalog.Snapshot) error {
	if err := s.readOnly("delete " + snap.Key); err != nil {
		return err
	}
	key, err := s.keyOf(snap)
	if err != nil {
		return fmt.Errorf("delete from %q: %w", s.url, err)
	}
	if err := s.bucket.Delete(ctx, key); err != nil && gcerrors.Code(err) != gcerrors.NotFound {
		return fmt.Errorf("delete %q from %q: %w", key, s.url, s.explainLocal(err, "the object is still there"))
	}
	return nil
}

// keyOf returns snap.Key, or the name built from snap's fields when Key is
// empty, after checking that it is one of ours.
func (s *Store) keyOf(snap catalog.Snapshot) (string, error) {
	if s.foreign != nil {
		if _, ok := s.foreign.parse(snap.Key); !ok {
			return "", fmt.Errorf("%q is not the name of a backup object of this %s store", snap.Key, s.foreign.layout())
		}
		return snap.Key, nil
	}
	key := snap.Key
	if key == "" {
		if err := snap.Validate(); err != nil {
			return "", err
		}
		key = snap.Name(snap.Encrypted)
	}
	if _, ok := catalog.ParseName(key); !ok {
		return "", fmt.Errorf("%q is not the name of a backup object", key)
	}
	return key, nil
}
