package foreign

import (
	"bufio"
	"compress/gzip"
	"compress/lzw"
	"compress/zlib"
	"fmt"
	"io"
)

// Compression is how an object of another tool is compressed.
type Compression int

// The compressions etcd-backup-restore writes (its --compression-policy), and none.
const (
	None Compression = iota
	Gzip
	Zlib
	LZW
)

// String names the compression as etcd-backup-restore's --compression-policy does ("none"
// when there is none).
func (c Compression) String() string {
	switch c {
	case None:
		return "none"
	case Gzip:
		return "gzip"
	case Zlib:
		return "zlib"
	case LZW:
		return "lzw"
	}
	return fmt.Sprintf("compression(%d)", int(c))
}

// suffix is the extension etcd-backup-restore gives objects of compression c.
func (c Compression) suffix() string {
	switch c {
	case Gzip:
		return ".gz"
	case Zlib:
		return ".zlib"
	case LZW:
		return ".Z"
	}
	return ""
}

// lzwLiteralWidth is the literal width etcd-backup-restore's lzw compression uses, with
// LSB order.
const lzwLiteralWidth = 8

// Decompress returns r decompressed as c says. gzip and zlib check their own checksums
// (CRC-32, Adler-32) at the end of the stream; lzw has none. The returned reader does not
// close r.
func Decompress(r io.Reader, c Compression) (io.ReadCloser, error) {
	switch c {
	case None:
		return io.NopCloser(r), nil
	case Gzip:
		zr, err := gzip.NewReader(bufio.NewReaderSize(r, 64<<10))
		if err != nil {
			return nil, fmt.Errorf("%w: gzip header: %w", ErrMalformed, err)
		}
		return zr, nil
	case Zlib:
		zr, err := zlib.NewReader(bufio.NewReaderSize(r, 64<<10))
		if err != nil {
			return nil, fmt.Errorf("%w: zlib header: %w", ErrMalformed, err)
		}
		return zr, nil
	case LZW:
		return lzw.NewReader(bufio.NewReaderSize(r, 64<<10), lzw.LSB, lzwLiteralWidth), nil
	}
	return nil, fmt.Errorf("unknown compression %v", c)
}
