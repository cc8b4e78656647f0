package snapstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/etcdbr/etcdbr/internal/dbrev"
	"github.com/etcdbr/etcdbr/internal/progress"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// CopyResult says what Copy did with one object.
type CopyResult struct {
	// Copy is the object written to the destination (Key and Size set).
	Copy catalog.Snapshot
	// Reencrypted reports that the payload was decoded and encoded again
	// for the destination's recipients, rather than copied byte for byte.
	Reencrypted bool
	// PayloadVerified reports that the copy was read back, decoded and its
	// payload checked against its trailer. It is false only for an object
	// copied byte for byte that nobody here can decrypt: then the copy's
	// bytes were compared with the source's instead.
	PayloadVerified bool
	// Converted reports that the object came from another tool's store and was converted
	// into etcdbr's format (see convert).
	Converted bool
}

// Copy copies the backup object snap from src to dst and verifies the copy
// by reading it back from dst.
//
// When dst has no recipients, the object is copied byte for byte under the
// same key, encrypted or not (copying an encrypted object needs no
// identity). The copy is read back and its SHA-256 compared with the
// source's, and, when it is plain or an identity of dst's options decrypts
// it, decoded and checked against its trailer.
//
// When dst has recipients, the payload is read from src (verified; an
// encrypted source needs an identity of src) and written to dst encrypted
// to them, under the key with .age; the copy is read back and decoded with
// dst's identities, which must be able to decrypt it.
//
// A copy that fails verification is deleted from dst and reported with an
// error that wraps ErrCorrupt when the content is bad (then the source
// object is the corrupt one). Copy does not check whether dst already holds
// the object: see SelectCopies.
func Copy(ctx context.Context, src, dst *Store, snap catalog.Snapshot) (CopyResult, error) {
	return CopyWithProgress(ctx, src, dst, snap, nil)
}

// CopyWithProgress is Copy that counts the bytes it reads from src into p (the object's
// size once copied; the read-back from dst is not counted).
func CopyWithProgress(ctx context.Context, src, dst *Store, snap catalog.Snapshot, p *progress.Progress) (CopyResult, error) {
	key, err := src.keyOf(snap)
	if err != nil {
		return CopyResult{}, fmt.Errorf("copy from %q: %w", src.url, err)
	}
	if err := dst.readOnly("copy " + key); err != nil {
		return CopyResult{}, err
	}
	var res CopyResult
	if src.foreign != nil {
		snap, _ = src.foreign.parse(key)
		res, err = convert(ctx, src, dst, snap, p)
	} else if snap, _ = catalog.ParseName(key); len(dst.opts.Recipients) > 0 {
		res, err = reencrypt(ctx, src, dst, snap, p)
	} else {
		res, err = copyRaw(ctx, src, dst, snap, p)
	}
	if err != nil {
		return CopyResult{}, fmt.Errorf("copy %q from %q to %q: %w", key, src.url, dst.url, err)
	}
	return res, nil
}

// copyRaw copies the object's bytes and verifies the copy.
func copyRaw(ctx context.Context, src, dst *Store, snap catalog.Snapshot, p *progress.Progress) (CopyResult, error) {
	body, err := openResuming(ctx, bucketRange(src.bucket, snap.Key), snap.Key, src.url, src.opts.Retry, src.opts.Log)
	if err != nil {
		return CopyResult{}, err
	}
	defer body.Close()
	up, err := dst.createRaw(ctx, snap.Key, snap.Encrypted)
	if err != nil {
		return CopyResult{}, err
	}
	defer up.abort()
	if _, err := io.Copy(up, &progressReader{r: body, p: p}); err != nil {
		return CopyResult{}, err
	}
	if up.n != body.size {
		return CopyResult{}, fmt.Errorf("read %d bytes of an object of %d", up.n, body.size)
	}
	if err := up.commit(); err != nil {
		return CopyResult{}, err
	}
	copied := snap
	copied.Size = up.n
	decodable := !snap.Encrypted || len(dst.opts.Identities) > 0
	if err := dst.verifyCopy(ctx, copied, up.hash.Sum(nil), decodable); err != nil {
		return CopyResult{}, err
	}
	return CopyResult{Copy: copied, PayloadVerified: decodable}, nil
}

