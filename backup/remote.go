package backup

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdbr/etcdbr/internal/dbrev"
	"github.com/etcdbr/etcdbr/snapstore"
)

// FullFromClient takes a full snapshot of an external etcd member through its Maintenance API
// and writes it to the store.
//
// The stream is spooled to a temporary file in spoolDir (it needs as much free space as the
// db is large), verified against the SHA-256 etcd appends, and opened read-only to read the
// exact revision inside it, which names the object; then it is streamed to the store and the
// spool file removed. An external member gives no other way to learn that revision exactly.
func FullFromClient(ctx context.Context, cli *clientv3.Client, store *snapstore.Store, spoolDir string) (snapstore.Snapshot, error) {
	at := time.Now()
	f, err := os.CreateTemp(spoolDir, "etcdbr-snapshot-*.db")
	if err != nil {
		return snapstore.Snapshot{}, fmt.Errorf("full snapshot: create spool file in %q: %w (set --spool-dir to a writable directory with room for the db)", spoolDir, err)
	}
	defer func() {
		f.Close()
		os.Remove(f.Name())
	}()

	rc, err := cli.Snapshot(ctx)
	if err != nil {
		return snapstore.Snapshot{}, classify(ReasonEtcd, fmt.Errorf("full snapshot: open snapshot stream: %w", err))
	}
	defer rc.Close()
	tw := &tailWriter{w: f, h: sha256.New(), keep: sha256.Size}
	if _, err := io.Copy(tw, rc); err != nil {
		return snapstore.Snapshot{}, classify(ReasonEtcd, fmt.Errorf("full snapshot: receive snapshot: %w", err))
	}
	if len(tw.tail) != sha256.Size || !bytes.Equal(tw.h.Sum(nil), tw.tail) {
		return snapstore.Snapshot{}, classify(ReasonEtcd, errors.New("full snapshot: the snapshot stream does not end with the SHA-256 of its db: it was cut short or damaged in transit"))
	}

	rev, err := spooledRevision(f.Name())
	if err != nil {
		return snapstore.Snapshot{}, fmt.Errorf("full snapshot: %w", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return snapstore.Snapshot{}, fmt.Errorf("full snapshot: rewind spool file: %w", err)
	}
	return upload(ctx, store, rev, at, func(w io.Writer) error {
		_, err := io.Copy(w, f)
		return err
	})
}

// spooledRevision reads the revision inside the bbolt db at path.
func spooledRevision(path string) (int64, error) {
	return dbrev.FileRevision(path, time.Second)
}

// tailWriter writes everything but the last keep bytes to w and hashes what it writes; the
// last keep bytes end up in tail.
type tailWriter struct {
	w    io.Writer
	h    hash.Hash
	keep int
	tail []byte
	err  error
}

func (t *tailWriter) Write(p []byte) (int, error) {
	if t.err != nil {
		return 0, t.err
	}
	n := len(p)
	buf := append(t.tail, p...)
	if over := len(buf) - t.keep; over > 0 {
		if _, err := t.w.Write(buf[:over]); err != nil {
			t.err = err
			return 0, err
		}
		t.h.Write(buf[:over])
		t.tail = append(t.tail[:0:0], buf[over:]...)
	} else {
		t.tail = buf
	}
	return n, nil
}
