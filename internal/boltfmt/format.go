package boltfmt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"math/bits"
)

// bbolt's on-disk format (go.etcd.io/bbolt/internal/common, format version 2, unchanged since
// bolt's).
const (
	Magic   = 0xED0CDAED
	Version = 2

	PageHeaderSize   = 16 // id u64, flags u16, count u16, overflow u32
	ElementSize      = 16 // branch: pos u32, ksize u32, pgid u64; leaf: flags u32, pos u32, ksize u32, vsize u32
	BucketHeaderSize = 16 // root pgid u64 (0: inline, the page follows), sequence u64
	MetaSize         = 64 // magic, version, page size, flags u32; root bucket header; freelist, pgid, txid, checksum u64

	// Page types (Page.Flags).
	BranchPage   = 0x01
	LeafPage     = 0x02
	MetaPage     = 0x04
	FreelistPage = 0x10

	// BucketLeafFlag marks a leaf element whose value is a bucket (a bucket header).
	BucketLeafFlag = 0x01

	// NoFreelist is Meta.Freelist when the freelist is not persisted (etcd's default).
	NoFreelist = ^uint64(0)
)

// order is the byte order of every integer in a bbolt file: the native order of the host.
//
// bbolt has no byte order of its own: it maps the file into memory and casts its pages to Go
// structs, so a file holds the integers of the host that wrote it, and bbolt opens only files
// of its own host's order (in the other order the magic does not match, and the file is
// "invalid"). Reading in the native order reads exactly the files bbolt on this host reads:
// little-endian on amd64 and arm64 (etcd's tier-1 platforms, and where etcdbr is built and
// tested), big-endian on s390x (a tier-3 platform of etcd). A fixed order would misread every
// local db on a host of the other order, where bbolt reads them fine. It is checked once per
// file, on the meta page: a file written in the other order is refused there, saying so
// (Meta.Validate), before any other field is used; neither bbolt nor etcdutl's restore on this
// host could open it either. That is also what happens to a snapshot streamed from a member on
// a host of the other order.
var order = binary.NativeEndian

// Meta is a bbolt meta page (pages 0 and 1).
type Meta struct {
	Magic, Version, PageSize uint32
	Root                     uint64 // the root bucket's page
	Freelist                 uint64 // NoFreelist when the freelist is not persisted
	PageCount                uint64 // the high water mark: pages [0, PageCount) are in use (bbolt's pgid)
	TxID                     uint64
	Checksum                 uint64 // as stored
	Sum                      uint64 // as computed over the page
}

// ParseMeta reads the meta page that page starts with (its header and meta: at least
// PageHeaderSize+MetaSize bytes).
func ParseMeta(page []byte) Meta {
	m := page[PageHeaderSize : PageHeaderSize+MetaSize]
	h := fnv.New64a()
	h.Write(m[:MetaSize-8])
	return Meta{
		Magic:     order.Uint32(m[0:]),
		Version:   order.Uint32(m[4:]),
		PageSize:  order.Uint32(m[8:]),
		Root:      order.Uint64(m[16:]),
		Freelist:  order.Uint64(m[32:]),
		PageCount: order.Uint64(m[40:]),
		TxID:      order.Uint64(m[48:]),
		Checksum:  order.Uint64(m[56:]),
		Sum:       h.Sum64(),
	}
}

// Validate checks what bbolt checks of a meta page: the magic (and with it the byte order),
// the format version and the checksum.
func (m Meta) Validate() error {
	switch {
	case m.Magic != Magic && bits.ReverseBytes32(m.Magic) == Magic:
		return errors.New("written by a host of the other byte order (bbolt writes its host's order): bbolt on this host cannot open it")
	case m.Magic != Magic:
		return fmt.Errorf("invalid magic %#x: not a bbolt db", m.Magic)
	case m.Version != Version:
		return fmt.Errorf("unsupported bbolt format version %d (want %d)", m.Version, Version)
	case m.Checksum != m.Sum:
		return errors.New("checksum mismatch")
	}
	return nil
}

// PlausiblePageSize reports whether n can be the page size of a bbolt db: a power of two from
// 512 bytes to 1 MiB.
func PlausiblePageSize(n int64) bool {
	return n >= 512 && n <= 1<<20 && n&(n-1) == 0
}

// Page is a branch, leaf or freelist page with its overflow pages, or a bucket's inline page:
// at least PageHeaderSize bytes.
type Page []byte

// ID is the page's id, as its header says.
func (p Page) ID() uint64 { return order.Uint64(p[0:]) }

// Flags is the page's type (BranchPage, LeafPage, FreelistPage, ...).
func (p Page) Flags() uint16 { return order.Uint16(p[8:]) }

// Count is the number of elements of a branch or leaf page (0xFFFF on a freelist page: the
// count is then the first u64 of the body).
func (p Page) Count() uint16 { return order.Uint16(p[10:]) }

// Overflow is the number of pages after the first that the page takes.
func (p Page) Overflow() uint64 { return uint64(order.Uint32(p[12:])) }

// LeafElement returns the key, value and flags (BucketLeafFlag) of element i of a leaf page,
// checking that they lie inside the page.
func (p Page) LeafElement(i int) (key, value []byte, flags uint32, err error) {
	key, value, flags, _, err = p.element(i, true)
	return key, value, flags, err
}

// BranchElement returns the key and the child page of element i of a branch page, checking
// that they lie inside the page.
func (p Page) BranchElement(i int) (key []byte, child uint64, err error) {
	key, _, _, child, err = p.element(i, false)
	return key, child, err
}

func (p Page) element(i int, leaf bool) (key, value []byte, flags uint32, child uint64, err error) {
	off := PageHeaderSize + i*ElementSize
	if i < 0 || off+ElementSize > len(p) {
		return nil, nil, 0, 0, fmt.Errorf("element %d lies outside the page", i)
	}
	e := p[off : off+ElementSize]
	var pos, ksize, vsize uint64
	if leaf {
		flags = order.Uint32(e[0:])
		pos, ksize, vsize = uint64(order.Uint32(e[4:])), uint64(order.Uint32(e[8:])), uint64(order.Uint32(e[12:]))
	} else {
		pos, ksize = uint64(order.Uint32(e[0:])), uint64(order.Uint32(e[4:]))
		child = order.Uint64(e[8:])
	}
	start := uint64(off) + pos
	if end := start + ksize + vsize; end > uint64(len(p)) {
		return nil, nil, 0, 0, fmt.Errorf("element %d (key %d bytes, value %d bytes at offset %d) runs past the page", i, ksize, vsize, start)
	}
	return p[start : start+ksize], p[start+ksize : start+ksize+vsize], flags, child, nil
}

// Bucket reads a bucket header, the value of a leaf element with BucketLeafFlag: the bucket's
// root page, or 0 and the bucket's inline page (a leaf page stored after the header).
func Bucket(v []byte) (root uint64, inline Page, err error) {
	if len(v) < BucketHeaderSize {
		return 0, nil, fmt.Errorf("has a %d-byte header", len(v))
	}
	if root = order.Uint64(v); root != 0 {
		return root, nil, nil
	}
	inline = v[BucketHeaderSize:]
	if len(inline) < PageHeaderSize {
		return 0, nil, fmt.Errorf("is inline in %d bytes", len(inline))
	}
	if f := inline.Flags(); f != LeafPage {
		return 0, nil, fmt.Errorf("is inline with page type %#x", f)
	}
	return 0, inline, nil
}
