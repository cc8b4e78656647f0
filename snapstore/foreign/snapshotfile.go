package foreign

import (
	"bufio"
	"bytes"
	"compress/flate"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
)

// SnapshotFormat is how a snapshot file holds its db.
type SnapshotFormat int

// The snapshot file formats etcdbr reads.
const (
	// PlainDB is the bbolt db itself, as etcdctl snapshot save, k3s and rke2 write it (with the
	// SHA-256 etcd's Maintenance API appends; a db copied from a data dir has none).
	PlainDB SnapshotFormat = iota
	// GzipDB is a plain db compressed with gzip (gzip snapshot.db).
	GzipDB
	// ZipDB is a zip archive of one plain db, as k3s and rke2 write with
	// --etcd-snapshot-compress.
	ZipDB
)

// String names the format.
func (f SnapshotFormat) String() string {
	switch f {
	case PlainDB:
		return "db"
	case GzipDB:
		return "gzip"
	case ZipDB:
		return "zip"
	}
	return fmt.Sprintf("format(%d)", int(f))
}

// SniffLen is how many bytes of a snapshot file SniffSnapshot needs.
const SniffLen = 32

// boltMagic is the magic number of bbolt's meta page, 16 bytes into the file (after the
// page header), in the byte order of the host that wrote it.
const boltMagic = 0xED0CDAED

// SniffSnapshot tells the format of a snapshot file from its first SniffLen bytes (fewer
// when the file is shorter).
func SniffSnapshot(head []byte) (SnapshotFormat, error) {
	switch {
	case len(head) >= 20 && (binary.LittleEndian.Uint32(head[16:]) == boltMagic || binary.BigEndian.Uint32(head[16:]) == boltMagic):
		return PlainDB, nil
	case len(head) >= 2 && head[0] == 0x1f && head[1] == 0x8b:
		return GzipDB, nil
	case len(head) >= 4 && bytes.Equal(head[:4], []byte("PK\x03\x04")):
		return ZipDB, nil
	case len(head) >= 4 && bytes.Equal(head[:4], []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return 0, fmt.Errorf("%w: a zstd stream: an etcdbr object (give the store it belongs to) or a zstd-compressed file "+
			"(decompress it with zstd -d first)", ErrMalformed)
	}
	return 0, fmt.Errorf("%w: not an etcd snapshot: neither a bbolt db (as etcdctl snapshot save writes it), "+
		"a gzip file nor a zip archive (k3s, rke2 --etcd-snapshot-compress)", ErrMalformed)
}

// OpenSnapshot returns the db (with whatever followed it, etcd's SHA-256) of a snapshot file
// of format f, decompressing it while it streams; corrupt compressed data is reported by
// the returned reader's errors, which wrap ErrChecksum when a checksum of the compression
// fails. The reader does not close r.
func OpenSnapshot(r io.Reader, f SnapshotFormat) (io.ReadCloser, error) {
	switch f {
	case PlainDB:
		return io.NopCloser(r), nil
	case GzipDB:
		return Decompress(r, Gzip)
	case ZipDB:
		return openZipEntry(r)
	}
	return nil, fmt.Errorf("unknown snapshot format %v", f)
}

// Zip archives, as far as reading the first entry as a stream needs (APPNOTE.TXT 4.3.7, 4.3.9).
const (
	zipLocalSig      = 0x04034b50
	zipDescriptorSig = 0x08074b50
	zipLocalLen      = 30
	zipFlagEncrypted = 0x1
	zipFlagDesc      = 0x8
	zipStore         = 0
	zipDeflate       = 8
)

// openZipEntry reads the first entry of a zip archive as it streams: its local header, then
// its data (deflated, or stored with its size in the header), checked against its CRC-32
// and size at the end (from the header, or from the data descriptor after the data).
func openZipEntry(r io.Reader) (io.ReadCloser, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	var h [zipLocalLen]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		return nil, fmt.Errorf("%w: zip local header: %w", ErrMalformed, err)
	}
	le := binary.LittleEndian
	if le.Uint32(h[0:]) != zipLocalSig {
		return nil, fmt.Errorf("%w: not a zip local file header", ErrMalformed)
	}
	flags, method := le.Uint16(h[6:]), le.Uint16(h[8:])
	z := &zipEntry{br: br, crc: crc32.NewIEEE(), wantCRC: le.Uint32(h[14:]), wantSize: uint64(le.Uint32(h[22:])),
		desc: flags&zipFlagDesc != 0}
	csize := uint64(le.Uint32(h[18:]))
	nameLen, extraLen := int(le.Uint16(h[26:])), int(le.Uint16(h[28:]))
	if _, err := io.CopyN(io.Discard, br, int64(nameLen+extraLen)); err != nil {
		return nil, fmt.Errorf("%w: zip local header: %w", ErrMalformed, err)
	}
	switch {
	case flags&zipFlagEncrypted != 0:
		return nil, fmt.Errorf("%w: the zip entry is encrypted: decrypt it first", ErrMalformed)
	case method == zipDeflate:
		z.data = flate.NewReader(br)
	case method == zipStore && !z.desc && csize != 0xFFFFFFFF:
		z.data = io.NopCloser(io.LimitReader(br, int64(csize)))
	default:
		return nil, fmt.Errorf("%w: zip compression method %d (with flags %#x) is not read here: unzip the archive first", ErrMalformed, method, flags)
	}
	return z, nil
}

