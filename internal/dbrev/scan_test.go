package dbrev

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"
)

// dbShape is a bbolt db made for TestScanner.
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
func TestScanner(t *testing.T) {
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
				want, wantErr := Revision(tx)
				var stream bytes.Buffer
				if _, err := tx.WriteTo(&stream); err != nil {
					return err
				}
				stream.Write(bytes.Repeat([]byte{0xee}, sha256.Size)) // what etcd appends
				for _, maxWrite := range []int{1 << 20, 4096, 1000, 33} {
					s := NewScanner()
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
func TestScannerDamaged(t *testing.T) {
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
		s := NewScanner()
		_, err := s.Write(damaged)
		require.NoError(t, err)
		_, _ = s.Revision() // any answer, no panic: etcd's checksum decides whether it is used
	}
	for _, cut := range []int{0, 10, 4096, len(data) / 2, len(data) - 1} {
		s := NewScanner()
		_, err := s.Write(data[:cut])
		require.NoError(t, err)
		_, err = s.Revision()
		require.Error(t, err, "a stream cut after %d of %d bytes", cut, len(data))
	}
}
