package embedded

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
)

// bbolt's on-disk format (go.etcd.io/bbolt v1.4, format version 2). bbolt writes
// its structures in the machine's byte order.
const (
	boltMagic          = 0xED0CDAED
	boltVersion        = 2
	boltPageHeaderSize = 16 // id u64, flags u16, count u16, overflow u32
	boltElementSize    = 16 // branch: pos u32, ksize u32, pgid u64; leaf: flags u32, pos u32, ksize u32, vsize u32
	boltInBucketSize   = 16 // root pgid u64, sequence u64
	boltMetaSize       = 64 // magic, version, pageSize, flags u32; root InBucket; freelist, pgid, txid, checksum u64

	boltBranchPage   = 0x01
	boltLeafPage     = 0x02
	boltFreelistPage = 0x10
	boltBucketLeaf   = 0x01

	boltNoFreelist = ^uint64(0)

	// boltMaxDepth bounds the nesting of pages and buckets a walk follows; real
	// etcd dbs are a handful of levels deep.
	boltMaxDepth = 64
	// boltMaxPageBytes bounds the size of one page with its overflow pages that a
	// walk reads into memory; etcd's largest values are a few MiB.
	boltMaxPageBytes = 256 << 20
)

var boltEndian = binary.NativeEndian

// boltMeta is a bbolt meta page.
type boltMeta struct {
	magic, version, pageSize uint32
	root                     uint64 // root bucket's page
	freelist                 uint64 // boltNoFreelist when the freelist is not persisted (etcd's default)
	pgid                     uint64 // high water mark: pages [0, pgid) are in use
	txid                     uint64
	checksum                 uint64
	sum                      uint64 // checksum computed over the page
}

func parseBoltMeta(b []byte) boltMeta {
	m := b[boltPageHeaderSize : boltPageHeaderSize+boltMetaSize]
	h := fnv.New64a()
	h.Write(m[:56])
	return boltMeta{
		magic:    boltEndian.Uint32(m[0:]),
		version:  boltEndian.Uint32(m[4:]),
		pageSize: boltEndian.Uint32(m[8:]),
		root:     boltEndian.Uint64(m[16:]),
		freelist: boltEndian.Uint64(m[32:]),
		pgid:     boltEndian.Uint64(m[40:]),
		txid:     boltEndian.Uint64(m[48:]),
		checksum: boltEndian.Uint64(m[56:]),
		sum:      h.Sum64(),
	}
}

func (m boltMeta) validate() error {
	switch {
	case m.magic != boltMagic:
		return errors.New("invalid magic")
	case m.version != boltVersion:
		return fmt.Errorf("unsupported format version %d", m.version)
	case m.checksum != m.sum:
		return errors.New("checksum mismatch")
	}
	return nil
}

// problems collects the first few findings and counts the rest.
type problems struct {
	max   int
	first []string
	total int
}

func (p *problems) add(format string, args ...any) {
	p.total++
	if len(p.first) < p.max {
		p.first = append(p.first, fmt.Sprintf(format, args...))
	}
}

func (p *problems) err() error {
	if p.total == 0 {
		return nil
	}
	msg := fmt.Sprintf("%d problem(s): %s", p.total, joinSemi(p.first))
	if p.total > len(p.first) {
		msg += fmt.Sprintf("; and %d more", p.total-len(p.first))
	}
	return errors.New(msg)
}

func joinSemi(s []string) string {
	var b bytes.Buffer
	for i, x := range s {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(x)
	}
	return b.String()
}

// boltWalk checks the structure of a bbolt file the way bbolt's tx.Check and
// freepages do (page bounds, page types, single reference per page, key order,
// freelist), but reading through ReadAt with bounds checks instead of bbolt's
// unchecked mmap access. bbolt runs its checks on goroutines of its own and
// faults or panics on a damaged file, which would end the process; a file that
// passes boltWalk can be opened and checked by bbolt safely.
type boltWalk struct {
	r         io.ReaderAt
	size      int64
	pageSize  int64
	meta      boltMeta
	reachable []bool
	freed     map[uint64]bool
	probs     *problems
	// bufs[d] is the buffer of the page being walked at depth d: a page's keys bound its
	// children's, so it must stay intact while they are walked, and is used again after.
	bufs [][]byte
}

// boltMaxPooledBytes bounds a page buffer kept for the next page at its depth; a larger
// page (a big value's overflow pages) gets a buffer of its own.
const boltMaxPooledBytes = 1 << 20

