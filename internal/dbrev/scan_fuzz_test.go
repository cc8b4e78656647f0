package dbrev

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"runtime/debug"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/etcdbr/etcdbr/internal/boltfmt"
)

// fixMetaChecksums writes the checksums of the meta pages of db as bbolt computes them, so
// that a fuzzer's edits get past them to the pages behind.
func fixMetaChecksums(db []byte) {
	pageSize := 4096
	if len(db) >= boltfmt.PageHeaderSize+boltfmt.MetaSize {
		if ps := int(binary.NativeEndian.Uint32(db[boltfmt.PageHeaderSize+8:])); boltfmt.PlausiblePageSize(int64(ps)) {
			pageSize = ps
		}
	}
	for _, off := range []int{0, pageSize} {
		if off+boltfmt.PageHeaderSize+boltfmt.MetaSize > len(db) {
			continue
		}
		m := db[off+boltfmt.PageHeaderSize : off+boltfmt.PageHeaderSize+boltfmt.MetaSize]
		h := fnv.New64a()
		h.Write(m[:boltfmt.MetaSize-8])
		binary.NativeEndian.PutUint64(m[boltfmt.MetaSize-8:], h.Sum64())
	}
}

// scan feeds data to a Scanner in writes of chunk bytes (all at once for 0).
func scan(data []byte, chunk int) (int64, error) {
	s := NewScanner()
	if chunk <= 0 {
		chunk = len(data) + 1
	}
	for b := data; len(b) > 0; b = b[min(chunk, len(b)):] {
		if n, err := s.Write(b[:min(chunk, len(b))]); err != nil || n != min(chunk, len(b)) {
			return 0, fmt.Errorf("Write returned %d, %v", n, err)
		}
	}
	return s.Revision()
}

// boltRevision reads the revision of the db file data through bbolt (Revision), turning a
// panic or a memory fault into an error.
func boltRevision(t *testing.T, data []byte) (int64, error) {
	path := filepath.Join(t.TempDir(), "db")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	type result struct {
		rev int64
		err error
	}
	done := make(chan result, 1)
	go func() {
		debug.SetPanicOnFault(true)
		defer func() {
			if r := recover(); r != nil {
				done <- result{err: fmt.Errorf("panic: %v", r)}
			}
		}()
		rev, err := FileRevision(path, 0)
		done <- result{rev, err}
	}()
	r := <-done
	return r.rev, r.err
}

// FuzzScanner feeds arbitrary streams to the Scanner (with fixMeta, with the meta pages'
// checksums made right first), in writes of chunk bytes. No input panics or loops; the
// revision does not depend on how the stream is cut into writes; and where the stream is a
// db whose structure internal/boltfmt's Check passes and whose first meta page is the one
// bbolt uses, a revision the Scanner reads is the one bbolt reads (Revision).
func FuzzScanner(f *testing.F) {
	var stream bytes.Buffer
	path := filepath.Join(f.TempDir(), "db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{PageSize: 512, NoFreelistSync: true})
	if err != nil {
		f.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		keys, err := tx.CreateBucket([]byte("key"))
		if err != nil {
			return err
		}
		for rev := range 30 {
			k := binary.BigEndian.AppendUint64(nil, uint64(rev+2))
			k = binary.BigEndian.AppendUint64(append(k, '_'), 0)
			if err := keys.Put(k, bytes.Repeat([]byte{'v'}, rev*5)); err != nil {
				return err
			}
		}
		meta, err := tx.CreateBucket([]byte("meta"))
		if err != nil {
			return err
		}
		return meta.Put([]byte("finishedCompactRev"), append(binary.BigEndian.AppendUint64(nil, 7), '_', 0, 0, 0, 0, 0, 0, 0, 0))
	}); err != nil {
		f.Fatal(err)
	}
	if err := db.View(func(tx *bolt.Tx) error { _, err := tx.WriteTo(&stream); return err }); err != nil {
		f.Fatal(err)
	}
	db.Close()
	f.Add(stream.Bytes(), false, uint16(0))
	f.Add(stream.Bytes(), true, uint16(100))
	f.Add([]byte{}, false, uint16(1))
	f.Fuzz(func(t *testing.T, data []byte, fixMeta bool, chunk uint16) {
		if fixMeta {
			data = bytes.Clone(data)
			fixMetaChecksums(data)
		}
		rev, err := scan(data, 0)
		if chunk > 0 {
			crev, cerr := scan(data, int(chunk))
			if crev != rev || (cerr == nil) != (err == nil) {
				t.Fatalf("whole: %d, %v; in writes of %d bytes: %d, %v", rev, err, chunk, crev, cerr)
			}
		}
		if err != nil || boltfmt.Check(bytes.NewReader(data), int64(len(data)), 1) != nil {
			return
		}
		m0, m1 := boltfmt.ParseMeta(data), boltfmt.ParseMeta(data[m0PageSize(data):])
		if m0.Validate() != nil || (m1.Validate() == nil && m1.TxID > m0.TxID) {
			return // bbolt uses the second meta page; a stream carries the transaction's meta first
		}
		brev, berr := boltRevision(t, data)
		if berr != nil || brev != rev {
			t.Fatalf("the Scanner reads revision %d; bbolt reads %d, %v", rev, brev, berr)
		}
	})
}