// reencrypt decodes the object from src and encodes it into dst.
func reencrypt(ctx context.Context, src, dst *Store, snap catalog.Snapshot, p *progress.Progress) (CopyResult, error) {
	if len(dst.opts.Identities) == 0 {
		return CopyResult{}, errors.New("re-encrypting needs an identity that decrypts the copies, to verify them")
	}
	r, err := src.OpenReaderProgress(ctx, snap, p)
	if err != nil {
		return CopyResult{}, err
	}
	defer r.Close()
	w, err := dst.Create(ctx, catalog.Snapshot{Kind: snap.Kind, From: snap.From, Revision: snap.Revision, Time: snap.Time})
	if err != nil {
		return CopyResult{}, err
	}
	defer w.Abort()
	if _, err := io.Copy(w, r); err != nil {
		return CopyResult{}, err
	}
	copied, err := w.Commit()
	if err != nil {
		return CopyResult{}, err
	}
	if err := dst.verifyCopy(ctx, copied, nil, true); err != nil {
		return CopyResult{}, err
	}
	return CopyResult{Copy: copied, Reencrypted: true, PayloadVerified: true}, nil
}

// verifyCopy reads a copy back: its bytes must hash to rawSum (unless nil)
// and, when decode is set, its payload must match its trailer. A copy that
// fails is deleted.
func (s *Store) verifyCopy(ctx context.Context, copied catalog.Snapshot, rawSum []byte, decode bool) error {
	err := s.readBack(ctx, copied, rawSum, decode)
	if err == nil {
		return nil
	}
	if ctx.Err() == nil && (errors.Is(err, ErrCorrupt) || errors.Is(err, ErrNoIdentity)) {
		if derr := s.Delete(context.WithoutCancel(ctx), copied); derr != nil {
			return fmt.Errorf("verify the copy: %w (and deleting it failed: %w)", err, derr)
		}
		return fmt.Errorf("verify the copy (deleted again): %w", err)
	}
	return fmt.Errorf("verify the copy: %w", err)
}

func (s *Store) readBack(ctx context.Context, copied catalog.Snapshot, rawSum []byte, decode bool) error {
	body, err := openResuming(ctx, bucketRange(s.bucket, copied.Key), copied.Key, s.url, s.opts.Retry, s.opts.Log)
	if err != nil {
		return err
	}
	hashed := &hashingReader{r: body, h: sha256.New()}
	if decode {
		r, err := newPayloadReader(copied.Key, s.url, readCloser{hashed, body}, copied.Encrypted, s.opts.Identities, nil)
		if err != nil {
			_ = body.Close()
			return err
		}
		defer r.Close()
		if _, err := io.Copy(io.Discard, r); err != nil {
			return err
		}
	} else {
		defer body.Close()
	}
	if _, err := io.Copy(io.Discard, hashed); err != nil {
		return err
	}
	if hashed.n != copied.Size {
		return fmt.Errorf("%w: the copy of %q is %d bytes, the source %d", ErrCorrupt, copied.Key, hashed.n, copied.Size)
	}
	if rawSum != nil && !bytes.Equal(hashed.h.Sum(nil), rawSum) {
		return fmt.Errorf("%w: the copy of %q differs from the source (sha256)", ErrCorrupt, copied.Key)
	}
	return nil
}

// hashingReader hashes and counts what is read through it.
type hashingReader struct {
	r io.Reader
	h hash.Hash
	n int64
}

func (h *hashingReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	h.h.Write(p[:n])
	h.n += int64(n)
	return n, err
}

// readCloser reads from a Reader and closes a Closer.
type readCloser struct {
	io.Reader
	io.Closer
}

// progressReader counts what it reads into a Progress.
type progressReader struct {
	r io.Reader
	p *progress.Progress
}

func (c *progressReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.p.AddBytes(int64(n))
	return n, err
}