// checkBoltFile walks the bbolt file f of the given size and returns an error
// listing what is damaged (at most maxProblems items named).
func checkBoltFile(f io.ReaderAt, size int64, maxProblems int) error {
	w := &boltWalk{r: f, size: size, freed: map[uint64]bool{}, probs: &problems{max: maxProblems}}
	if err := w.readMeta(); err != nil {
		return err
	}
	w.reachable = make([]bool, w.meta.pgid)
	w.reachable[0], w.reachable[1] = true, true
	w.readFreelist()
	w.walkTree(w.meta.root, nil, nil, []uint64{}, 0)
	if w.meta.freelist != boltNoFreelist {
		for id := uint64(2); id < w.meta.pgid; id++ {
			if !w.reachable[id] && !w.freed[id] {
				w.probs.add("page %d: unreachable unfreed", id)
			}
		}
	}
	return w.probs.err()
}

// readMeta picks the meta page bbolt would use and checks that the file holds
// every page it claims.
func (w *boltWalk) readMeta() error {
	if w.size < 2*boltPageHeaderSize+2*boltMetaSize {
		return fmt.Errorf("file too small (%d bytes) to be a bbolt db", w.size)
	}
	buf := make([]byte, boltPageHeaderSize+boltMetaSize)
	if _, err := w.r.ReadAt(buf, 0); err != nil {
		return fmt.Errorf("read meta page 0: %w", err)
	}
	m0 := parseBoltMeta(buf)
	err0 := m0.validate()
	pageSize := int64(os.Getpagesize())
	if err0 == nil {
		pageSize = int64(m0.pageSize)
	}
	if pageSize < 512 || pageSize > 1<<20 || pageSize&(pageSize-1) != 0 {
		return fmt.Errorf("meta page 0: implausible page size %d", pageSize)
	}
	w.pageSize = pageSize

	var m1 boltMeta
	err1 := errors.New("file too small for meta page 1")
	if w.size >= pageSize+int64(len(buf)) {
		if _, err := w.r.ReadAt(buf, pageSize); err != nil {
			return fmt.Errorf("read meta page 1: %w", err)
		}
		m1 = parseBoltMeta(buf)
		err1 = m1.validate()
	}
	// bbolt prefers the meta with the higher transaction id and falls back to
	// the other one when it does not validate.
	a, errA, b, errB := m0, err0, m1, err1
	if m1.txid > m0.txid {
		a, errA, b, errB = m1, err1, m0, err0
	}
	switch {
	case errA == nil:
		w.meta = a
	case errB == nil:
		w.meta = b
	default:
		return fmt.Errorf("both meta pages are invalid (page 0: %v; page 1: %v)", err0, err1)
	}
	if w.meta.pageSize != uint32(pageSize) {
		return fmt.Errorf("meta pages disagree on the page size (%d, %d)", pageSize, w.meta.pageSize)
	}
	if w.meta.pgid < 2 {
		return fmt.Errorf("meta says the db has %d pages", w.meta.pgid)
	}
	if need := int64(w.meta.pgid) * pageSize; need/pageSize != int64(w.meta.pgid) || need > w.size {
		return fmt.Errorf("file is truncated: %d bytes, but the db has %d pages of %d bytes (%d bytes)",
			w.size, w.meta.pgid, pageSize, need)
	}
	if w.meta.root < 2 || w.meta.root >= w.meta.pgid {
		return fmt.Errorf("root bucket page %d is outside the db (2..%d)", w.meta.root, w.meta.pgid-1)
	}
	if w.meta.freelist != boltNoFreelist && (w.meta.freelist < 2 || w.meta.freelist >= w.meta.pgid) {
		return fmt.Errorf("freelist page %d is outside the db (2..%d)", w.meta.freelist, w.meta.pgid-1)
	}
	return nil
}

// readPage reads page id with its overflow pages, checking that it lies below
// the high water mark and that its header names it. The page is read into the
// buffer of depth, valid until the next page of that depth is read.
func (w *boltWalk) readPage(id uint64, depth int) ([]byte, bool) {
	if id >= w.meta.pgid {
		w.probs.add("page %d: out of bounds: %d", id, w.meta.pgid)
		return nil, false
	}
	for len(w.bufs) <= depth {
		w.bufs = append(w.bufs, make([]byte, w.pageSize))
	}
	hdr := w.bufs[depth][:w.pageSize]
	if _, err := w.r.ReadAt(hdr, int64(id)*w.pageSize); err != nil {
		w.probs.add("page %d: read: %v", id, err)
		return nil, false
	}
	if got := boltEndian.Uint64(hdr[0:]); got != id {
		w.probs.add("page %d: header names page %d", id, got)
		return nil, false
	}
	overflow := uint64(boltEndian.Uint32(hdr[12:]))
	if id+overflow >= w.meta.pgid {
		w.probs.add("page %d: %d overflow pages run past the end of the db (%d pages)", id, overflow, w.meta.pgid)
		return nil, false
	}
	if (overflow+1)*uint64(w.pageSize) > boltMaxPageBytes {
		w.probs.add("page %d: implausible size of %d pages", id, overflow+1)
		return nil, false
	}
	if overflow == 0 {
		return hdr, true
	}
	// The first page is read: read the overflow pages after it.
	n := int64(overflow+1) * w.pageSize
	p := w.bufs[depth]
	if int64(cap(p)) < n {
		p = make([]byte, n)
		if n <= boltMaxPooledBytes {
			w.bufs[depth] = p
		}
		copy(p, hdr)
	}
	p = p[:n]
	if _, err := w.r.ReadAt(p[w.pageSize:], (int64(id)+1)*w.pageSize); err != nil {
		w.probs.add("page %d: read: %v", id, err)
		return nil, false
	}
	return p, true
}

