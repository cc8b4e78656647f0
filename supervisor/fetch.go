package supervisor

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/etcdbr/etcdbr/internal/progress"
	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// fetch streams the verified payload of a full snapshot into a new file at path, without the
// sha256 etcd appends to the db: the sha256 is checked (unless skipHash) against the hash the
// store's reader computed of the db on its way (its own checksum covers the db and the
// sha256 after it: one pass for both) and not written. The file is a staging copy: it is not
// synced.
func fetch(ctx context.Context, store *snapstore.Store, snap catalog.Snapshot, path string, skipHash bool, p *progress.Progress) error {
	r, err := store.OpenReaderProgress(ctx, snap, p) // p counts the stored bytes read
	if err != nil {
		return fmt.Errorf("fetch %s: %w", snap.Key, err)
	}
	defer r.Close()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("fetch %s: create %q: %w", snap.Key, path, err)
	}
	r.HashAside() // decompressing, hashing and writing the db each on a core
	db := &snapstore.TailHolder{W: f, Keep: sha256.Size}
	err = copyAhead(db, r) // the store vouches for the payload at its end
	if err == nil {
		err = finishDB(f, db, snap, r.HeadSum(), skipHash)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("fetch %s into %q: %w", snap.Key, path, err)
	}
	return nil
}

// Reading ahead: copyAhead reads into fetchBuffers buffers of fetchBufferSize bytes.
const (
	fetchBuffers    = 4
	fetchBufferSize = 1 << 20
)

// copyAhead copies src to dst to src's io.EOF, reading on a goroutine of its own while dst
// writes: reading a payload (decompressing, checking its checksum) and writing the db
// (hashing it, writing the file) each take about half of a fetch, and run side by side on
// two cores. At most fetchBuffers buffers are in flight. It returns once the reading
// goroutine ended, so src may be closed then.
func copyAhead(dst io.Writer, src io.Reader) error {
	type chunk struct {
		b   []byte
		err error
	}
	free := make(chan []byte, fetchBuffers)
	for range fetchBuffers {
		free <- make([]byte, fetchBufferSize)
	}
	full := make(chan chunk, fetchBuffers) // never blocks: there are only fetchBuffers buffers
	quit := make(chan struct{})
	go func() {
		defer close(full)
		for {
			var buf []byte
			select {
			case buf = <-free:
			case <-quit:
				return
			}
			n, err := io.ReadFull(src, buf)
			if errors.Is(err, io.ErrUnexpectedEOF) {
				err = io.EOF // the last, partial buffer
			}
			full <- chunk{buf[:n], err}
			if err != nil {
				return
			}
		}
	}()
	for c := range full {
		if len(c.b) > 0 {
			if _, err := dst.Write(c.b); err != nil {
				close(quit)
				for range full { // until the reading goroutine ended
				}
				return err
			}
		}
		switch {
		case errors.Is(c.err, io.EOF):
			return nil
		case c.err != nil:
			return c.err
		}
		free <- c.b[:cap(c.b)]
	}
	return nil // not reached: the reader ends with an error or io.EOF
}

// finish checks the held-back bytes: the db's sha256 when the payload has one (a bbolt db
// is whole pages, so the hash is what sticks out), which must be dbSum, the hash of what was
// written; else they are the end of the db, written to w.
func finishDB(w io.Writer, db *snapstore.TailHolder, snap catalog.Snapshot, dbSum []byte, skipHash bool) error {
	if db.Written()%512 == sha256.Size {
		if tail := db.Tail(); !skipHash && !bytes.Equal(dbSum, tail) {
			return fmt.Errorf("%w: %s: the db hashes to %x, the sha256 after it says %x", snapstore.ErrCorrupt, snap.Key, dbSum, tail)
		}
		return nil
	}
	if !skipHash {
		return fmt.Errorf("%s holds a db without the sha256 etcd appends to snapshots (%d bytes, whole pages); "+
			"restore with --skip-hash-check if it was made from a data dir's db", snap.Key, db.Written())
	}
	_, err := w.Write(db.Tail())
	return err
}
