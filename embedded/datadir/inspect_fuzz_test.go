package datadir

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/storage/schema"
	"go.etcd.io/etcd/server/v3/storage/wal"
	"go.etcd.io/etcd/server/v3/storage/wal/walpb"
	"go.uber.org/zap"

	"github.com/etcdbr/etcdbr/embedded"
	"github.com/etcdbr/etcdbr/internal/boltfmt"
	"github.com/etcdbr/etcdbr/internal/dbrev"
	"github.com/etcdbr/etcdbr/internal/embeddedtest"
)

// updateFuzzSeeds makes TestInspectFuzzSeeds write FuzzInspect's seeds from a real etcd.
var updateFuzzSeeds = flag.Bool("update-fuzz-seeds", false, "write testdata/fuzz/FuzzInspect's seeds from a real etcd")

// fuzzWALName is the name of the one WAL file of FuzzInspect's data dirs (etcd's first).
const fuzzWALName = "0000000000000000-0000000000000000.wal"

// fuzzSeedDir holds FuzzInspect's seeds; the real data dirs are the files named real-*.
var fuzzSeedDir = filepath.Join("testdata", "fuzz", "FuzzInspect")

// writeFuzzDataDir lays out a data dir with the WAL file walBytes and the db dbBytes (no db
// file when nil).
func writeFuzzDataDir(t testing.TB, walBytes, dbBytes []byte) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{"member/wal", "member/snap"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "member", "wal", fuzzWALName), walBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	if dbBytes != nil {
		if err := os.WriteFile(filepath.Join(dir, "member", "snap", "db"), dbBytes, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// protected runs fn on a goroutine of its own that turns panics and memory faults into an
// error, as Inspect does for the readers it calls.
func protected(fn func() error) (err error) {
	done := make(chan error, 1)
	go func() {
		debug.SetPanicOnFault(true)
		defer func() {
			if r := recover(); r != nil {
				done <- fmt.Errorf("panic: %v", r)
			}
		}()
		done <- fn()
	}()
	return <-done
}

// etcdReadsWAL reads the WAL of dir with etcd's own wal package, read-only, from the start
// (the data dirs here have no raft snapshot): what etcd recovers at start.
func etcdReadsWAL(dir string) error {
	return protected(func() error {
		w, err := wal.OpenForRead(zap.NewNop(), filepath.Join(dir, "member", "wal"), walpb.Snapshot{})
		if err != nil {
			return err
		}
		defer w.Close()
		_, _, _, err = w.ReadAll()
		return err
	})
}

// boltReadsAll opens the db read-only with bbolt and reads every key and value of every
// bucket, nested ones included; the root holds no plain value named like one of etcd's
// buckets.
func boltReadsAll(path string) error {
	return protected(func() error {
		db, err := bolt.Open(path, 0o400, &bolt.Options{ReadOnly: true})
		if err != nil {
			return err
		}
		defer db.Close()
		return db.View(func(tx *bolt.Tx) error {
			var walk func(b *bolt.Bucket) error
			walk = func(b *bolt.Bucket) error {
				return b.ForEach(func(k, v []byte) error {
					if v == nil {
						return walk(b.Bucket(k))
					}
					return nil
				})
			}
			// A value in the root bucket that is not a bucket (damage bbolt reads) has no bucket;
			// under the name of one of etcd's buckets, etcd exits at start.
			return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
				if b == nil {
					for _, eb := range schema.AllBuckets {
						if bytes.Equal(name, eb.Name()) {
							return fmt.Errorf("a value named like etcd's bucket %q", name)
						}
					}
					return nil
				}
				return walk(b)
			})
		})
	})
}

// FuzzInspect runs the full inspection on data dirs made of one WAL file and a db, seeded
// with real ones written by etcd (the db copied into 512-byte pages to keep the seeds
// small). No input panics or faults the process (bbolt's own checks run on goroutines that
// Inspect cannot protect), and "valid" is never said of damage: a dir judged valid has a WAL
// that etcd's own WAL reader reads to its end, and a db (when there is one) that bbolt opens
// and reads whole, at the revision the verdict says; the verdict is never "missing" for a
// member dir with a WAL. The cluster and member IDs are read too (ReadIDs), without a panic.
func FuzzInspect(f *testing.F) {
	f.Add([]byte{}, []byte{})
	f.Fuzz(func(t *testing.T, walBytes, dbBytes []byte) {
		var db []byte
		if len(dbBytes) > 0 {
			db = dbBytes
		}
		dir := writeFuzzDataDir(t, walBytes, db)
		_, _ = ReadIDs(dir, "")
		v := InspectWith(context.Background(), dir, "", InspectOptions{Depth: DepthFull})
		switch {
		case v.State == StateMissing:
			t.Fatalf("a member dir with a WAL judged missing: %s", v.Reason)
		case v.MaxRevision < v.Revision:
			t.Fatalf("MaxRevision %d below Revision %d", v.MaxRevision, v.Revision)
		case v.State != StateValid:
			return
		}
		if err := etcdReadsWAL(dir); err != nil {
			t.Fatalf("judged valid, but etcd's WAL reader fails: %v", err)
		}
		if db == nil {
			return
		}
		path := filepath.Join(dir, "member", "snap", "db")
		if err := boltReadsAll(path); err != nil {
			t.Fatalf("judged valid, but bbolt cannot read the db whole: %v", err)
		}
		rev, err := dbrev.FileRevision(path, 0)
		if err != nil || rev != v.Revision {
			t.Fatalf("judged valid at revision %d, but the db's revision is %d (%v)", v.Revision, rev, err)
		}
	})
}

