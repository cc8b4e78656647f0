package backup

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/etcdbr/etcdbr/internal/dbrev"
	"github.com/etcdbr/etcdbr/snapstore"
)

// The tail writer passes on everything but the last bytes, however the stream is cut into
// writes, and hashes exactly what it passed on.
func TestTailWriter(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, size := range []int{0, 1, 31, 32, 33, 64, 1000, 100_000} {
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(rng.IntN(256))
		}
		for _, maxWrite := range []int{1, 7, 32, 33, 4096, size + 1} {
			var out bytes.Buffer
			tw := &tailWriter{w: &out, h: sha256.New(), keep: sha256.Size}
			for rest := data; len(rest) > 0; {
				n := min(len(rest), 1+rng.IntN(maxWrite))
				w, err := tw.Write(rest[:n])
				require.NoError(t, err)
				require.Equal(t, n, w)
				rest = rest[n:]
			}
			cut := max(0, size-sha256.Size)
			require.True(t, bytes.Equal(data[:cut], out.Bytes()), "size %d, writes up to %d: %d bytes out", size, maxWrite, out.Len())
			require.True(t, bytes.Equal(data[cut:], tw.tail), "size %d, writes up to %d: tail %x", size, maxWrite, tw.tail)
			sum := sha256.Sum256(data[:cut])
			require.Equal(t, sum[:], tw.h.Sum(nil), "size %d, writes up to %d", size, maxWrite)
		}
	}
}

// clientSource is FullFromClient's source, with guess instead of its revision read.
func clientSource(cli *clientv3.Client, guess func(context.Context) (int64, error)) streamSource {
	return streamSource{guess: guess, open: func(ctx context.Context) (io.ReadCloser, error) { return cli.Snapshot(ctx) }}
}

// A member that is not written to is snapshotted in one pass: the stream is uploaded while it
// is received, with no spool file (the spool dir does not even exist), under the revision
// inside the db.
func TestFullFromClientStreams(t *testing.T) {
	e := startEtcd(t)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{e.Clients[0].Addr().String()}, Logger: zap.NewNop()})
	require.NoError(t, err)
	defer cli.Close()
	ctx := context.Background()
	for i := range 2000 {
		_, err := cli.Put(ctx, fmt.Sprintf("/k/%04d", i), strings.Repeat("v", i%700))
		require.NoError(t, err)
	}
	_, err = cli.Delete(ctx, "/k/1", clientv3.WithPrefix())
	require.NoError(t, err)
	store := memStore(t)
	snap, err := FullFromClient(ctx, cli, store, filepath.Join(t.TempDir(), "does-not-exist"))
	require.NoError(t, err)
	now, err := currentRevision(ctx, cli)
	require.NoError(t, err)
	require.Equal(t, now, snap.Revision)
	require.Equal(t, snap.Revision, checkPayload(t, readPayload(t, store, snap)))
}

// When the revision read before the stream is not the one inside the snapshot (a write came
// in between, or the read failed, or it was wrong), the upload under the wrong name never
// becomes visible: the store ends with one object, named with the revision inside it, and no
// spool file is left.
func TestFullFromClientWrongGuess(t *testing.T) {
	e := startEtcd(t)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{e.Clients[0].Addr().String()}, Logger: zap.NewNop()})
	require.NoError(t, err)
	defer cli.Close()
	ctx := context.Background()
	for i := range 500 {
		_, err := cli.Put(ctx, fmt.Sprintf("/k/%04d", i), "v")
		require.NoError(t, err)
	}
	for name, guess := range map[string]func(context.Context) (int64, error){
		// Writes between the reads and the snapshot: the stream is spooled.
		"writes": func(ctx context.Context) (int64, error) {
			rev, err := currentRevision(ctx, cli)
			if err != nil {
				return 0, err
			}
			_, err = cli.Put(ctx, "/between", "v")
			return rev, err
		},
		// A revision that is not the one inside (another member, say): the upload under it is
		// abandoned once the stream ended, and the snapshot taken again.
		"wrong": func(ctx context.Context) (int64, error) {
			rev, err := currentRevision(ctx, cli)
			return rev + 1, err
		},
		"failed": func(context.Context) (int64, error) {
			return 0, errors.New("permission denied")
		},
	} {
		t.Run(name, func(t *testing.T) {
			store := memStore(t)
			spool := t.TempDir()
			snap, err := fullFromStream(ctx, store, spool, clientSource(cli, guess))
			require.NoError(t, err)
			now, err := currentRevision(ctx, cli)
			require.NoError(t, err)
			if name == "writes" {
				now-- // the second read wrote once more after the snapshot
			}
			require.Equal(t, now, snap.Revision)
			require.Equal(t, snap.Revision, checkPayload(t, readPayload(t, store, snap)))
			listed, err := store.List(ctx, snapstore.KindFull)
			require.NoError(t, err)
			require.Len(t, listed, 1, "objects in the store: %v", listed)
			require.Equal(t, snap.Key, listed[0].Key)
			left, err := os.ReadDir(spool)
			require.NoError(t, err)
			require.Empty(t, left, "spool files left behind")
		})
	}
}

