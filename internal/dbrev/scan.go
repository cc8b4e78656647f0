package dbrev

import (
	"bytes"
	"errors"
	"fmt"
	"math"

	"github.com/etcdbr/etcdbr/internal/boltfmt"
)

// Scanner reads the revision of an etcd bbolt db from the db's bytes as they go by,
// without keeping them: it is an io.Writer for what bbolt's Tx.WriteTo writes and etcd's
// Maintenance API sends (a meta page with the transaction's root, a second copy, then every
// page of the file up to the high-water mark, in order; anything after that, such as etcd's
// SHA-256, is ignored).
//
// The revision is the one Revision reads through bbolt: the newest key of the "key"
// bucket (the last key of the last non-empty leaf under the bucket's root), raised to the
// compaction revisions of the "meta" bucket. bbolt reads a page when the search needs it;
// here the pages go by in file order, and a bucket's pages may be anywhere in the file, before
// or after its root. So the scanner keeps of every page what the search may need (the children
// of a branch page; the element count and the newest key's first 17 bytes of a leaf page; the
// value of a leaf element named like one of the things searched for, so that buckets stored
// inline and the meta bucket's values are found), about 24 bytes a page, and searches from the
// meta page's root once the stream ended. Free pages are scanned too, but the search only
// follows the tree from the root, as bbolt does, so their stale contents are never read.
//
// The pages are decoded by internal/boltfmt, in the host's byte order as bbolt writes them: a
// stream from a member on a host of the other order is refused at its meta page.
//
// Write never fails (so that scanning cannot stop the stream it watches); what made the
// stream unreadable is reported by Revision. The stream is not verified here: use the result
// only once etcd's checksum matched.
type Scanner struct {
	off      int64 // bytes of the stream seen
	pageSize int64
	root     uint64 // the root bucket's page
	hwm      uint64 // pages in the db
	cur      []byte // the page being received when a write ends inside it
	pages    []scannedPage
	children map[uint64][]uint64
	named    map[uint64][]namedElem
	spans    []*pageSpan // pages with overflow pages, until their last one arrived
	spanned  int64       // bytes held by spans
	err      error
}

// Limits on what a scan holds beyond its per-page records.
const (
	maxScannedSpan  = 64 << 20  // the largest page (with its overflow) that is read
	maxScannedSpans = 256 << 20 // pages with overflow held at once
	maxNamedValue   = 64 << 10  // the largest value kept of a named element
)

// The names the search looks for: buckets in the root bucket, keys in the meta bucket (etcd's
// schema.Key, schema.Meta, schema.FinishedCompactKeyName, schema.ScheduledCompactKeyName).
var scannedNames = [][]byte{[]byte("key"), []byte("meta"), []byte("finishedCompactRev"), []byte("scheduledCompactRev")}

// scannedPage is what is kept of one page.
type scannedPage struct {
	kind    uint8 // pageNone, pageBranch, pageLeaf, pageUnreadable
	count   uint16
	lastLen uint16 // length of the newest key of a leaf (capped)
	last    [revBytesLen]byte
}

const (
	pageNone       = iota // not a branch or leaf page (meta, freelist, overflow, garbage)
	pageBranch            // children in Scanner.children
	pageLeaf              // count and newest key here; named elements in Scanner.named
	pageUnreadable        // claims to be a branch or leaf page but cannot be read
)

// namedElem is a leaf element whose key is one of scannedNames.
type namedElem struct {
	key      string
	flags    uint32
	value    []byte
	tooLarge bool // above maxNamedValue: not kept
}

// pageSpan is a page with overflow pages being received.
type pageSpan struct {
	id  uint64
	buf []byte
}

// NewScanner returns a Scanner for one stream.
func NewScanner() *Scanner {
	return &Scanner{children: map[uint64][]uint64{}, named: map[uint64][]namedElem{}}
}

