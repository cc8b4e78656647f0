package boltfmt

import (
	"bytes"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// fixMetaChecksums writes the checksums of the meta pages of db (page 0, and page 1 at the
// page size page 0 names, or 4096 bytes) as bbolt computes them, so that a fuzzer's edits get
// past the meta pages' checksums to the pages behind them.
func fixMetaChecksums(db []byte) {
	pageSize := 4096
	if len(db) >= PageHeaderSize+MetaSize {
		if ps := int(order.Uint32(db[PageHeaderSize+8:])); PlausiblePageSize(int64(ps)) {
			pageSize = ps
		}
	}
	for _, off := range []int{0, pageSize} {
		if off+PageHeaderSize+MetaSize > len(db) {
			continue
		}
		m := db[off+PageHeaderSize : off+PageHeaderSize+MetaSize]
		h := fnv.New64a()
		h.Write(m[:MetaSize-8])
		order.PutUint64(m[MetaSize-8:], h.Sum64())
	}
}

// bboltReads opens the db at path read-only with bbolt, runs its consistency check and reads
// every key and value of every bucket; a panic or a memory fault of the reads on this
// goroutine is returned as an error (one of tx.Check's own goroutines ends the process).
func bboltReads(path string) (problems []error, err error) {
	done := make(chan error, 1)
	go func() {
		debug.SetPanicOnFault(true)
		defer func() {
			if r := recover(); r != nil {
				done <- fmt.Errorf("panic: %v", r)
			}
		}()
		db, err := bolt.Open(path, 0o400, &bolt.Options{ReadOnly: true})
		if err != nil {
			done <- err
			return
		}
		defer db.Close()
		done <- db.View(func(tx *bolt.Tx) error {
			for cerr := range tx.Check() {
				problems = append(problems, cerr)
			}
			var walk func(b *bolt.Bucket) error
			walk = func(b *bolt.Bucket) error {
				return b.ForEach(func(k, v []byte) error {
					if v == nil {
						return walk(b.Bucket(k))
					}
					return nil
				})
			}
			// A value in the root bucket that is not a bucket (damage bbolt reads) has no bucket.
			return tx.ForEach(func(_ []byte, b *bolt.Bucket) error {
				if b == nil {
					return nil
				}
				return walk(b)
			})
		})
	}()
	err = <-done
	return problems, err
}

// smallDB is a db of 512-byte pages with a "key" bucket of 40 values (some on overflow pages)
// and an empty "meta" bucket, as bbolt's Tx.WriteTo streams it.
func smallDB(tb testing.TB) []byte {
	var small bytes.Buffer
	path := filepath.Join(tb.TempDir(), "db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{PageSize: 512, NoFreelistSync: true})
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket([]byte("key"))
		if err != nil {
			return err
		}
		for i := range 40 {
			if err := b.Put(fmt.Appendf(nil, "k%03d", i), bytes.Repeat([]byte{byte(i)}, i*4)); err != nil {
				return err
			}
		}
		_, err = tx.CreateBucket([]byte("meta"))
		return err
	}); err != nil {
		tb.Fatal(err)
	}
	if err := db.View(func(tx *bolt.Tx) error { _, err := tx.WriteTo(&small); return err }); err != nil {
		tb.Fatal(err)
	}
	return small.Bytes()
}

// FuzzCheck checks arbitrary files (with fixMeta, with the meta pages' checksums made right
// first). No input panics, and Check keeps its promise: a file that passes it is one that
// bbolt opens, checks without a problem and reads whole without a panic or a fault.
func FuzzCheck(f *testing.F) {
	small := smallDB(f)
	f.Add(small, false)
	f.Add(small, true)
	f.Add([]byte{}, false)
	f.Fuzz(func(t *testing.T, data []byte, fixMeta bool) {
		if fixMeta {
			data = bytes.Clone(data)
			fixMetaChecksums(data)
		}
		if err := Check(bytes.NewReader(data), int64(len(data)), 10); err != nil {
			return
		}
		path := filepath.Join(t.TempDir(), "db")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		problems, err := bboltReads(path)
		if err != nil || len(problems) > 0 {
			t.Fatalf("passes Check, but bbolt: %v; its check: %v", err, problems)
		}
	})
}

// TestCheckBoundsPageCount: meta pages that claim 2^40 or 2^64-1 pages (with their checksums
// right) are refused from the file's size before the walk allocates anything per page (found
// by FuzzCheck: a count above 2^63 is a negative int64, whose size in bytes passed the check,
// and the walk's allocation panicked).
func TestCheckBoundsPageCount(t *testing.T) {
	for _, pages := range []uint64{1 << 40, 1<<64 - 1} {
		checkPageCount(t, pages)
	}
}

func checkPageCount(t *testing.T, pages uint64) {
	db := make([]byte, 4*512)
	for id := range 2 {
		p := db[id*512:]
		order.PutUint64(p[0:], uint64(id))
		order.PutUint16(p[8:], 0x04)
		m := p[PageHeaderSize:]
		order.PutUint32(m[0:], Magic)
		order.PutUint32(m[4:], Version)
		order.PutUint32(m[8:], 512)
		order.PutUint64(m[16:], 2)
		order.PutUint64(m[32:], NoFreelist)
		order.PutUint64(m[40:], pages)
		order.PutUint64(m[48:], uint64(id))
	}
	fixMetaChecksums(db)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	err := Check(bytes.NewReader(db), int64(len(db)), 10)
	runtime.ReadMemStats(&after)
	if err == nil || !strings.Contains(err.Error(), "truncated") {
		t.Fatalf("%d pages: got %v, want the file reported truncated", pages, err)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 1<<20 {
		t.Fatalf("%d pages: Check allocated %d bytes", pages, n)
	}
}

// TestCheckMetaPageHeaders: the page headers of the meta pages, which their checksums do not
// cover, must name their page and have a page type: bbolt's tx.Check asserts both on a
// goroutine of its own, and a damaged header that passed Check ended the process (found by
// FuzzInspect).
func TestCheckMetaPageHeaders(t *testing.T) {
	db := smallDB(t)
	if err := Check(bytes.NewReader(db), int64(len(db)), 10); err != nil {
		t.Fatalf("the undamaged db: %v", err)
	}
	for name, damage := range map[string]func(db []byte){
		"page 0 names page 1":  func(db []byte) { order.PutUint64(db[0:], 1) },
		"page 1 names page 7":  func(db []byte) { order.PutUint64(db[512:], 7) },
		"page 0 has two types": func(db []byte) { order.PutUint16(db[8:], MetaPage|LeafPage) },
	} {
		d := bytes.Clone(db)
		damage(d)
		err := Check(bytes.NewReader(d), int64(len(d)), 10)
		if err == nil || !strings.Contains(err.Error(), "meta page") {
			t.Errorf("%s: got %v, want the meta page reported", name, err)
		}
	}
}