// TestInspectFuzzSeeds checks that FuzzInspect's seeds from a real etcd are valid data dirs
// (so that the fuzzer starts from inputs that reach every check). With -update-fuzz-seeds it
// writes them first: etcd is started, written to and stopped, and its WAL (cut after its last
// record: the rest is preallocated zeros) and db (compacted into 512-byte pages) are saved.
func TestInspectFuzzSeeds(t *testing.T) {
	if *updateFuzzSeeds {
		writeInspectSeeds(t)
	}
	seeds, err := filepath.Glob(filepath.Join(fuzzSeedDir, "real-*"))
	if err != nil {
		t.Fatal(err)
	}
	if len(seeds) == 0 {
		t.Fatalf("no seeds in %s: run go test -run TestInspectFuzzSeeds -update-fuzz-seeds", fuzzSeedDir)
	}
	for _, path := range seeds {
		vals := readFuzzSeed(t, path)
		if len(vals) != 2 {
			t.Fatalf("%s holds %d values, want 2", path, len(vals))
		}
		dir := writeFuzzDataDir(t, vals[0], vals[1])
		v := InspectWith(context.Background(), dir, "", InspectOptions{Depth: DepthFull})
		if v.State != StateValid || v.Revision < 2 {
			t.Errorf("%s: %v at revision %d (%s), want a valid dir with writes", path, v.State, v.Revision, v.Reason)
		}
	}
}