// A snapshot abandoned while it streams, or whose stream is cut short or damaged, leaves
// nothing in the store and no spool file.
func TestFullFromClientFails(t *testing.T) {
	e := startEtcd(t)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{e.Clients[0].Addr().String()}, Logger: zap.NewNop()})
	require.NoError(t, err)
	defer cli.Close()
	ctx := context.Background()
	big := string(bytes.Repeat([]byte("x"), 64<<10))
	for i := range 200 {
		_, err := cli.Put(ctx, fmt.Sprintf("/big/%d", i), big)
		require.NoError(t, err)
	}
	for _, c := range []struct {
		name string
		// wrap changes the stream; it may cancel the snapshot's context.
		wrap func(r io.Reader, cancel func()) io.Reader
		want string
	}{
		{"cancelled", func(r io.Reader, cancel func()) io.Reader {
			return io.TeeReader(r, &cancelAfter{n: 1 << 20, cancel: cancel})
		}, "context canceled"},
		{"cut short", func(r io.Reader, _ func()) io.Reader { return io.LimitReader(r, 3<<20) }, "does not end with the SHA-256"},
		{"damaged", func(r io.Reader, _ func()) io.Reader { return &flipByte{r: r, at: 2 << 20} }, "does not end with the SHA-256"},
	} {
		for _, path := range []string{"streamed", "spooled"} {
			t.Run(c.name+", "+path, func(t *testing.T) {
				store := memStore(t)
				spool := t.TempDir()
				sctx, cancel := context.WithCancel(ctx)
				defer cancel()
				src := streamSource{
					guess: func(ctx context.Context) (int64, error) {
						if path == "spooled" {
							return 0, errors.New("no revision")
						}
						return currentRevision(ctx, cli)
					},
					open: func(ctx context.Context) (io.ReadCloser, error) {
						rc, err := cli.Snapshot(ctx)
						if err != nil {
							return nil, err
						}
						return readCloser{c.wrap(rc, cancel), rc}, nil
					},
				}
				_, err := fullFromStream(sctx, store, spool, src)
				require.ErrorContains(t, err, c.want)
				listed, err := store.List(ctx, snapstore.KindFull)
				require.NoError(t, err)
				require.Empty(t, listed)
				left, err := os.ReadDir(spool)
				require.NoError(t, err)
				require.Empty(t, left, "spool files left behind")
			})
		}
	}
}

type readCloser struct {
	io.Reader
	io.Closer
}

// flipByte flips the byte at offset at of what it reads.
type flipByte struct {
	r  io.Reader
	at int64
	n  int64
}

func (f *flipByte) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if i := f.at - f.n; i >= 0 && i < int64(n) {
		p[i] ^= 0xff
	}
	f.n += int64(n)
	return n, err
}

// dbShape is a bbolt db made for TestRevisionScanner.
type dbShape struct {
	name     string
	pageSize int
	keys     int   // revision keys in the "key" bucket
	valueMax int   // values of up to this many bytes (large ones take overflow pages)
	tombs    bool  // every third key is a tombstone (18 bytes, ends with 't')
	deleted  int   // keys deleted again in later transactions (free pages with stale contents)
	compact  int64 // finishedCompactRev (0: none)
	schedule int64 // scheduledCompactRev (0: none)
	metaKeys int   // more keys in the meta bucket (many: not inline)
	noKey    bool  // no "key" bucket
	shortKey bool  // the newest key is shorter than a revision
	decoys   bool  // a bucket with keys named "key", "meta", "finishedCompactRev"
}