func (s *Scanner) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 && s.err == nil {
		if s.pageSize == 0 {
			k := min(len(p), boltfmt.PageHeaderSize+boltfmt.MetaSize-len(s.cur))
			s.cur = append(s.cur, p[:k]...)
			s.off += int64(k)
			p = p[k:]
			if len(s.cur) == boltfmt.PageHeaderSize+boltfmt.MetaSize {
				s.err = s.readMeta(s.cur)
			}
			continue
		}
		end := int64(s.hwm) * s.pageSize
		if s.off >= end {
			s.off += int64(len(p))
			break
		}
		pgid := uint64(s.off / s.pageSize)
		if s.off%s.pageSize == 0 && int64(len(p)) >= s.pageSize {
			page := p[:s.pageSize]
			s.feedSpans(page)
			s.page(pgid, page)
			p = p[s.pageSize:]
			s.off += s.pageSize
			continue
		}
		k := min(int64(len(p)), s.pageSize-s.off%s.pageSize)
		s.cur = append(s.cur, p[:k]...)
		s.feedSpans(p[:k])
		p = p[k:]
		s.off += k
		if int64(len(s.cur)) == s.pageSize {
			s.page(pgid, s.cur)
			s.cur = s.cur[:0]
		}
	}
	return n, nil
}

// readMeta reads the first meta page's header and meta.
func (s *Scanner) readMeta(b []byte) error {
	m := boltfmt.ParseMeta(b)
	if err := m.Validate(); err != nil {
		return fmt.Errorf("the db's meta page: %w", err)
	}
	ps := int64(m.PageSize)
	if !boltfmt.PlausiblePageSize(ps) {
		return fmt.Errorf("bbolt page size %d", ps)
	}
	s.pageSize = ps
	s.root = m.Root
	s.hwm = m.PageCount
	if s.hwm < 2 || s.hwm > math.MaxInt64/uint64(ps) {
		return fmt.Errorf("the db's meta page says it has %d pages", s.hwm)
	}
	if s.root < 2 || s.root >= s.hwm {
		return fmt.Errorf("the db's meta page puts the root bucket on page %d, outside the db (2..%d)", s.root, s.hwm-1)
	}
	return nil
}

// page records the page pgid, whose first page is data.
func (s *Scanner) page(pgid uint64, data boltfmt.Page) {
	if pgid != uint64(len(s.pages)) {
		s.err = fmt.Errorf("scanned page %d after %d pages", pgid, len(s.pages)) // a bug, not the stream's fault
		return
	}
	s.pages = append(s.pages, scannedPage{})
	flags := data.Flags()
	if pgid < 2 || (flags != boltfmt.BranchPage && flags != boltfmt.LeafPage) {
		return
	}
	rec := &s.pages[pgid]
	rec.count = data.Count()
	if data.ID() != pgid {
		rec.kind = pageUnreadable
		return
	}
	rec.kind = pageBranch
	if flags == boltfmt.LeafPage {
		rec.kind = pageLeaf
	}
	overflow := data.Overflow()
	if overflow == 0 {
		s.parse(pgid, data)
		return
	}
	size := int64(overflow+1) * s.pageSize
	if pgid+overflow >= s.hwm || size > maxScannedSpan || s.spanned+size > maxScannedSpans {
		rec.kind = pageUnreadable
		return
	}
	span := &pageSpan{id: pgid, buf: make([]byte, 0, size)}
	span.buf = append(span.buf, data...)
	s.spans = append(s.spans, span)
	s.spanned += size
}

// feedSpans adds b, the next bytes of the stream, to the pages with overflow being received,
// and reads those that are complete.
func (s *Scanner) feedSpans(b []byte) {
	kept := s.spans[:0]
	for _, sp := range s.spans {
		sp.buf = append(sp.buf, b[:min(len(b), cap(sp.buf)-len(sp.buf))]...)
		if len(sp.buf) < cap(sp.buf) {
			kept = append(kept, sp)
			continue
		}
		s.parse(sp.id, sp.buf)
		s.spanned -= int64(cap(sp.buf))
	}
	clear(s.spans[len(kept):])
	s.spans = kept
}