func pageFlags(p []byte) uint16    { return boltEndian.Uint16(p[8:]) }
func pageCount(p []byte) uint16    { return boltEndian.Uint16(p[10:]) }
func pageOverflow(p []byte) uint64 { return uint64(boltEndian.Uint32(p[12:])) }

func (w *boltWalk) readFreelist() {
	if w.meta.freelist == boltNoFreelist {
		return
	}
	id := w.meta.freelist
	p, ok := w.readPage(id, 0)
	if !ok {
		return
	}
	for i := uint64(0); i <= pageOverflow(p); i++ {
		w.reachable[id+i] = true
	}
	if f := pageFlags(p); f != boltFreelistPage {
		w.probs.add("page %d: freelist page has type %#x", id, f)
		return
	}
	body := p[boltPageHeaderSize:]
	count, start := uint64(pageCount(p)), uint64(0)
	if count == 0xFFFF {
		if len(body) < 8 {
			w.probs.add("page %d: freelist count missing", id)
			return
		}
		count, start = boltEndian.Uint64(body), 1
	}
	if (start+count)*8 > uint64(len(body)) || count > uint64(len(body)) {
		w.probs.add("page %d: freelist of %d ids does not fit its page", id, count)
		return
	}
	for i := start; i < start+count; i++ {
		fid := boltEndian.Uint64(body[i*8:])
		if w.freed[fid] {
			w.probs.add("page %d: already freed", fid)
		}
		if fid < 2 || fid >= w.meta.pgid {
			w.probs.add("page %d: freed page is outside the db (2..%d)", fid, w.meta.pgid-1)
			continue
		}
		w.freed[fid] = true
	}
}

// element returns the key and value of element i of page p.
func element(p []byte, i int, leaf bool) (key, value []byte, flags uint32, child uint64, err error) {
	off := boltPageHeaderSize + i*boltElementSize
	if off+boltElementSize > len(p) {
		return nil, nil, 0, 0, fmt.Errorf("element %d lies outside the page", i)
	}
	e := p[off : off+boltElementSize]
	var pos, ksize, vsize uint64
	if leaf {
		flags = boltEndian.Uint32(e[0:])
		pos, ksize, vsize = uint64(boltEndian.Uint32(e[4:])), uint64(boltEndian.Uint32(e[8:])), uint64(boltEndian.Uint32(e[12:]))
	} else {
		pos, ksize = uint64(boltEndian.Uint32(e[0:])), uint64(boltEndian.Uint32(e[4:]))
		child = boltEndian.Uint64(e[8:])
	}
	start := uint64(off) + pos
	if end := start + ksize + vsize; end > uint64(len(p)) {
		return nil, nil, 0, 0, fmt.Errorf("element %d (key %d bytes, value %d bytes at offset %d) runs past the page", i, ksize, vsize, start)
	}
	return p[start : start+ksize], p[start+ksize : start+ksize+vsize], flags, child, nil
}

