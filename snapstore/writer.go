package snapstore

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path"
	"path/filepath"
	"sync/atomic"
	"time"

	"filippo.io/age"
	"github.com/klauspost/compress/zstd"
	"gocloud.dev/blob"

	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// Content types of stored objects.
const (
	contentTypeZstd = "application/zstd"
	contentTypeAge  = "application/octet-stream"
)

// Upload buffering, the same for every provider: parts (S3), blocks (Azure)
// or chunks (GCS) of uploadPartSize, at most uploadConcurrency of them in
// flight, so an upload holds at most (uploadConcurrency+1) * uploadPartSize
// of buffers. 8 MiB parts allow S3 objects of up to 78 GiB (10,000 parts).
const (
	uploadPartSize    = 8 << 20
	uploadConcurrency = 3
)

// Writer uploads one backup object. Write the plaintext payload to it, then
// call Commit to make the object visible, or Abort to discard it. Until
// Commit returns, nothing is visible under the object's name. A Writer is
// not safe for concurrent use; to stop an upload from another goroutine,
// cancel the context given to Create. Always call Abort (a no-op after
// Commit), e.g. with defer, so that a failed upload releases its resources.
type Writer struct {
	store  *Store
	snap   catalog.Snapshot
	ctx    context.Context
	cancel context.CancelFunc

	upload *blob.Writer
	stored *countingWriter // what reaches upload
	sealer io.WriteCloser  // age encryption, nil for plain objects
	enc    *zstd.Encoder
	hash   hash.Hash
	length uint64
	file   *os.File // the temporary file of a file store, for fsync

	done bool  // committed or aborted
	err  error // why the upload failed, sticky
}

// Create starts the upload of a new object. The key is built from
// snap.Kind, From, Revision and Time, encrypted when the store has
// recipients; snap.Key, Encrypted and Size are ignored. The upload lives
// until Commit or Abort, or until ctx is cancelled, which discards it.
func (s *Store) Create(ctx context.Context, snap catalog.Snapshot) (*Writer, error) {
	if err := snap.Validate(); err != nil {
		return nil, fmt.Errorf("create in %q: %w", s.url, err)
	}
	snap.Time = snap.Time.UTC().Truncate(timePrecision)
	snap.Encrypted = len(s.opts.Recipients) > 0
	snap.Key = snap.Name(snap.Encrypted)
	snap.Size = 0

	w := &Writer{store: s, snap: snap, hash: sha256.New()}
	w.ctx, w.cancel = context.WithCancel(ctx)
	contentType := contentTypeZstd
	if snap.Encrypted {
		contentType = contentTypeAge
	}
	upload, file, err := s.newUpload(w.ctx, snap.Key, contentType)
	if err != nil {
		w.cancel()
		return nil, fmt.Errorf("create %q in %q: %w", snap.Key, s.url, s.explainLocal(err, nothingWritten))
	}
	w.file = file
	w.upload = upload
	w.stored = &countingWriter{w: upload}
	var sink io.Writer = w.stored
	if snap.Encrypted {
		w.sealer, err = age.Encrypt(w.stored, s.opts.Recipients...)
		if err != nil {
			w.discard()
			return nil, fmt.Errorf("create %q in %q: encrypt: %w", snap.Key, s.url, err)
		}
		sink = w.sealer
	}
	w.enc, err = newEncoder(sink)
	if err != nil {
		w.discard()
		return nil, fmt.Errorf("create %q in %q: compress: %w", snap.Key, s.url, err)
	}
	return w, nil
}

// timePrecision is the precision of the time in object names.
const timePrecision = time.Millisecond

// Key returns the key the object will have.
func (w *Writer) Key() string {
	return w.snap.Key
}

// Write compresses p into the upload.
func (w *Writer) Write(p []byte) (int, error) {
	if err := w.usable(); err != nil {
		return 0, err
	}
	if err := w.ctx.Err(); err != nil {
		return 0, w.fail("write", err)
	}
	n, err := w.enc.Write(p)
	w.hash.Write(p[:n])
	w.length += uint64(n)
	if err != nil {
		return n, w.fail("write", err)
	}
	return n, nil
}

// Sum returns the SHA-256 of the bytes written so far (before compression and
// encryption): what the object's trailer will record if nothing more is written.
func (w *Writer) Sum() []byte {
	return w.hash.Sum(nil)
}

// Commit finishes compression, appends the trailer, finishes encryption and
// commits the upload: once it returns nil the object is visible under its
// name. It returns the object's Snapshot with Key and Size set. If Commit
// fails, the upload is discarded; the one exception is a failed fsync of a
// file store's directory, reported after the rename.
func (w *Writer) Commit() (catalog.Snapshot, error) {
	return w.CommitFenced(nil, 0)
}

// ErrCommitLate is wrapped by the error of CommitFenced when the object could not be made
// visible within its window after the fence: the commit was cancelled.
var ErrCommitLate = errors.New("the commit did not finish within its window after the fence")

