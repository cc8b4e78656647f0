package foreign

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

// EBREvent is one event of an etcd-backup-restore delta snapshot: a watch event as etcd sent
// it and when etcd-backup-restore received it.
type EBREvent struct {
	Event *mvccpb.Event
	Time  time.Time
}

// ebrEvent is an event as etcd-backup-restore writes it: clientv3.Event (mvccpb.Event) in
// encoding/json's form (keys and values base64, the event type a number, zero fields left
// out) and the time in RFC 3339.
type ebrEvent struct {
	EtcdEvent *mvccpb.Event `json:"etcdEvent"`
	Time      time.Time     `json:"time"`
}

// EBRDeltaReader reads the payload of an etcd-backup-restore delta snapshot (decompressed):
// a JSON array of events followed by the 32-byte SHA-256 of the JSON text. It holds one event
// at a time, and verifies the SHA-256 at the end.
type EBRDeltaReader struct {
	src     *holdBack
	dec     *json.Decoder
	started bool
	n       int
	err     error // sticky
}

// NewEBRDeltaReader reads the payload r.
func NewEBRDeltaReader(r io.Reader) *EBRDeltaReader {
	src := &holdBack{r: r, keep: sha256.Size, h: sha256.New()}
	return &EBRDeltaReader{src: src, dec: json.NewDecoder(src)}
}

// Next returns the next event. After the last one it reads the payload to its end and
// returns io.EOF if the SHA-256 matches; a mismatch wraps ErrChecksum, and content that is
// not an array of events wraps ErrMalformed (unless the SHA-256 fails too: then the error
// wraps ErrChecksum, since damage explains the rest). Errors of the source are returned as
// they are. Every error is final.
func (d *EBRDeltaReader) Next() (EBREvent, error) {
	if d.err != nil {
		return EBREvent{}, d.err
	}
	ev, err := d.next()
	if err != nil {
		d.err = d.fail(err)
		return EBREvent{}, d.err
	}
	return ev, nil
}

func (d *EBRDeltaReader) next() (EBREvent, error) {
	if !d.started {
		d.started = true
		tok, err := d.dec.Token()
		if err != nil {
			return EBREvent{}, d.jsonErr("the start of the event array", err)
		}
		if tok != json.Delim('[') {
			return EBREvent{}, fmt.Errorf("%w: the payload is not a JSON array of events (starts with %v)", ErrMalformed, tok)
		}
	}
	if !d.dec.More() {
		return EBREvent{}, d.end()
	}
	var e ebrEvent
	if err := d.dec.Decode(&e); err != nil {
		return EBREvent{}, d.jsonErr(fmt.Sprintf("event %d", d.n), err)
	}
	if e.EtcdEvent == nil || e.EtcdEvent.Kv == nil {
		return EBREvent{}, fmt.Errorf("%w: event %d has no etcdEvent with a key-value", ErrMalformed, d.n)
	}
	d.n++
	return EBREvent{Event: e.EtcdEvent, Time: e.Time}, nil
}

// end reads the closing bracket and the rest of the payload, and compares the SHA-256.
func (d *EBRDeltaReader) end() error {
	if tok, err := d.dec.Token(); err != nil {
		return d.jsonErr("the end of the event array", err)
	} else if tok != json.Delim(']') {
		return fmt.Errorf("%w: unexpected %v after event %d", ErrMalformed, tok, d.n)
	}
	rest, err := io.ReadAll(io.MultiReader(d.dec.Buffered(), d.src))
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return fmt.Errorf("%w: %d bytes after the event array", ErrMalformed, len(rest))
	}
	if err := d.src.verify(); err != nil {
		return err
	}
	if d.n == 0 {
		return fmt.Errorf("%w: the delta holds no events", ErrMalformed)
	}
	return io.EOF
}

// jsonErr reports a JSON decoding error: the source's own error as it is, else malformed.
func (d *EBRDeltaReader) jsonErr(what string, err error) error {
	if d.src.err != nil {
		return d.src.err
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: %s: the payload ends early", ErrMalformed, what)
	}
	return fmt.Errorf("%w: %s: %v", ErrMalformed, what, err)
}

// fail makes err final. A malformed payload may be a damaged one: the rest is read, and a
// failing SHA-256 is reported instead.
func (d *EBRDeltaReader) fail(err error) error {
	if errors.Is(err, ErrMalformed) {
		if _, rerr := io.Copy(io.Discard, d.src); rerr != nil {
			return rerr
		}
		if verr := d.src.verify(); verr != nil {
			return fmt.Errorf("%w (the payload did not decode: %v)", verr, err)
		}
	}
	return err
}

// Events returns how many events were read so far.
func (d *EBRDeltaReader) Events() int { return d.n }

// holdBack reads r but its last keep bytes, hashing what it returns; at r's end the held
// bytes are the recorded checksum.
type holdBack struct {
	r    io.Reader
	keep int
	h    hash.Hash
	buf  []byte // bytes read from r, not returned yet; the last keep of them are held
	eof  bool
	err  error // r's error other than io.EOF
}

func (b *holdBack) Read(p []byte) (int, error) {
	for !b.eof && len(b.buf) <= b.keep {
		if b.buf == nil {
			b.buf = make([]byte, 0, holdBackBuffer)
		}
		if cap(b.buf)-len(b.buf) < holdBackBuffer/2 { // move what is left to the front
			b.buf = append(make([]byte, 0, holdBackBuffer+len(b.buf)), b.buf...)
		}
		n, err := b.r.Read(b.buf[len(b.buf):cap(b.buf)])
		b.buf = b.buf[:len(b.buf)+n]
		if errors.Is(err, io.EOF) {
			b.eof = true
		} else if err != nil {
			b.err = err
			return 0, err
		}
	}
	avail := len(b.buf) - b.keep
	if avail <= 0 {
		return 0, io.EOF
	}
	n := copy(p, b.buf[:avail])
	b.h.Write(p[:n])
	b.buf = b.buf[n:]
	return n, nil
}

// holdBackBuffer is how much holdBack reads from its source at a time.
const holdBackBuffer = 64 << 10

// verify compares the hash of what was returned with the held bytes, once r ended.
func (b *holdBack) verify() error {
	if !b.eof {
		return errors.New("verify before the end of the payload")
	}
	if len(b.buf) < b.keep {
		return fmt.Errorf("%w: the payload is %d bytes, too short to end with its SHA-256", ErrChecksum, len(b.buf))
	}
	if sum := b.h.Sum(nil); !bytes.Equal(sum, b.buf) {
		return fmt.Errorf("%w: the events hash to %x, the SHA-256 after them says %x", ErrChecksum, sum, b.buf)
	}
	return nil
}
