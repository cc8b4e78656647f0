package snapstore

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"

	"filippo.io/age"
	"github.com/klauspost/compress/zstd"
	"gocloud.dev/gcerrors"

	"github.com/etcdbr/etcdbr/internal/progress"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// Open returns the payload of the object snap.Key (or, when Key is empty,
// the name built from snap's fields), decrypted and decompressed while it
// streams. The payload is verified against the object's trailer (length and
// SHA-256) as it streams: only the Read that returns io.EOF vouches for the
// whole payload, so read to io.EOF before using it. Corruption is reported
// by an error wrapping ErrCorrupt that names the key; a missing object by
// ErrNotFound; an .age object nobody here can decrypt by ErrNoIdentity.
// Transient failures of the store are retried, and a stream that breaks
// is resumed from where it stopped (see Options.Retry); errors reading from
// the store that persist (network, cancelled ctx) are returned as they are.
// The caller must Close the reader.
func (s *Store) Open(ctx context.Context, snap catalog.Snapshot) (io.ReadCloser, error) {
	r, err := s.OpenReader(ctx, snap)
	if err != nil {
		return nil, err // not a nil *Reader in an interface
	}
	return r, nil
}

// OpenReader is Open returning the Reader itself, for its HeadSum and HashAside.
func (s *Store) OpenReader(ctx context.Context, snap catalog.Snapshot) (*Reader, error) {
	return s.OpenReaderProgress(ctx, snap, nil)
}

// OpenReaderProgress is OpenReader that counts the stored bytes it reads into p (the
// object's size in all, once read to its end; a nil p counts nothing). They are counted
// from the first byte: the decoders read ahead as soon as they are made.
func (s *Store) OpenReaderProgress(ctx context.Context, snap catalog.Snapshot, p *progress.Progress) (*Reader, error) {
	key, err := s.keyOf(snap)
	if err != nil {
		return nil, fmt.Errorf("read from %q: %w", s.url, err)
	}
	if s.foreign != nil {
		return s.openForeign(ctx, key, p)
	}
	parsed, _ := catalog.ParseName(key)
	if parsed.Encrypted && len(s.opts.Identities) == 0 {
		return nil, fmt.Errorf("read %q from %q: it is encrypted with age and no identity is configured: %w", key, s.url, ErrNoIdentity)
	}
	body, err := openResuming(ctx, bucketRange(s.bucket, key), key, s.url, s.opts.Retry, s.opts.Log)
	if err != nil {
		if gcerrors.Code(err) == gcerrors.NotFound {
			return nil, fmt.Errorf("read %q from %q: %w", key, s.url, ErrNotFound)
		}
		return nil, fmt.Errorf("read %q from %q: %w", key, s.url, err)
	}
	r, err := newPayloadReader(key, s.url, body, parsed.Encrypted, s.opts.Identities, p)
	if err != nil {
		_ = body.Close()
		return nil, err
	}
	return r, nil
}

// newPayloadReader builds the reading pipeline over an object's body.
func newPayloadReader(key, url string, body io.ReadCloser, encrypted bool, identities []age.Identity, p *progress.Progress) (*Reader, error) {
	r := &Reader{key: key, url: url, body: body, src: &sourceReader{r: body, progress: p}, hash: sha256.New()}
	r.lag = &TailHolder{W: r.hash, Keep: headTail}
	var compressed io.Reader = r.src
	if encrypted {
		plain, err := age.Decrypt(r.src, identities...)
		if err != nil {
			var noMatch *age.NoIdentityMatchError
			if errors.As(err, &noMatch) {
				return nil, fmt.Errorf("read %q from %q: %w: %w", key, url, ErrNoIdentity, err)
			}
			return nil, r.classify("decrypt", err)
		}
		compressed = plain
	}
	r.split = &trailerSplitter{src: compressed, buf: make([]byte, splitBufSize)}
	dec, err := newDecoder(r.split)
	if err != nil {
		return nil, fmt.Errorf("read %q from %q: %w", key, url, err)
	}
	r.dec, r.payload = dec, dec
	return r, nil
}

