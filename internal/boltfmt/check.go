package boltfmt

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// Limits of a check.
const (
	// maxDepth bounds the nesting of pages and buckets a check follows; real etcd dbs are a
	// handful of levels deep.
	maxDepth = 64
	// maxPageBytes bounds the size of one page with its overflow pages that a check reads
	// into memory; etcd's largest values are a few MiB.
	maxPageBytes = 256 << 20
	// maxPooledBytes bounds a page buffer kept for the next page at its depth; a larger
	// page (a big value's overflow pages) gets a buffer of its own.
	maxPooledBytes = 1 << 20
)

// Problems collects the first few problems a check finds and counts the rest.
type Problems struct {
	// Max is how many problems Err names.
	Max   int
	first []string
	total int
}

// Add records a problem.
func (p *Problems) Add(format string, args ...any) {
	p.total++
	if len(p.first) < p.Max {
		p.first = append(p.first, fmt.Sprintf(format, args...))
	}
}

// Err lists the problems recorded (nil when there is none): how many, the first Max of them,
// and how many more.
func (p *Problems) Err() error {
	if p.total == 0 {
		return nil
	}
	msg := fmt.Sprintf("%d problem(s): %s", p.total, strings.Join(p.first, "; "))
	if p.total > len(p.first) {
		msg += fmt.Sprintf("; and %d more", p.total-len(p.first))
	}
	return errors.New(msg)
}

// Check checks the structure of the bbolt file read through f, of the given size, the way
// bbolt's tx.Check and freepages do (page bounds, page types, single reference per page, key
// order, freelist), but reading through ReadAt with bounds checks instead of bbolt's unchecked
// mmap access. bbolt runs its checks on goroutines of its own and faults or panics on a
// damaged file, which would end the process; a file that passes Check can be opened and
// checked by bbolt safely. The error lists what is damaged (at most maxProblems items named).
func Check(f io.ReaderAt, size int64, maxProblems int) error {
	w := &walk{r: f, size: size, freed: map[uint64]bool{}, probs: &Problems{Max: maxProblems}}
	if err := w.readMeta(); err != nil {
		return err
	}
	w.checkMetaHeaders()
	w.reachable = make([]bool, w.meta.PageCount)
	w.reachable[0], w.reachable[1] = true, true
	w.readFreelist()
	w.walkTree(w.meta.Root, nil, nil, []uint64{}, 0)
	if w.meta.Freelist != NoFreelist {
		for id := uint64(2); id < w.meta.PageCount; id++ {
			if !w.reachable[id] && !w.freed[id] {
				w.probs.Add("page %d: unreachable unfreed", id)
			}
		}
	}
	return w.probs.Err()
}

// walk is one Check.
type walk struct {
	r         io.ReaderAt
	size      int64
	pageSize  int64
	meta      Meta
	reachable []bool
	freed     map[uint64]bool
	probs     *Problems
	// bufs[d] is the buffer of the page being walked at depth d: a page's keys bound its
	// children's, so it must stay intact while they are walked, and is used again after.
	bufs [][]byte
}

