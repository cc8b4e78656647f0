package snapstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"

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
	snap, _ = catalog.ParseName(key)
	var res CopyResult
	if len(dst.opts.Recipients) > 0 {
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