// openForeign opens an object of another tool's store: its payload as the store's
// foreignSource makes it, read through the same Reader (HeadSum, HashAside, progress).
// There is no trailer: the payload vouches for what the other tool's format can vouch for
// (see foreignSource.payload), and its errors are classified as the Reader's are.
func (s *Store) openForeign(ctx context.Context, key string, p *progress.Progress) (*Reader, error) {
	snap, ok := s.foreign.parse(key)
	if !ok {
		return nil, fmt.Errorf("read from %q: %q is not the name of a backup object", s.url, key)
	}
	body, err := openResuming(ctx, bucketRange(s.bucket, key), key, s.url, s.opts.Retry, s.opts.Log)
	if err != nil {
		if gcerrors.Code(err) == gcerrors.NotFound {
			return nil, fmt.Errorf("read %q from %q: %w", key, s.url, ErrNotFound)
		}
		return nil, fmt.Errorf("read %q from %q: %w", key, s.url, err)
	}
	r := &Reader{key: key, url: s.url, body: body, src: &sourceReader{r: body, progress: p}, hash: sha256.New(), foreign: true}
	r.lag = &TailHolder{W: r.hash, Keep: headTail}
	payload, err := s.foreign.payload(snap, r.src)
	if err != nil {
		_ = body.Close()
		return nil, r.classify("decode", err)
	}
	r.payload, r.closePayload = payload, payload
	return r, nil
}

// Reader is an object's payload as Open returns it: the pipeline blob -> [age] ->
// trailerSplitter -> zstd -> sha256, verifying the trailer at the end.
type Reader struct {
	key, url string
	body     io.ReadCloser
	src      *sourceReader
	split    *trailerSplitter
	dec      *zstd.Decoder // nil for a foreign object
	payload  io.Reader     // what Read reads: dec, or a foreign object's payload
	// foreign marks an object of another tool's store (no trailer); closePayload closes its
	// payload.
	foreign      bool
	closePayload io.Closer
	hash         hash.Hash   // of the payload but its last headTail bytes (held back by lag)
	lag          *TailHolder // writes to hash
	headSum      []byte      // set at the end: hash of the payload but its last headTail bytes
	aside        *hashAside  // set by HashAside
	length       uint64
	err          error // sticky: io.EOF after a verified end, or the failure
	closed       bool
}

// Read returns decompressed payload bytes; at the end it returns io.EOF
// only if the payload matches the trailer.
func (r *Reader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if r.closed {
		return 0, fmt.Errorf("read %q from %q: reader is closed", r.key, r.url)
	}
	n, err := r.payload.Read(p)
	if r.aside != nil {
		r.aside.add(p[:n])
	} else {
		r.lag.Write(p[:n]) // never fails: hashes do not
	}
	r.length += uint64(n)
	switch {
	case err == nil:
		return n, nil
	case errors.Is(err, io.EOF):
		r.aside.finish()
		err = r.verify()
	default:
		err = r.classify("decompress", err)
	}
	r.err = err
	return n, err
}

// headTail is how many bytes at the payload's end HeadSum leaves out: a full snapshot's
// payload is the db followed by its SHA-256, as etcd sends it.
const headTail = sha256.Size

// HashAside makes the reader hash the payload on a goroutine of its own, on a copy of what
// it reads, instead of on the goroutine that calls Read: for a large payload read where
// another core is free (hashing is about a third of reading a full snapshot). The payload is
// verified the same way, before the Read that returns io.EOF. Call it before the first Read.
func (r *Reader) HashAside() {
	if r.aside != nil || r.length > 0 || r.err != nil {
		return
	}
	a := &hashAside{work: make(chan []byte, asideBuffers), free: make(chan []byte, asideBuffers), done: make(chan struct{})}
	for range asideBuffers {
		a.free <- make([]byte, 0, asideBufferSize)
	}
	a.cur = <-a.free
	go func() {
		defer close(a.done)
		for b := range a.work {
			r.lag.Write(b)
			a.free <- b[:0]
		}
	}()
	r.aside = a
}

// Hashing aside: at most asideBuffers buffers of asideBufferSize bytes wait for the hash.
const (
	asideBuffers    = 4
	asideBufferSize = 1 << 20
)