// walkTree checks the b+tree rooted at page id, whose keys must lie in
// [minKey, maxKey) (nil = unbounded), and every bucket below it.
func (w *boltWalk) walkTree(id uint64, minKey, maxKey []byte, stack []uint64, depth int) {
	stack = append(stack, id)
	if depth > boltMaxDepth {
		w.probs.add("page %d: nested deeper than %d levels (stack: %v)", id, boltMaxDepth, stack)
		return
	}
	if id < 2 || id >= w.meta.pgid {
		w.probs.add("page %d: out of bounds: %d (stack: %v)", id, w.meta.pgid, stack)
		return
	}
	if w.reachable[id] {
		w.probs.add("page %d: multiple references (stack: %v)", id, stack)
		return
	}
	p, ok := w.readPage(id, depth)
	if !ok {
		return
	}
	for i := uint64(0); i <= pageOverflow(p); i++ {
		if w.reachable[id+i] {
			w.probs.add("page %d: multiple references (stack: %v)", id+i, stack)
		}
		w.reachable[id+i] = true
	}
	if w.freed[id] {
		w.probs.add("page %d: reachable freed", id)
	}
	switch pageFlags(p) {
	case boltBranchPage:
		w.walkBranch(id, p, minKey, maxKey, stack, depth)
	case boltLeafPage:
		w.walkLeaf(id, p, minKey, maxKey, stack, depth)
	default:
		w.probs.add("page %d: invalid type %#x (stack: %v)", id, pageFlags(p), stack)
	}
}

func (w *boltWalk) walkBranch(id uint64, p []byte, minKey, maxKey []byte, stack []uint64, depth int) {
	n := int(pageCount(p))
	if n == 0 {
		w.probs.add("page %d: empty branch page (stack: %v)", id, stack)
		return
	}
	keys := make([][]byte, n)
	children := make([]uint64, n)
	for i := range n {
		k, _, _, child, err := element(p, i, false)
		if err != nil {
			w.probs.add("page %d: %v (stack: %v)", id, err, stack)
			return
		}
		keys[i], children[i] = k, child
	}
	w.checkKeyOrder(id, "branch", keys, minKey, maxKey, stack)
	for i := range n {
		upper := maxKey
		if i < n-1 {
			upper = keys[i+1]
		}
		w.walkTree(children[i], keys[i], upper, stack, depth+1)
	}
}

func (w *boltWalk) walkLeaf(id uint64, p []byte, minKey, maxKey []byte, stack []uint64, depth int) {
	w.walkLeafElements(fmt.Sprintf("page %d", id), p, minKey, maxKey, stack, depth)
}

// walkLeafElements checks the elements of a leaf page (a real page or the inline
// page of a small bucket) and descends into the buckets among them.
func (w *boltWalk) walkLeafElements(where string, p []byte, minKey, maxKey []byte, stack []uint64, depth int) {
	n := int(pageCount(p))
	keys := make([][]byte, 0, n)
	for i := range n {
		k, v, flags, _, err := element(p, i, true)
		if err != nil {
			w.probs.add("%s: %v (stack: %v)", where, err, stack)
			return
		}
		keys = append(keys, k)
		if flags&boltBucketLeaf == 0 {
			continue
		}
		if len(v) < boltInBucketSize {
			w.probs.add("%s: bucket %q has a %d-byte header (stack: %v)", where, k, len(v), stack)
			continue
		}
		root := boltEndian.Uint64(v)
		if root != 0 {
			w.walkTree(root, nil, nil, stack, depth+1)
			continue
		}
		inline := v[boltInBucketSize:]
		if len(inline) < boltPageHeaderSize {
			w.probs.add("%s: inline bucket %q is %d bytes (stack: %v)", where, k, len(inline), stack)
			continue
		}
		if f := pageFlags(inline); f != boltLeafPage {
			w.probs.add("%s: inline bucket %q has page type %#x (stack: %v)", where, k, f, stack)
			continue
		}
		if depth+1 > boltMaxDepth {
			w.probs.add("%s: buckets nested deeper than %d levels", where, boltMaxDepth)
			continue
		}
		w.walkLeafElements(fmt.Sprintf("%s: inline bucket %q", where, k), inline, nil, nil, stack, depth+1)
	}
	w.checkKeyOrder(0, where, keys, minKey, maxKey, stack)
}

// checkKeyOrder reports keys that are not strictly increasing or fall outside
// [minKey, maxKey) set by the ancestors.
func (w *boltWalk) checkKeyOrder(id uint64, kind string, keys [][]byte, minKey, maxKey []byte, stack []uint64) {
	where := kind
	if id != 0 {
		where = fmt.Sprintf("%s page %d", kind, id)
	}
	for i, k := range keys {
		if i == 0 && minKey != nil && bytes.Compare(minKey, k) > 0 {
			w.probs.add("%s: first key %x is below its ancestor's key %x (stack: %v)", where, k, minKey, stack)
		}
		if i > 0 && bytes.Compare(keys[i-1], k) >= 0 {
			w.probs.add("%s: key[%d] %x is not above the previous key %x (stack: %v)", where, i, k, keys[i-1], stack)
		}
		if maxKey != nil && bytes.Compare(k, maxKey) >= 0 {
			w.probs.add("%s: key[%d] %x is not below the next ancestor key %x (stack: %v)", where, i, k, maxKey, stack)
		}
	}
}