// readMeta picks the meta page bbolt would use and checks that the file holds
// every page it claims.
func (w *walk) readMeta() error {
	if w.size < 2*PageHeaderSize+2*MetaSize {
		return fmt.Errorf("file too small (%d bytes) to be a bbolt db", w.size)
	}
	buf := make([]byte, PageHeaderSize+MetaSize)
	if _, err := w.r.ReadAt(buf, 0); err != nil {
		return fmt.Errorf("read meta page 0: %w", err)
	}
	m0 := ParseMeta(buf)
	err0 := m0.Validate()
	pageSize := int64(os.Getpagesize())
	if err0 == nil {
		pageSize = int64(m0.PageSize)
	}
	if !PlausiblePageSize(pageSize) {
		return fmt.Errorf("meta page 0: implausible page size %d", pageSize)
	}
	w.pageSize = pageSize

	var m1 Meta
	err1 := errors.New("file too small for meta page 1")
	if w.size >= pageSize+int64(len(buf)) {
		if _, err := w.r.ReadAt(buf, pageSize); err != nil {
			return fmt.Errorf("read meta page 1: %w", err)
		}
		m1 = ParseMeta(buf)
		err1 = m1.Validate()
	}
	// bbolt prefers the meta with the higher transaction id and falls back to
	// the other one when it does not validate.
	a, errA, b, errB := m0, err0, m1, err1
	if m1.TxID > m0.TxID {
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
	if w.meta.PageSize != uint32(pageSize) {
		return fmt.Errorf("meta pages disagree on the page size (%d, %d)", pageSize, w.meta.PageSize)
	}
	if w.meta.PageCount < 2 {
		return fmt.Errorf("meta says the db has %d pages", w.meta.PageCount)
	}
	// In uint64: a page count above 2^63 is negative as an int64, and so was its size.
	if w.meta.PageCount > uint64(w.size)/uint64(pageSize) {
		return fmt.Errorf("file is truncated: %d bytes, but the db has %d pages of %d bytes",
			w.size, w.meta.PageCount, pageSize)
	}
	if w.meta.Root < 2 || w.meta.Root >= w.meta.PageCount {
		return fmt.Errorf("root bucket page %d is outside the db (2..%d)", w.meta.Root, w.meta.PageCount-1)
	}
	if w.meta.Freelist != NoFreelist && (w.meta.Freelist < 2 || w.meta.Freelist >= w.meta.PageCount) {
		return fmt.Errorf("freelist page %d is outside the db (2..%d)", w.meta.Freelist, w.meta.PageCount-1)
	}
	return nil
}

// checkMetaHeaders checks the page headers of the two meta pages, which the meta checksums do
// not cover: bbolt's tx.Check asserts that each names its own page and has one page type, and
// panics (on a goroutine of its own, ending the process) when one does not.
func (w *walk) checkMetaHeaders() {
	hdr := make(Page, PageHeaderSize)
	for id := uint64(0); id < 2; id++ {
		if _, err := w.r.ReadAt(hdr, int64(id)*w.pageSize); err != nil {
			w.probs.Add("page %d: read: %v", id, err)
			continue
		}
		if got := hdr.ID(); got != id {
			w.probs.Add("meta page %d: header names page %d", id, got)
		}
		switch f := hdr.Flags(); f {
		case BranchPage, LeafPage, MetaPage, FreelistPage:
		default:
			w.probs.Add("meta page %d: invalid type %#x", id, f)
		}
	}
}

// readPage reads page id with its overflow pages, checking that it lies below
// the high water mark and that its header names it. The page is read into the
// buffer of depth, valid until the next page of that depth is read.
func (w *walk) readPage(id uint64, depth int) (Page, bool) {
	if id >= w.meta.PageCount {
		w.probs.Add("page %d: out of bounds: %d", id, w.meta.PageCount)
		return nil, false
	}
	for len(w.bufs) <= depth {
		w.bufs = append(w.bufs, make([]byte, w.pageSize))
	}
	hdr := Page(w.bufs[depth][:w.pageSize])
	if _, err := w.r.ReadAt(hdr, int64(id)*w.pageSize); err != nil {
		w.probs.Add("page %d: read: %v", id, err)
		return nil, false
	}
	if got := hdr.ID(); got != id {
		w.probs.Add("page %d: header names page %d", id, got)
		return nil, false
	}
	overflow := hdr.Overflow()
	if id+overflow >= w.meta.PageCount {
		w.probs.Add("page %d: %d overflow pages run past the end of the db (%d pages)", id, overflow, w.meta.PageCount)
		return nil, false
	}
	if (overflow+1)*uint64(w.pageSize) > maxPageBytes {
		w.probs.Add("page %d: implausible size of %d pages", id, overflow+1)
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
		if n <= maxPooledBytes {
			w.bufs[depth] = p
		}
		copy(p, hdr)
	}
	p = p[:n]
	if _, err := w.r.ReadAt(p[w.pageSize:], (int64(id)+1)*w.pageSize); err != nil {
		w.probs.Add("page %d: read: %v", id, err)
		return nil, false
	}
	return p, true
}

func (w *walk) readFreelist() {
	if w.meta.Freelist == NoFreelist {
		return
	}
	id := w.meta.Freelist
	p, ok := w.readPage(id, 0)
	if !ok {
		return
	}
	for i := uint64(0); i <= p.Overflow(); i++ {
		w.reachable[id+i] = true
	}
	if f := p.Flags(); f != FreelistPage {
		w.probs.Add("page %d: freelist page has type %#x", id, f)
		return
	}
	body := p[PageHeaderSize:]
	count, start := uint64(p.Count()), uint64(0)
	if count == 0xFFFF {
		if len(body) < 8 {
			w.probs.Add("page %d: freelist count missing", id)
			return
		}
		count, start = order.Uint64(body), 1
	}
	if (start+count)*8 > uint64(len(body)) || count > uint64(len(body)) {
		w.probs.Add("page %d: freelist of %d ids does not fit its page", id, count)
		return
	}
	for i := start; i < start+count; i++ {
		fid := order.Uint64(body[i*8:])
		if w.freed[fid] {
			w.probs.Add("page %d: already freed", fid)
		}
		if fid < 2 || fid >= w.meta.PageCount {
			w.probs.Add("page %d: freed page is outside the db (2..%d)", fid, w.meta.PageCount-1)
			continue
		}
		w.freed[fid] = true
	}
}

// walkTree checks the b+tree rooted at page id, whose keys must lie in
// [minKey, maxKey) (nil = unbounded), and every bucket below it.
func (w *walk) walkTree(id uint64, minKey, maxKey []byte, stack []uint64, depth int) {
	stack = append(stack, id)
	if depth > maxDepth {
		w.probs.Add("page %d: nested deeper than %d levels (stack: %v)", id, maxDepth, stack)
		return
	}
	if id < 2 || id >= w.meta.PageCount {
		w.probs.Add("page %d: out of bounds: %d (stack: %v)", id, w.meta.PageCount, stack)
		return
	}
	if w.reachable[id] {
		w.probs.Add("page %d: multiple references (stack: %v)", id, stack)
		return
	}
	p, ok := w.readPage(id, depth)
	if !ok {
		return
	}
	for i := uint64(0); i <= p.Overflow(); i++ {
		if w.reachable[id+i] {
			w.probs.Add("page %d: multiple references (stack: %v)", id+i, stack)
		}
		w.reachable[id+i] = true
	}
	if w.freed[id] {
		w.probs.Add("page %d: reachable freed", id)
	}
	switch p.Flags() {
	case BranchPage:
		w.walkBranch(id, p, minKey, maxKey, stack, depth)
	case LeafPage:
		w.walkLeaf(id, p, minKey, maxKey, stack, depth)
	default:
		w.probs.Add("page %d: invalid type %#x (stack: %v)", id, p.Flags(), stack)
	}
}

func (w *walk) walkBranch(id uint64, p Page, minKey, maxKey []byte, stack []uint64, depth int) {
	n := int(p.Count())
	if n == 0 {
		w.probs.Add("page %d: empty branch page (stack: %v)", id, stack)
		return
	}
	keys := make([][]byte, n)
	children := make([]uint64, n)
	for i := range n {
		k, child, err := p.BranchElement(i)
		if err != nil {
			w.probs.Add("page %d: %v (stack: %v)", id, err, stack)
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

func (w *walk) walkLeaf(id uint64, p Page, minKey, maxKey []byte, stack []uint64, depth int) {
	w.walkLeafElements(fmt.Sprintf("page %d", id), p, minKey, maxKey, stack, depth)
}

// walkLeafElements checks the elements of a leaf page (a real page or the inline
// page of a small bucket) and descends into the buckets among them.
func (w *walk) walkLeafElements(where string, p Page, minKey, maxKey []byte, stack []uint64, depth int) {
	n := int(p.Count())
	keys := make([][]byte, 0, n)
	for i := range n {
		k, v, flags, err := p.LeafElement(i)
		if err != nil {
			w.probs.Add("%s: %v (stack: %v)", where, err, stack)
			return
		}
		keys = append(keys, k)
		if flags&BucketLeafFlag == 0 {
			continue
		}
		root, inline, err := Bucket(v)
		if err != nil {
			w.probs.Add("%s: bucket %q %v (stack: %v)", where, k, err, stack)
			continue
		}
		if root != 0 {
			w.walkTree(root, nil, nil, stack, depth+1)
			continue
		}
		if depth+1 > maxDepth {
			w.probs.Add("%s: buckets nested deeper than %d levels", where, maxDepth)
			continue
		}
		w.walkLeafElements(fmt.Sprintf("%s: inline bucket %q", where, k), inline, nil, nil, stack, depth+1)
	}
	w.checkKeyOrder(0, where, keys, minKey, maxKey, stack)
}

// checkKeyOrder reports keys that are not strictly increasing or fall outside
// [minKey, maxKey) set by the ancestors.
func (w *walk) checkKeyOrder(id uint64, kind string, keys [][]byte, minKey, maxKey []byte, stack []uint64) {
	where := kind
	if id != 0 {
		where = fmt.Sprintf("%s page %d", kind, id)
	}
	for i, k := range keys {
		if i == 0 && minKey != nil && bytes.Compare(minKey, k) > 0 {
			w.probs.Add("%s: first key %x is below its ancestor's key %x (stack: %v)", where, k, minKey, stack)
		}
		if i > 0 && bytes.Compare(keys[i-1], k) >= 0 {
			w.probs.Add("%s: key[%d] %x is not above the previous key %x (stack: %v)", where, i, k, keys[i-1], stack)
		}
		if maxKey != nil && bytes.Compare(k, maxKey) >= 0 {
			w.probs.Add("%s: key[%d] %x is not below the next ancestor key %x (stack: %v)", where, i, k, maxKey, stack)
		}
	}
}