// makeDB writes the db of shape into a file and returns its path.
func makeDB(t *testing.T, shape dbShape, rng *rand.Rand) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{PageSize: shape.pageSize, NoFreelistSync: true})
	require.NoError(t, err)
	defer db.Close()
	rev := func(main int64, tomb bool) []byte {
		k := make([]byte, 17, 18)
		binary.BigEndian.PutUint64(k, uint64(main))
		k[8] = '_'
		if tomb {
			k = append(k, 't')
		}
		return k
	}
	value := func() []byte {
		v := make([]byte, rng.IntN(shape.valueMax+1))
		for i := range v {
			v[i] = byte('a' + rng.IntN(26))
		}
		return v
	}
	// Several transactions, so that pages are rewritten and freed.
	const batch = 500
	for from := 0; from == 0 || from < shape.keys; from += batch {
		require.NoError(t, db.Update(func(tx *bolt.Tx) error {
			if !shape.noKey {
				kb, err := tx.CreateBucketIfNotExists([]byte("key"))
				if err != nil {
					return err
				}
				for i := from; i < min(from+batch, shape.keys); i++ {
					if err := kb.Put(rev(int64(2+i), shape.tombs && i%3 == 2), value()); err != nil {
						return err
					}
				}
			}
			mb, err := tx.CreateBucketIfNotExists([]byte("meta"))
			if err != nil {
				return err
			}
			if err := mb.Put([]byte("consistent_index"), []byte{0, 0, 0, 0, 0, 0, 0, byte(from)}); err != nil {
				return err
			}
			for i := range shape.metaKeys {
				if err := mb.Put(fmt.Appendf(nil, "extra-%05d", i), value()); err != nil {
					return err
				}
			}
			lease, err := tx.CreateBucketIfNotExists([]byte("lease"))
			if err != nil {
				return err
			}
			return lease.Put(fmt.Appendf(nil, "%08d", from), value())
		}))
	}
	require.NoError(t, db.Update(func(tx *bolt.Tx) error {
		if kb := tx.Bucket([]byte("key")); kb != nil {
			c := kb.Cursor()
			n := 0
			for k, _ := c.First(); k != nil && n < shape.deleted; k, _ = c.Next() {
				if err := c.Delete(); err != nil {
					return err
				}
				n++
			}
			if shape.shortKey {
				if err := kb.Put([]byte{0xff, 0xff}, []byte("short")); err != nil {
					return err
				}
			}
		}
		mb := tx.Bucket([]byte("meta"))
		for name, r := range map[string]int64{"finishedCompactRev": shape.compact, "scheduledCompactRev": shape.schedule} {
			if r != 0 {
				if err := mb.Put([]byte(name), rev(r, false)); err != nil {
					return err
				}
			}
		}
		if shape.decoys {
			d, err := tx.CreateBucketIfNotExists([]byte("authUsers"))
			if err != nil {
				return err
			}
			for _, name := range []string{"key", "meta", "finishedCompactRev", "scheduledCompactRev"} {
				if err := d.Put([]byte(name), rev(1<<40, false)); err != nil {
					return err
				}
			}
			if _, err := d.CreateBucketIfNotExists([]byte("nested")); err != nil {
				return err
			}
		}
		return nil
	}))
	return path
}