// m0PageSize is the page size meta page 0 of data names (data passed Check: it is plausible).
func m0PageSize(data []byte) int {
	return int(boltfmt.ParseMeta(data).PageSize)
}

// sharedPagesStream is a db stream of 512-byte pages whose "key" bucket is a tree of depth
// branch pages, each with fan children that are all the next page, above one empty leaf: a
// few KiB that reach that leaf fan^depth times along different paths. No bbolt db shares a
// page between two parents.
func sharedPagesStream(fan, depth int) []byte {
	const ps = 512
	pages := 3 + depth + 1 // meta, meta, root leaf, the branches, the empty leaf
	b := make([]byte, pages*ps)
	le := binary.NativeEndian
	header := func(id int, flags, count uint16) []byte {
		p := b[id*ps : (id+1)*ps]
		le.PutUint64(p[0:], uint64(id))
		le.PutUint16(p[8:], flags)
		le.PutUint16(p[10:], count)
		return p
	}
	for id := range 2 {
		p := header(id, 0x04, 0)
		m := p[boltfmt.PageHeaderSize:]
		le.PutUint32(m[0:], boltfmt.Magic)
		le.PutUint32(m[4:], boltfmt.Version)
		le.PutUint32(m[8:], ps)
		le.PutUint64(m[16:], 2) // the root bucket's page
		le.PutUint64(m[32:], boltfmt.NoFreelist)
		le.PutUint64(m[40:], uint64(pages))
		le.PutUint64(m[48:], 1)
	}
	fixMetaChecksums(b)
	// The root bucket: one element, the bucket "key" with its root on page 3.
	root := header(2, boltfmt.LeafPage, 1)
	el := root[boltfmt.PageHeaderSize:]
	le.PutUint32(el[0:], boltfmt.BucketLeafFlag)
	le.PutUint32(el[4:], boltfmt.ElementSize) // the key right after the element
	le.PutUint32(el[8:], 3)
	le.PutUint32(el[12:], boltfmt.BucketHeaderSize)
	copy(el[boltfmt.ElementSize:], "key")
	le.PutUint64(el[boltfmt.ElementSize+3:], 3)
	for d := range depth {
		id := 3 + d
		p := header(id, boltfmt.BranchPage, uint16(fan))
		for i := range fan {
			e := p[boltfmt.PageHeaderSize+i*boltfmt.ElementSize:]
			le.PutUint32(e[0:], uint32((fan-i)*boltfmt.ElementSize)) // an empty key at the end of the elements
			le.PutUint64(e[8:], uint64(id+1))
		}
	}
	header(3+depth, boltfmt.LeafPage, 0)
	return b
}

// TestScannerSharedPages: a tree that reaches one page along many paths is damage, found at
// once (found by review of what FuzzScanner explores: the search followed every path, fan^depth
// visits, and a 7 KiB stream kept it busy for hours).
func TestScannerSharedPages(t *testing.T) {
	stream := sharedPagesStream(20, 10)
	done := make(chan error, 1)
	go func() {
		_, err := scan(stream, 0)
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a tree with shared pages gave a revision")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the Scanner did not finish within 10 s on a 7 KiB stream")
	}
	// One path is no damage: the empty bucket is at revision 1.
	rev, err := scan(sharedPagesStream(1, 10), 0)
	if err != nil || rev != 1 {
		t.Fatalf("one path: revision %d, %v; want 1", rev, err)
	}
}