// zipEntry is the data of a zip entry, checked at its end.
type zipEntry struct {
	br       *bufio.Reader
	data     io.ReadCloser
	crc      hash.Hash32
	n        uint64
	wantCRC  uint32
	wantSize uint64
	desc     bool // the CRC and sizes follow the data
	err      error
}

func (z *zipEntry) Read(p []byte) (int, error) {
	if z.err != nil {
		return 0, z.err
	}
	n, err := z.data.Read(p)
	z.crc.Write(p[:n])
	z.n += uint64(n)
	switch {
	case errors.Is(err, io.EOF):
		err = z.check()
	case err != nil:
		var ce flate.CorruptInputError
		if errors.As(err, &ce) || errors.Is(err, io.ErrUnexpectedEOF) {
			err = fmt.Errorf("%w: the zip entry's deflated data is damaged: %v", ErrChecksum, err)
		}
	}
	z.err = err
	return n, err
}

// check compares the CRC-32 and the size with the header's, or the data descriptor's.
func (z *zipEntry) check() error {
	if z.desc {
		// The descriptor: an optional signature, the CRC-32, then the sizes (4 bytes each, or 8
		// in a zip64 archive: told apart by which one matches what was read).
		var d [24]byte
		n, err := io.ReadFull(z.br, d[:])
		if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
			return err
		}
		b := d[:n]
		if len(b) >= 4 && binary.LittleEndian.Uint32(b) == zipDescriptorSig {
			b = b[4:]
		}
		if len(b) < 12 {
			return fmt.Errorf("%w: the zip entry's data descriptor is cut off", ErrChecksum)
		}
		z.wantCRC = binary.LittleEndian.Uint32(b)
		if len(b) >= 20 && binary.LittleEndian.Uint64(b[12:]) == z.n {
			z.wantSize = z.n
		} else {
			z.wantSize = uint64(binary.LittleEndian.Uint32(b[8:]))
		}
	}
	if z.wantSize != z.n&0xFFFFFFFF && z.wantSize != z.n {
		return fmt.Errorf("%w: the zip entry holds %d bytes, its header says %d", ErrChecksum, z.n, z.wantSize)
	}
	if sum := z.crc.Sum32(); sum != z.wantCRC {
		return fmt.Errorf("%w: the zip entry's CRC-32 is %08x, its header says %08x", ErrChecksum, sum, z.wantCRC)
	}
	return io.EOF
}

func (z *zipEntry) Close() error { return z.data.Close() }
