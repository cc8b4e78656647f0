package backup

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdbr/etcdbr/internal/dbrev"
	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// FullFromClient takes a full snapshot of an external etcd member through its Maintenance API
// and writes it to the store.
//
// The object's name carries the exact revision inside the snapshot, which the stream tells
// only once it ended: it is the newest key of the db's key bucket (or a compaction revision in
// its meta bucket), whose pages may be anywhere in the db. So the member's current revision is
// read just before the stream is opened, and again once its first bytes arrived. When the two
// are equal, no write came in between, and the snapshot, taken in between, is at that revision:
// the stream is compressed and uploaded under it while it is received, and its pages are
// scanned as they go by for the revision inside the db (dbrev.Scanner). The upload is
// committed only when the stream's SHA-256 (which etcd appends) matches and the scanned
// revision is the one in the name; otherwise it is abandoned, never visible, and the snapshot
// is taken again, spooled.
//
// When the two reads differ (writes are coming in), the stream is spooled to a temporary file
// in spoolDir (it needs as much free space as the db is large) while it is hashed, the
// revision is read from the spooled db with bbolt, and the spool is uploaded under it and
// removed. Either way an object appears only complete, verified, and named with the revision
// read from the snapshot itself.
func FullFromClient(ctx context.Context, cli *clientv3.Client, store *snapstore.Store, spoolDir string) (catalog.Snapshot, error) {
	return fullFromStream(ctx, store, spoolDir, streamSource{
		guess: func(ctx context.Context) (int64, error) { return currentRevision(ctx, cli) },
		open:  func(ctx context.Context) (io.ReadCloser, error) { return cli.Snapshot(ctx) },
	})
}

// streamSource is where fullFromStream gets a snapshot: guess reads the member's current
// revision, open opens its snapshot stream (the db followed by its SHA-256).
type streamSource struct {
	guess func(context.Context) (int64, error)
	open  func(context.Context) (io.ReadCloser, error)
}

// currentRevision is the revision of the member cli reaches, without a round of raft.
func currentRevision(ctx context.Context, cli *clientv3.Client) (int64, error) {
	resp, err := cli.Get(ctx, "\x00", clientv3.WithSerializable(), clientv3.WithCountOnly())
	if err != nil {
		return 0, err
	}
	return resp.Header.Revision, nil
}

// fullFromStream is FullFromClient reading from src.
func fullFromStream(ctx context.Context, store *snapstore.Store, spoolDir string, src streamSource) (catalog.Snapshot, error) {
	snap, retake, err := fullOnce(ctx, store, spoolDir, src, false)
	if retake {
		snap, _, err = fullOnce(ctx, store, spoolDir, src, true)
	}
	return snap, err
}

// fullOnce takes one snapshot from src: streamed when the revision is known before it ends
// (unless spool), else spooled. retake reports a streamed snapshot abandoned because the
// revision inside was not the one expected.
func fullOnce(ctx context.Context, store *snapstore.Store, spoolDir string, src streamSource, spool bool) (snap catalog.Snapshot, retake bool, err error) {
	at := time.Now()
	var before int64
	var beforeErr error
	if !spool {
		before, beforeErr = src.guess(ctx)
	}
	rc, err := src.open(ctx)
	if err != nil {
		return catalog.Snapshot{}, false, classify(ReasonEtcd, fmt.Errorf("full snapshot: open snapshot stream: %w", err))
	}
	defer rc.Close()
	if spool || beforeErr != nil || before < 1 {
		snap, err := spooled(ctx, store, spoolDir, at, rc)
		return snap, false, err
	}
	// etcd takes the snapshot before it sends a byte.
	first := make([]byte, 4096)
	n, err := io.ReadFull(rc, first)
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		return catalog.Snapshot{}, false, classify(ReasonEtcd, fmt.Errorf("full snapshot: receive snapshot: %w", err))
	}
	stream := io.MultiReader(bytes.NewReader(first[:n]), rc)
	if after, err := src.guess(ctx); err != nil || after != before {
		snap, err := spooled(ctx, store, spoolDir, at, stream)
		return snap, false, err
	}
	return streamed(ctx, store, at, before, stream)
}

// streamed uploads the snapshot stream r while it is received, under revision rev, and
// commits it if the stream's checksum matches and the db inside is at rev. retake reports a
// db at another revision (or one whose revision the scan could not read): nothing was
// committed, and the snapshot must be taken again, spooled.
func streamed(ctx context.Context, store *snapstore.Store, at time.Time, rev int64, r io.Reader) (snap catalog.Snapshot, retake bool, err error) {
	w, err := store.Create(ctx, catalog.Snapshot{Kind: catalog.KindFull, Revision: rev, Time: at})
	if err != nil {
		return catalog.Snapshot{}, false, classify(ReasonStore, fmt.Errorf("full snapshot at revision %d: %w", rev, err))
	}
	defer w.Abort() //nolint:errcheck // a no-op once committed
	scan := dbrev.NewScanner()
	// The object's payload is what etcd sends: the db followed by its SHA-256. The Writer
	// hashes what it compresses, so its running hash after the db checks etcd's: one pass.
	out := &ctxWriter{ctx: ctx, w: storeWriter{w}}
	db := &snapstore.TailHolder{W: out, Keep: sha256.Size}
	if err := broadcast(ctx, r, scan, db); err != nil {
		return catalog.Snapshot{}, false, fmt.Errorf("full snapshot at revision %d: %w", rev, err)
	}
	if err := checkTrailer(db.Tail(), w.Sum()); err != nil {
		return catalog.Snapshot{}, false, fmt.Errorf("full snapshot at revision %d: %w", rev, err)
	}
	if _, err := out.Write(db.Tail()); err != nil {
		return catalog.Snapshot{}, false, fmt.Errorf("full snapshot at revision %d: write checksum: %w", rev, err)
	}
	if got, err := scan.Revision(); err != nil || got != rev {
		return catalog.Snapshot{}, true, nil
	}
	snap, err = w.Commit()
	if err != nil {
		return catalog.Snapshot{}, false, classify(ReasonStore, fmt.Errorf("full snapshot at revision %d: commit: %w", rev, err))
	}
	return snap, false, nil
}