// writeInspectSeeds writes the seeds of FuzzInspect from a real etcd.
func writeInspectSeeds(t *testing.T) {
	for name, load := range map[string]func(t *testing.T, c *clientv3.Client){
		"real-puts": func(t *testing.T, c *clientv3.Client) { embeddedtest.FillKeys(t, c, 3) },
		"real-lease-txn-delete": func(t *testing.T, c *clientv3.Client) {
			ctx := context.Background()
			l, err := c.Grant(ctx, 60)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Put(ctx, "a", "1", clientv3.WithLease(l.ID)); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Txn(ctx).If(clientv3.Compare(clientv3.Version("a"), "=", 1)).
				Then(clientv3.OpPut("b", "2")).Commit(); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Delete(ctx, "a"); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Compact(ctx, 3); err != nil {
				t.Fatal(err)
			}
		},
	} {
		cfg := embeddedtest.NewConfig(t)
		e := embeddedtest.MustStart(t, embedded.Start, cfg)
		load(t, e.Client())
		e.Close()

		walPath := filepath.Join(cfg.Dir, "member", "wal", fuzzWALName)
		recs := walRecords(t, walPath)
		walBytes, err := os.ReadFile(walPath)
		if err != nil {
			t.Fatal(err)
		}
		walBytes = walBytes[:recs[len(recs)-1].end]

		small := filepath.Join(t.TempDir(), "db")
		src, err := bolt.Open(filepath.Join(cfg.Dir, "member", "snap", "db"), 0o400, &bolt.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		dst, err := bolt.Open(small, 0o600, &bolt.Options{PageSize: 512, NoFreelistSync: true})
		if err != nil {
			t.Fatal(err)
		}
		if err := bolt.Compact(dst, src, 0); err != nil {
			t.Fatal(err)
		}
		src.Close()
		dst.Close()
		dbBytes, err := os.ReadFile(small)
		if err != nil {
			t.Fatal(err)
		}
		// bbolt grows its file ahead of the pages in use: keep the pages up to the high-water mark.
		meta := boltfmt.ParseMeta(dbBytes)
		dbBytes = dbBytes[:meta.PageCount*uint64(meta.PageSize)]
		writeFuzzSeed(t, filepath.Join(fuzzSeedDir, name), walBytes, dbBytes)
	}
}

// writeFuzzSeed writes a corpus file in Go's fuzzing format, with []byte values.
func writeFuzzSeed(t *testing.T, path string, vals ...[]byte) {
	var b strings.Builder
	b.WriteString("go test fuzz v1\n")
	for _, v := range vals {
		fmt.Fprintf(&b, "[]byte(%q)\n", v)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

// readFuzzSeed reads the []byte values of a corpus file in Go's fuzzing format.
func readFuzzSeed(t *testing.T, path string) [][]byte {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) == 0 || lines[0] != "go test fuzz v1" {
		t.Fatalf("%s is not a corpus file of Go's fuzzing", path)
	}
	var vals [][]byte
	for _, l := range lines[1:] {
		q, ok := strings.CutPrefix(l, "[]byte(")
		if q, ok = strings.CutSuffix(q, ")"); !ok {
			t.Fatalf("%s: %q is not a []byte value", path, l)
		}
		s, err := strconv.Unquote(q)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		vals = append(vals, []byte(s))
	}
	return vals
}

// TestInspectWALLengthBounded: a WAL record whose length field claims far more than its file
// holds (8 EiB here) is read as the torn tail etcd cuts off, without an allocation of that
// size; the same length in the middle of the WAL is damage.
func TestInspectWALLengthBounded(t *testing.T) {
	seeds, err := filepath.Glob(filepath.Join(fuzzSeedDir, "real-*"))
	if err != nil || len(seeds) == 0 {
		t.Fatalf("no seeds in %s (%v)", fuzzSeedDir, err)
	}
	vals := readFuzzSeed(t, seeds[0])
	walBytes, dbBytes := vals[0], vals[1]
	huge := []byte{0xf8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}
	for _, c := range []struct {
		name string
		wal  []byte
		want State
	}{
		{"at the end", append(bytes.Clone(walBytes), huge...), StateValid},
		{"in the middle", append(append(bytes.Clone(walBytes[:len(walBytes)/2/8*8]), huge...), walBytes[len(walBytes)/2/8*8+8:]...), StateCorrupt},
	} {
		dir := writeFuzzDataDir(t, c.wal, dbBytes)
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		v := InspectWith(context.Background(), dir, "", InspectOptions{Depth: DepthFull})
		runtime.ReadMemStats(&after)
		if v.State != c.want {
			t.Errorf("%s: %v (%s), want %v", c.name, v.State, v.Reason, c.want)
		}
		if n := after.TotalAlloc - before.TotalAlloc; n > 64<<20 {
			t.Errorf("%s: the inspection allocated %d bytes", c.name, n)
		}
	}
}

// TestInspectMetaPageHeader: a meta page whose header names another page, or has no page
// type, is damage the verdict reports (found by FuzzInspect: the header lies outside the meta
// checksum, so bbolt opened the db, and its consistency check, on a goroutine of its own,
// panicked and ended the process).
func TestInspectMetaPageHeader(t *testing.T) {
	seeds, err := filepath.Glob(filepath.Join(fuzzSeedDir, "real-*"))
	if err != nil || len(seeds) == 0 {
		t.Fatalf("no seeds in %s (%v)", fuzzSeedDir, err)
	}
	vals := readFuzzSeed(t, seeds[0])
	pageSize := int(boltfmt.ParseMeta(vals[1]).PageSize)
	for name, damage := range map[string]func(db []byte){
		"page 0 names page 1": func(db []byte) { db[0] = 1 },
		"page 1 names page 0": func(db []byte) { db[pageSize] = 0 },
		"page 1 has no type":  func(db []byte) { db[pageSize+8] = 0 },
	} {
		db := bytes.Clone(vals[1])
		damage(db)
		v := InspectWith(context.Background(), writeFuzzDataDir(t, vals[0], db), "", InspectOptions{Depth: DepthFull})
		if v.State != StateCorrupt || !strings.Contains(v.Reason, "meta page") {
			t.Errorf("%s: %v (%s), want corrupt, naming the meta page", name, v.State, v.Reason)
		}
	}
}

// TestInspectValueNamedLikeBucket: a plain value in the root of the db under the name of a
// bucket etcd creates at start (one flag bit of a leaf element: bbolt pages carry no
// checksum) is damage; etcd 3.6 exits on it ("failed to create a bucket": incompatible
// value). Found by review of FuzzCheck's failing input, a plain value in the root bucket that
// the target's own reader did not expect; the verdict was "valid".
func TestInspectValueNamedLikeBucket(t *testing.T) {
	vals := readFuzzSeed(t, filepath.Join(fuzzSeedDir, "real-puts"))
	for _, name := range []string{"lease", "alarm", "authUsers"} {
		db := bytes.Clone(vals[1])
		meta := boltfmt.ParseMeta(db)
		ps := int(meta.PageSize)
		cleared := false
		for id := 2; id < int(meta.PageCount); id++ {
			p := boltfmt.Page(db[id*ps : (id+1)*ps])
			if p.Flags() != boltfmt.LeafPage {
				continue
			}
			for i := range int(p.Count()) {
				k, _, flags, err := p.LeafElement(i)
				if err == nil && string(k) == name && flags&boltfmt.BucketLeafFlag != 0 {
					db[id*ps+boltfmt.PageHeaderSize+i*boltfmt.ElementSize] &^= boltfmt.BucketLeafFlag
					cleared = true
				}
			}
		}
		if !cleared {
			t.Fatalf("no bucket %q in the seed db", name)
		}
		v := InspectWith(context.Background(), writeFuzzDataDir(t, vals[0], db), "", InspectOptions{Depth: DepthFull})
		if v.State != StateCorrupt || !strings.Contains(v.Reason, name) {
			t.Errorf("%q a value: %v (%s), want corrupt, naming it", name, v.State, v.Reason)
		}
	}
}