// CommitFenced is Commit behind a fence. Once everything that precedes the commit is done
// (compression finished, trailer written, a file store's temporary file synced), check is
// called with the upload's context; only when it returns nil is the upload committed. When
// it fails, the upload is discarded, nothing becomes visible, and the error wraps check's.
// A nil check is no fence.
//
// When within is above 0, the object must be visible within that long after check was
// called: past it, the commit is cancelled and the error wraps ErrCommitLate. Where the
// commit happens, and so what the window bounds:
//
//   - a file store: the rename of the synced temporary file, after gocloud checked the
//     upload's context; cancelled before the rename, nothing is visible;
//   - S3, GCS, Azure: the request that makes the object visible (a PUT of an object smaller
//     than one part, the last part and the completion of a multipart upload, the block
//     list). The request is cancelled at the deadline; a server that received the whole
//     request before may still apply it, which no client can prevent.
func (w *Writer) CommitFenced(check func(context.Context) error, within time.Duration) (catalog.Snapshot, error) {
	if err := w.usable(); err != nil {
		return catalog.Snapshot{}, err
	}
	if err := w.finish(); err != nil {
		return catalog.Snapshot{}, w.fail("commit", err)
	}
	var late atomic.Bool
	if check != nil {
		fenced := time.Now()
		if err := check(w.ctx); err != nil {
			return catalog.Snapshot{}, w.fail("commit", fmt.Errorf("refused by the fence: %w", err))
		}
		if within > 0 {
			left := time.Until(fenced.Add(within))
			if left <= 0 {
				return catalog.Snapshot{}, w.fail("commit", fmt.Errorf("%w (%v): the fence itself took that long", ErrCommitLate, within))
			}
			timer := time.AfterFunc(left, func() {
				late.Store(true)
				w.cancel()
			})
			defer timer.Stop()
		}
	}
	if err := closeUpload(w.upload); err != nil {
		w.done = true
		w.cancel()
		if late.Load() {
			err = fmt.Errorf("%w (%v): %w", ErrCommitLate, within, err)
		}
		w.err = fmt.Errorf("commit %q to %q: %w", w.snap.Key, w.store.url, w.store.explainLocal(err, nothingWritten))
		return catalog.Snapshot{}, w.err
	}
	w.done = true
	w.cancel()
	if err := w.syncDir(); err != nil {
		return catalog.Snapshot{}, fmt.Errorf("commit %q to %q: %w", w.snap.Key, w.store.url, err)
	}
	snap := w.snap
	snap.Size = w.stored.n
	return snap, nil
}

// finish writes everything that precedes the upload's commit.
func (w *Writer) finish() error {
	if err := w.ctx.Err(); err != nil {
		return err
	}
	if err := w.enc.Close(); err != nil {
		return fmt.Errorf("compress: %w", err)
	}
	t := trailer{length: w.length}
	w.hash.Sum(t.sum[:0])
	sink := io.Writer(w.stored)
	if w.sealer != nil {
		sink = w.sealer
	}
	if _, err := sink.Write(t.marshal()); err != nil {
		return fmt.Errorf("write trailer: %w", err)
	}
	if w.sealer != nil {
		if err := w.sealer.Close(); err != nil {
			return fmt.Errorf("encrypt: %w", err)
		}
	}
	if w.file != nil {
		if err := w.file.Sync(); err != nil {
			return fmt.Errorf("sync: %w", err)
		}
	}
	return w.ctx.Err()
}

// Abort discards the upload: nothing becomes visible under any name. It is
// a no-op after Commit or a previous Abort.
func (w *Writer) Abort() error {
	if w.done {
		return nil
	}
	w.discard()
	w.err = fmt.Errorf("upload of %q to %q was aborted", w.snap.Key, w.store.url)
	return nil
}

// usable returns the error that prevents further use of w.
func (w *Writer) usable() error {
	switch {
	case w.err != nil:
		return w.err
	case w.done:
		return fmt.Errorf("upload of %q to %q is already committed", w.snap.Key, w.store.url)
	}
	return nil
}

// fail discards the upload and records why.
func (w *Writer) fail(op string, err error) error {
	w.discard()
	w.err = fmt.Errorf("%s %q to %q: %w", op, w.snap.Key, w.store.url, w.store.explainLocal(err, nothingWritten))
	return w.err
}

// discard cancels the upload's context, then closes the upload, which makes
// gocloud drop it (abort the multipart upload, remove the temporary file).
func (w *Writer) discard() {
	w.done = true
	w.cancel()
	if w.enc != nil {
		// Wait for blocks still being compressed and drop them.
		w.enc.Reset(io.Discard)
	}
	if w.upload != nil {
		_ = closeUpload(w.upload) // reports the cancellation
	}
}

// syncDir makes a file store's rename durable.
func (w *Writer) syncDir() error {
	if w.store.localDir == "" {
		return nil
	}
	return syncDir(filepath.Join(w.store.localDir, filepath.FromSlash(path.Dir(w.snap.Key))))
}

// countingWriter counts the bytes written through it.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// newUpload opens the bucket's writer for key with etcdbr's upload settings (part size,
// concurrency, S3 abort handling). file is a file store's temporary file (nil for other
// stores), kept for fsync and made readable by the owner only, as snapshots hold all of
// etcd's data. The closure must not refer to a Writer: gocloud keeps the options, and a
// cycle through blob.Writer, which has a finalizer, is never collected.
func (s *Store) newUpload(ctx context.Context, key, contentType string) (upload *blob.Writer, file *os.File, err error) {
	if err := s.readOnly("upload " + key); err != nil {
		return nil, nil, err
	}
	upload, err = s.bucket.NewWriter(ctx, key, &blob.WriterOptions{
		ContentType:    contentType,
		BufferSize:     uploadPartSize,
		MaxConcurrency: uploadConcurrency,
		BeforeWrite: func(as func(any) bool) error {
			if as(&file) {
				return file.Chmod(0o600)
			}
			configureS3Upload(s.s3, as)
			return nil
		},
	})
	return upload, file, err
}