// spooled receives the snapshot stream r into a spool file in spoolDir while it is hashed,
// reads the revision from the spooled db, then uploads the spool under it.
func spooled(ctx context.Context, store *snapstore.Store, spoolDir string, at time.Time, r io.Reader) (catalog.Snapshot, error) {
	f, err := os.CreateTemp(spoolDir, "etcdbr-snapshot-*.db")
	if err != nil {
		return catalog.Snapshot{}, fmt.Errorf("full snapshot: create spool file in %q: %w (set --spool-dir to a writable directory with room for the db)", spoolDir, err)
	}
	defer func() {
		f.Close()
		os.Remove(f.Name())
	}()
	spool := spoolWriter{f: f}
	h := sha256.New()
	hash := &snapstore.TailHolder{W: h, Keep: sha256.Size}
	if err := broadcast(ctx, r, hash, &spool); err != nil {
		return catalog.Snapshot{}, fmt.Errorf("full snapshot: %w", err)
	}
	if err := checkTrailer(hash.Tail(), h.Sum(nil)); err != nil {
		return catalog.Snapshot{}, fmt.Errorf("full snapshot: %w", err)
	}
	db := spool.n - sha256.Size
	if err := f.Truncate(db); err != nil {
		return catalog.Snapshot{}, fmt.Errorf("full snapshot: cut the checksum off the spool file: %w", err)
	}
	rev, err := spooledRevision(f.Name())
	if err != nil {
		return catalog.Snapshot{}, fmt.Errorf("full snapshot: %w", err)
	}
	return upload(ctx, store, rev, at, nil, func(w io.Writer) error {
		_, err := io.Copy(w, spoolReader{io.NewSectionReader(f, 0, db)})
		return err
	})
}

// broadcast reads r to its end and writes all of it to each of ws, each writer on its own
// goroutine: hashing, spooling and compressing run in parallel with each other and with the
// next read. It returns the first error; a read error is classified ReasonEtcd.
func broadcast(ctx context.Context, r io.Reader, ws ...io.Writer) error {
	const bufSize, buffers = 1 << 20, 4
	type chunk struct {
		buf  []byte
		left atomic.Int32 // writers that have yet to write it
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	free := make(chan *chunk, buffers)
	for range buffers {
		free <- &chunk{buf: make([]byte, bufSize)}
	}
	ins := make([]chan *chunk, len(ws))
	var wg sync.WaitGroup
	for i, w := range ws {
		ins[i] = make(chan *chunk, buffers)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range ins[i] {
				if ctx.Err() == nil {
					if _, err := w.Write(c.buf); err != nil {
						cancel(err)
					}
				}
				if c.left.Add(-1) == 0 {
					free <- c
				}
			}
		}()
	}
	readErr := func() error {
		defer func() {
			for _, in := range ins {
				close(in)
			}
		}()
		for {
			var c *chunk
			select {
			case c = <-free:
			case <-ctx.Done():
				return nil
			}
			if ctx.Err() != nil {
				return nil
			}
			n, err := io.ReadFull(r, c.buf[:cap(c.buf)])
			if n > 0 {
				c.buf = c.buf[:n]
				c.left.Store(int32(len(ws)))
				for _, in := range ins {
					in <- c
				}
			} else {
				free <- c
			}
			switch {
			case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
				return nil
			case err != nil:
				return classify(ReasonEtcd, fmt.Errorf("receive snapshot: %w", err))
			}
		}
	}()
	wg.Wait()
	if readErr != nil {
		return readErr
	}
	return context.Cause(ctx)
}

// spoolWriter and spoolReader say that their errors are the spool file's; spoolWriter counts
// what it wrote.
type spoolWriter struct {
	f *os.File
	n int64
}

func (s *spoolWriter) Write(p []byte) (int, error) {
	n, err := s.f.Write(p)
	s.n += int64(n)
	if err != nil {
		err = fmt.Errorf("write spool file (set --spool-dir to a directory with room for the db): %w", err)
	}
	return n, err
}

type spoolReader struct{ r io.Reader }

func (s spoolReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		err = fmt.Errorf("read spool file: %w", err)
	}
	return n, err
}

// spooledRevision reads the revision inside the bbolt db at path.
func spooledRevision(path string) (int64, error) {
	return dbrev.FileRevision(path, time.Second)
}

// checkTrailer reports whether a snapshot stream ended with tail (the bytes held back after
// its db) equal to sum, the SHA-256 of the db, classified ReasonEtcd.
func checkTrailer(tail, sum []byte) error {
	if len(tail) != sha256.Size || !bytes.Equal(sum, tail) {
		return classify(ReasonEtcd, errors.New("the snapshot stream does not end with the SHA-256 of its db: it was cut short or damaged in transit"))
	}
	return nil
}