// The scanner reads, from the stream bbolt's WriteTo makes, the revision dbrev reads through
// bbolt, for dbs of every shape (inline and multi-page buckets, overflow pages, stale free
// pages, page sizes, compaction revisions, decoy names in other buckets), however the stream
// is cut into writes; and it refuses what dbrev refuses.
func TestRevisionScanner(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, shape := range []dbShape{
		{name: "empty key bucket", pageSize: 4096},
		{name: "one key, inline buckets", pageSize: 4096, keys: 1, valueMax: 20},
		{name: "small values", pageSize: 4096, keys: 20_000, valueMax: 200, tombs: true},
		{name: "1 KiB values, deletes", pageSize: 4096, keys: 5000, valueMax: 1024, deleted: 3000},
		{name: "overflow values", pageSize: 4096, keys: 300, valueMax: 40_000, deleted: 100},
		{name: "everything deleted", pageSize: 4096, keys: 2000, valueMax: 500, deleted: 2000, compact: 1500},
		{name: "compacted past the newest key", pageSize: 4096, keys: 1000, valueMax: 100, compact: 5000},
		{name: "scheduled compaction", pageSize: 4096, keys: 1000, valueMax: 100, compact: 700, schedule: 9000},
		{name: "meta bucket not inline", pageSize: 4096, keys: 1000, valueMax: 100, metaKeys: 400, compact: 2000},
		{name: "16 KiB pages", pageSize: 16384, keys: 8000, valueMax: 2000, deleted: 500},
		{name: "decoys", pageSize: 4096, keys: 500, valueMax: 100, decoys: true},
		{name: "no key bucket", pageSize: 4096, noKey: true},
		{name: "short newest key", pageSize: 4096, keys: 10, valueMax: 10, shortKey: true},
	} {
		t.Run(shape.name, func(t *testing.T) {
			path := makeDB(t, shape, rng)
			db, err := bolt.Open(path, 0o400, &bolt.Options{ReadOnly: true})
			require.NoError(t, err)
			defer db.Close()
			require.NoError(t, db.View(func(tx *bolt.Tx) error {
				want, wantErr := dbrev.Revision(tx)
				var stream bytes.Buffer
				if _, err := tx.WriteTo(&stream); err != nil {
					return err
				}
				stream.Write(bytes.Repeat([]byte{0xee}, sha256.Size)) // what etcd appends
				for _, maxWrite := range []int{1 << 20, 4096, 1000, 33} {
					s := newRevisionScanner()
					for rest := stream.Bytes(); len(rest) > 0; {
						n := min(len(rest), 1+rng.IntN(maxWrite))
						w, err := s.Write(rest[:n])
						require.NoError(t, err)
						require.Equal(t, n, w)
						rest = rest[n:]
					}
					got, err := s.Revision()
					if wantErr != nil {
						require.Error(t, err, "dbrev: %v", wantErr)
						continue
					}
					require.NoError(t, err, "writes of up to %d bytes", maxWrite)
					require.Equal(t, want, got, "writes of up to %d bytes", maxWrite)
				}
				if wantErr == nil && shape.keys > 0 {
					require.Greater(t, want, int64(1), "the shape has a revision")
				}
				return nil
			}))
		})
	}
}

// A stream cut short, or damaged anywhere, never makes the scanner fail a write or panic, and
// a stream cut short is never given a revision.
func TestRevisionScannerDamaged(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	path := makeDB(t, dbShape{pageSize: 4096, keys: 3000, valueMax: 3000, deleted: 500, compact: 1000}, rng)
	db, err := bolt.Open(path, 0o400, &bolt.Options{ReadOnly: true})
	require.NoError(t, err)
	defer db.Close()
	var stream bytes.Buffer
	require.NoError(t, db.View(func(tx *bolt.Tx) error {
		_, err := tx.WriteTo(&stream)
		return err
	}))
	data := stream.Bytes()
	for i := range 300 {
		damaged := bytes.Clone(data)
		for range 1 + rng.IntN(20) {
			damaged[rng.IntN(len(damaged))] ^= byte(1 + rng.IntN(255))
		}
		if i%10 == 0 { // a damaged page header or element
			at := 4096*(2+rng.IntN(len(data)/4096-2)) + rng.IntN(64)
			binary.LittleEndian.PutUint32(damaged[at:], rng.Uint32())
		}
		s := newRevisionScanner()
		_, err := s.Write(damaged)
		require.NoError(t, err)
		_, _ = s.Revision() // any answer, no panic: etcd's checksum decides whether it is used
	}
	for _, cut := range []int{0, 10, 4096, len(data) / 2, len(data) - 1} {
		s := newRevisionScanner()
		_, err := s.Write(data[:cut])
		require.NoError(t, err)
		_, err = s.Revision()
		require.Error(t, err, "a stream cut after %d of %d bytes", cut, len(data))
	}
}
