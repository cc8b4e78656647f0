package snapstore

import (
	"errors"
	"io"
)

// splitBufSize is the read buffer of a trailerSplitter.
const splitBufSize = 64<<10 + trailerSize

// trailerSplitter passes on all of src except its last trailerSize bytes,
// which it holds back: the decompressor never sees the trailer, and after
// io.EOF the trailer is available from trailer().
type trailerSplitter struct {
	src      io.Reader
	buf      []byte // pending bytes are buf[off:end]
	off, end int
	eof      bool  // src returned io.EOF
	err      error // src failed
}

// Read returns bytes that are known not to belong to the last trailerSize
// bytes of src.
func (t *trailerSplitter) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		if pending := t.end - t.off; pending > trailerSize {
			n := copy(p, t.buf[t.off:t.end-trailerSize])
			t.off += n
			return n, nil
		}
		if t.eof {
			return 0, io.EOF
		}
		if t.err != nil {
			return 0, t.err
		}
		// At most trailerSize bytes are pending: move them to the front.
		t.end = copy(t.buf, t.buf[t.off:t.end])
		t.off = 0
		n, err := t.src.Read(t.buf[t.end:])
		t.end += n
		switch {
		case errors.Is(err, io.EOF):
			t.eof = true
		case err != nil:
			t.err = err
		}
	}
}

// trailer returns the held-back bytes: after io.EOF, the last (up to)
// trailerSize bytes of src.
func (t *trailerSplitter) trailer() []byte {
	return t.buf[t.off:t.end]
}