// convert copies an object of another tool's store into dst as an etcdbr object: its payload
// (a db and its SHA-256, or a delta converted to etcdbr's format version 2; see
// foreignSource) is encoded as any backup is, under the name of what it holds, and read back.
//
// A full snapshot is named by the revision read from the db as it streams, never by the
// other tool's name, which may give only a lower bound (catalog.Snapshot.RevisionAtLeast):
// when the two differ, the upload under the name's revision is abandoned and the snapshot is
// read and uploaded again under its own. etcd's SHA-256 after the db is checked on the way;
// a db without it (a db file copied from a data dir) gets it appended, as etcd's Maintenance
// API would have sent it.
func convert(ctx context.Context, src, dst *Store, snap catalog.Snapshot, p *progress.Progress) (CopyResult, error) {
	if len(dst.opts.Recipients) > 0 && len(dst.opts.Identities) == 0 {
		return CopyResult{}, errors.New("encrypting the copies needs an identity that decrypts them, to verify them")
	}
	want := snap
	for range 2 {
		copied, rev, err := convertOnce(ctx, src, dst, snap, want, p)
		if err != nil {
			return CopyResult{}, err
		}
		if copied.Key != "" {
			if err := dst.verifyCopy(ctx, copied, nil, true); err != nil {
				return CopyResult{}, err
			}
			return CopyResult{Copy: copied, PayloadVerified: true, Converted: true}, nil
		}
		src.opts.Log.Info("the full snapshot holds another revision than its name says (its name gives a lower bound): "+
			"uploading it again under its own", "object", snap.Key, "name_revision", want.Revision, "revision", rev)
		want.Revision = rev
	}
	return CopyResult{}, fmt.Errorf("%w: %s holds another revision each time it is read", ErrCorrupt, snap.Key)
}

// convertOnce uploads the payload of snap from src into dst as an object named by want's
// fields. For a full snapshot whose db holds another revision than want.Revision it commits
// nothing and returns that revision.
func convertOnce(ctx context.Context, src, dst *Store, snap, want catalog.Snapshot, p *progress.Progress) (catalog.Snapshot, int64, error) {
	r, err := src.OpenReaderProgress(ctx, snap, p)
	if err != nil {
		return catalog.Snapshot{}, 0, err
	}
	defer r.Close()
	w, err := dst.Create(ctx, catalog.Snapshot{Kind: want.Kind, From: want.From, Revision: want.Revision, Time: want.Time})
	if err != nil {
		return catalog.Snapshot{}, 0, err
	}
	defer w.Abort()
	if want.Kind == catalog.KindDelta {
		if _, err := io.Copy(w, r); err != nil {
			return catalog.Snapshot{}, 0, err
		}
		copied, err := w.Commit()
		return copied, 0, err
	}
	scan := dbrev.NewScanner()
	db := &TailHolder{W: io.MultiWriter(w, scan), Keep: sha256.Size}
	if _, err := io.Copy(db, r); err != nil {
		return catalog.Snapshot{}, 0, err
	}
	if db.Written()%512 == sha256.Size {
		if tail := db.Tail(); !bytes.Equal(r.HeadSum(), tail) {
			return catalog.Snapshot{}, 0, fmt.Errorf("%w: %s: the db hashes to %x, the sha256 after it says %x", ErrCorrupt, snap.Key, r.HeadSum(), tail)
		}
	} else if _, err := db.W.Write(db.Tail()); err != nil { // whole pages: no sha256 held back
		return catalog.Snapshot{}, 0, err
	}
	rev, err := scan.Revision()
	if err != nil {
		return catalog.Snapshot{}, 0, fmt.Errorf("%w: %s: %w", ErrCorrupt, snap.Key, err)
	}
	if rev != want.Revision {
		return catalog.Snapshot{}, rev, nil
	}
	if db.Written()%512 == sha256.Size {
		_, err = w.Write(db.Tail())
	} else {
		_, err = w.Write(w.Sum()) // etcd's SHA-256 of the db, as the Maintenance API appends it
	}
	if err != nil {
		return catalog.Snapshot{}, 0, err
	}
	copied, err := w.Commit()
	return copied, 0, err
}