// hashAside hands what the reader read over to the goroutine that hashes it (nil: none).
type hashAside struct {
	cur    []byte // being filled
	work   chan []byte
	free   chan []byte
	done   chan struct{}
	closed bool
}

// add copies b to be hashed.
func (a *hashAside) add(b []byte) {
	for len(b) > 0 {
		k := min(len(b), cap(a.cur)-len(a.cur))
		a.cur = append(a.cur, b[:k]...)
		b = b[k:]
		if len(a.cur) == cap(a.cur) {
			a.work <- a.cur
			a.cur = <-a.free
		}
	}
}

// finish hashes what is left and waits until everything was hashed.
func (a *hashAside) finish() {
	if a == nil || a.closed {
		return
	}
	a.closed = true
	if len(a.cur) > 0 {
		a.work <- a.cur
	}
	close(a.work)
	<-a.done
}

// HeadSum returns the SHA-256 of the payload without its last 32 bytes, once Read returned
// io.EOF (nil before): for a full snapshot, the hash of the db, which etcd appends to it, so
// that a reader checks etcd's hash without hashing the db a second time.
func (r *Reader) HeadSum() []byte {
	if r.err != io.EOF {
		return nil
	}
	return r.headSum
}

// verify checks the payload against the trailer once the decoder is done.
func (r *Reader) verify() error {
	if err := r.src.failure(); err != nil {
		return r.classify("read", err)
	}
	if r.foreign {
		r.headSum = r.hash.Sum(nil)
		return io.EOF
	}
	if !r.split.eof {
		return r.corrupt("data after the last zstd frame")
	}
	t, err := parseTrailer(r.split.trailer())
	if err != nil {
		return r.corrupt(err.Error())
	}
	if t.length != r.length {
		return r.corrupt(fmt.Sprintf("payload is %d bytes, trailer says %d", r.length, t.length))
	}
	r.headSum = r.hash.Sum(nil)
	r.hash.Write(r.lag.Tail())
	var sum [sha256.Size]byte
	r.hash.Sum(sum[:0])
	if sum != t.sum {
		return r.corrupt(fmt.Sprintf("payload sha256 %x, trailer says %x", sum, t.sum))
	}
	return io.EOF
}

// classify turns a pipeline error into a store read error when the store
// failed, and into a corruption error otherwise.
func (r *Reader) classify(op string, err error) error {
	if srcErr := r.src.failure(); srcErr != nil {
		if gcerrors.Code(srcErr) == gcerrors.NotFound { // deleted while it was read
			return fmt.Errorf("read %q from %q: %w: %w", r.key, r.url, ErrNotFound, srcErr)
		}
		return fmt.Errorf("read %q from %q: %w", r.key, r.url, srcErr)
	}
	if r.foreign && errors.Is(err, ErrMalformedDelta) {
		return fmt.Errorf("read %q from %q: %w", r.key, r.url, err)
	}
	return fmt.Errorf("read %q from %q: %w: %s: %w", r.key, r.url, ErrCorrupt, op, err)
}

func (r *Reader) corrupt(detail string) error {
	return fmt.Errorf("read %q from %q: %w: %s", r.key, r.url, ErrCorrupt, detail)
}

// Close stops decoding and closes the object. It may be called before the
// end of the payload and more than once.
func (r *Reader) Close() error {
	if r.closed {
		return nil
	}
	r.closed = true
	r.aside.finish()
	if r.dec != nil {
		r.dec.Close()
	}
	if r.closePayload != nil {
		_ = r.closePayload.Close()
	}
	if err := r.body.Close(); err != nil {
		return fmt.Errorf("close %q from %q: %w", r.key, r.url, err)
	}
	return nil
}

// sourceReader remembers the first error the store returned, so that store
// failures are not mistaken for corruption. The whole pipeline runs on the
// goroutine that calls Reader.Read.
type sourceReader struct {
	r        io.Reader
	err      error
	progress *progress.Progress // counts the stored bytes read (nil: nobody watches)
}

func (s *sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	s.progress.AddBytes(int64(n))
	if err != nil && !errors.Is(err, io.EOF) && s.err == nil {
		s.err = err
	}
	return n, err
}

func (s *sourceReader) failure() error {
	return s.err
}