// parse reads the elements of the branch or leaf page pgid (with its overflow pages).
func (s *Scanner) parse(pgid uint64, data boltfmt.Page) {
	rec := &s.pages[pgid]
	switch rec.kind {
	case pageBranch:
		kids, err := parseBranch(data, int(rec.count))
		if err != nil {
			rec.kind = pageUnreadable
			return
		}
		s.children[pgid] = kids
	case pageLeaf:
		leaf, err := parseLeaf(data, int(rec.count))
		if err != nil {
			rec.kind = pageUnreadable
			return
		}
		if leaf.last != nil {
			rec.lastLen = uint16(min(len(leaf.last), math.MaxUint16))
			copy(rec.last[:], leaf.last)
		}
		if len(leaf.named) > 0 {
			s.named[pgid] = leaf.named
		}
	}
}

// parseBranch returns the children of a branch page.
func parseBranch(data boltfmt.Page, count int) ([]uint64, error) {
	kids := make([]uint64, count)
	for i := range kids {
		_, child, err := data.BranchElement(i)
		if err != nil {
			return nil, fmt.Errorf("branch page: %w", err)
		}
		kids[i] = child
	}
	return kids, nil
}

// leafPage is what the search needs of a leaf page.
type leafPage struct {
	count int
	last  []byte // the newest key (aliases the page)
	named []namedElem
}

// parseLeaf reads a leaf page (a page of the file or a bucket's inline page).
func parseLeaf(data boltfmt.Page, count int) (leafPage, error) {
	l := leafPage{count: count}
	for i := range count {
		key, value, flags, err := data.LeafElement(i)
		if err != nil {
			return leafPage{}, fmt.Errorf("leaf page: %w", err)
		}
		if i == count-1 {
			l.last = key
		}
		for _, name := range scannedNames {
			if bytes.Equal(key, name) {
				ne := namedElem{key: string(key), flags: flags, tooLarge: len(value) > maxNamedValue}
				if !ne.tooLarge {
					ne.value = bytes.Clone(value)
				}
				l.named = append(l.named, ne)
			}
		}
	}
	return l, nil
}

// Revision returns the revision of the db the stream held.
func (s *Scanner) Revision() (int64, error) {
	if s.err != nil {
		return 0, fmt.Errorf("read the revision from the snapshot stream: %w", s.err)
	}
	if s.pageSize == 0 || s.off < int64(s.hwm)*s.pageSize {
		return 0, fmt.Errorf("read the revision from the snapshot stream: it ended after %d bytes, before the db's last page", s.off)
	}
	rev, err := s.revision()
	if err != nil {
		return 0, fmt.Errorf("read the revision from the snapshot stream: %w", err)
	}
	return rev, nil
}

func (s *Scanner) revision() (int64, error) {
	root := bucketRef{root: s.root}
	keys, ok, err := s.find(root, "key", true)
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, errors.New("the db has no \"key\" bucket: not an etcd v3 database")
	}
	rev := int64(1)
	last, err := s.lastKey(keys)
	if err != nil {
		return 0, err
	}
	if last != nil {
		main, err := mainRevision(last)
		if err != nil {
			return 0, fmt.Errorf("malformed revision key in the \"key\" bucket: %w", err)
		}
		rev = max(rev, main)
	}
	meta, ok, err := s.find(root, "meta", true)
	if err != nil || !ok {
		return rev, err
	}
	for _, name := range []string{"finishedCompactRev", "scheduledCompactRev"} {
		v, ok, err := s.find(meta, name, false)
		if err != nil {
			return 0, err
		}
		if !ok {
			continue
		}
		r, err := mainRevision(v.value)
		if err != nil {
			return 0, fmt.Errorf("malformed %s value in the \"meta\" bucket: %w", name, err)
		}
		rev = max(rev, r)
	}
	return rev, nil
}

// bucketRef is a bucket: its root page, or its inline page.
type bucketRef struct {
	root   uint64
	inline boltfmt.Page
	value  []byte // for a plain value found by find
}

// maxDepth bounds a search through the tree (bbolt trees are a few levels deep; a deeper one
// is a cycle in damaged data).
const maxDepth = 64

// find looks name up in bucket b: a sub-bucket (bucket true) or a plain value, as bbolt's
// Bucket and Get do.
func (s *Scanner) find(b bucketRef, name string, bucket bool) (bucketRef, bool, error) {
	match := func(elems []namedElem) (bucketRef, bool, error) {
		for _, e := range elems {
			if e.key != name || (e.flags&boltfmt.BucketLeafFlag != 0) != bucket {
				continue
			}
			if e.tooLarge {
				return bucketRef{}, false, fmt.Errorf("the value of %q is larger than the scan keeps", name)
			}
			if !bucket {
				return bucketRef{value: e.value}, true, nil
			}
			root, inline, err := boltfmt.Bucket(e.value)
			if err != nil {
				return bucketRef{}, false, fmt.Errorf("bucket %q %w", name, err)
			}
			return bucketRef{root: root, inline: inline}, true, nil
		}
		return bucketRef{}, false, nil
	}
	if b.root == 0 {
		leaf, err := parseLeaf(b.inline, int(b.inline.Count()))
		if err != nil {
			return bucketRef{}, false, err
		}
		return match(leaf.named)
	}
	var ref bucketRef
	found, err := s.walk(b.root, 0, map[uint64]bool{}, func(pgid uint64) (bool, error) {
		var found bool
		var err error
		ref, found, err = match(s.named[pgid])
		return found, err
	})
	return ref, found, err
}

// walk calls leaf for every leaf page under pgid, in key order, until it returns true. seen
// holds the pages the search reached.
func (s *Scanner) walk(pgid uint64, depth int, seen map[uint64]bool, leaf func(uint64) (bool, error)) (bool, error) {
	rec, err := s.reach(pgid, depth, seen)
	if err != nil {
		return false, err
	}
	if rec.kind == pageLeaf {
		return leaf(pgid)
	}
	for _, kid := range s.children[pgid] {
		if stop, err := s.walk(kid, depth+1, seen, leaf); stop || err != nil {
			return stop, err
		}
	}
	return false, nil
}

// lastKey returns the newest key of bucket b (nil when it is empty), as bbolt's Cursor.Last:
// the last key of the last leaf that is not empty. Only its first revBytesLen bytes are kept,
// unless it is shorter.
func (s *Scanner) lastKey(b bucketRef) ([]byte, error) {
	if b.root == 0 {
		leaf, err := parseLeaf(b.inline, int(b.inline.Count()))
		if err != nil {
			return nil, err
		}
		return leaf.last, nil
	}
	return s.lastUnder(b.root, 0, map[uint64]bool{})
}

func (s *Scanner) lastUnder(pgid uint64, depth int, seen map[uint64]bool) ([]byte, error) {
	rec, err := s.reach(pgid, depth, seen)
	if err != nil {
		return nil, err
	}
	if rec.kind == pageLeaf {
		if rec.count == 0 {
			return nil, nil
		}
		return rec.last[:min(int(rec.lastLen), revBytesLen)], nil
	}
	kids := s.children[pgid]
	for i := len(kids) - 1; i >= 0; i-- {
		last, err := s.lastUnder(kids[i], depth+1, seen)
		if last != nil || err != nil {
			return last, err
		}
	}
	return nil, nil
}

// reach is readable for a search that has reached the pages in seen and now pgid: in a bbolt
// tree every page has one parent, so a page reached twice is damage (followed, the paths
// through shared pages would multiply with every level).
func (s *Scanner) reach(pgid uint64, depth int, seen map[uint64]bool) (scannedPage, error) {
	if seen[pgid] {
		return scannedPage{}, fmt.Errorf("the tree reaches page %d twice: damaged", pgid)
	}
	seen[pgid] = true
	return s.readable(pgid, depth)
}

// readable returns the record of page pgid, reached at depth, when it was read as a branch or
// leaf page.
func (s *Scanner) readable(pgid uint64, depth int) (scannedPage, error) {
	switch {
	case depth > maxDepth:
		return scannedPage{}, errors.New("the db's tree is deeper than any bbolt tree: damaged")
	case pgid >= uint64(len(s.pages)):
		return scannedPage{}, fmt.Errorf("the tree refers to page %d beyond the db's %d pages", pgid, len(s.pages))
	}
	rec := s.pages[pgid]
	switch rec.kind {
	case pageBranch, pageLeaf:
		return rec, nil
	case pageUnreadable:
		return rec, fmt.Errorf("page %d of the tree cannot be read (damaged, or above the scan's limits)", pgid)
	}
	return rec, fmt.Errorf("the tree refers to page %d, which is not a branch or leaf page", pgid)
}
