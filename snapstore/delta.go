package snapstore

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

// A delta's payload is a sequence of records, each a type byte, a uvarint body length and
// the body:
//
//	'H' header:   uvarint format version (1), uvarint from, uvarint to
//	'L' lease:    varint lease ID, varint granted TTL in seconds
//	'R' revision: uvarint revision, varint unix nanoseconds when it was observed
//	              (truncated to the millisecond, like the times in object names; in
//	              the years 1678-2261, which the encoder requires),
//	              uvarint event count, then per event a uvarint length and an
//	              mvccpb.Event in protobuf
//	'E' end:      uvarint number of revision records
//
// The header comes first and the end record last; nothing follows the end record. Revisions
// are consecutive from `from` to `to`, each exactly once, with all its events in one record;
// every event's key-value has the record's revision as its mod_revision. A lease record comes
// before the first revision whose events reference the lease; its TTL is 0 when it could not
// be looked up.
//
// Format version 2 is version 1 where a lease's TTL may also be UnrecordedTTL (-1): the delta
// was converted from another tool's backup, which did not record it. etcdbr writes version 2
// only for such deltas (NewConvertedDeltaEncoder), so that a reader of version 1 refuses
// them by their version rather than by a lease record it would take for damage.
const (
	deltaFormatVersion     = 1
	convertedFormatVersion = 2
	recHeader              = 'H'
	recLease               = 'L'
	recRevision            = 'R'
	recEnd                 = 'E'
	// maxDeltaRecord bounds one record (one revision's events) when reading, so that a
	// corrupt length cannot make a reader allocate without limit.
	maxDeltaRecord = 1 << 30
	// recordChunk is how much of a record is read (and allocated) at a time, so that a
	// corrupt length allocates no more than the data that actually follows.
	recordChunk = 1 << 20
)

// ErrMalformedDelta is wrapped by every error that reports a delta payload that does not
// follow the format: records out of order, bad numbers, events that do not decode or do not
// belong to their revision. A payload that fails its object's checksum is reported with
// ErrCorrupt instead.
var ErrMalformedDelta = errors.New("malformed delta payload")

// UnrecordedTTL is the TTL of a lease record of a converted delta (format version 2) whose
// source did not record the lease's TTL: etcd-backup-restore's deltas hold watch events only.
const UnrecordedTTL int64 = -1

// Lease is a lease referenced by a delta's events, with the TTL it was granted (0: unknown,
// the lease was gone when the delta was taken; UnrecordedTTL: the delta was converted from a
// backup that does not record TTLs).
type Lease struct {
	ID  int64
	TTL int64
}

// Revision is one etcd revision in a delta: its events in order and when it was observed.
// The encoder keeps the time to the millisecond, as object names do, so that a revision
// observed before a delta was named never looks later than the delta.
type Revision struct {
	Revision int64
	Time     time.Time
	Events   []*mvccpb.Event
}

// DeltaEncoder writes a delta payload.
type DeltaEncoder struct {
	w        *bufio.Writer
	version  uint64
	from, to int64
	next     int64
	count    uint64
	buf      []byte
	closed   bool
	err      error
}

// NewDeltaEncoder starts a delta payload covering revisions from..to on w.
func NewDeltaEncoder(w io.Writer, from, to int64) (*DeltaEncoder, error) {
	return newDeltaEncoder(w, from, to, deltaFormatVersion)
}

// NewConvertedDeltaEncoder starts a delta payload of format version 2, for a delta converted
// from another tool's backup: its lease records may carry UnrecordedTTL.
func NewConvertedDeltaEncoder(w io.Writer, from, to int64) (*DeltaEncoder, error) {
	return newDeltaEncoder(w, from, to, convertedFormatVersion)
}

func newDeltaEncoder(w io.Writer, from, to int64, version uint64) (*DeltaEncoder, error) {
	if from < 1 || to < from {
		return nil, fmt.Errorf("delta: invalid revision range %d..%d", from, to)
	}
	e := &DeltaEncoder{w: bufio.NewWriterSize(w, 256<<10), version: version, from: from, to: to, next: from}
	b := binary.AppendUvarint(nil, version)
	b = binary.AppendUvarint(b, uint64(from))
	b = binary.AppendUvarint(b, uint64(to))
	e.record(recHeader, b)
	return e, e.err
}

// Lease writes a lease record. Write it before the first revision that references the lease.
func (e *DeltaEncoder) Lease(l Lease) error {
	if err := e.usable(); err != nil {
		return err
	}
	if l.ID == 0 || l.TTL < minTTL(e.version) {
		return fmt.Errorf("delta %d..%d: invalid lease %x with TTL %d", e.from, e.to, l.ID, l.TTL)
	}
	b := binary.AppendVarint(e.buf[:0], l.ID)
	b = binary.AppendVarint(b, l.TTL)
	e.buf = b
	e.record(recLease, b)
	return e.err
}

// Revision writes the next revision; revisions must come in order from `from`, without gaps,
// each with at least one event, every event a PUT or a DELETE whose key-value has the
// revision as its mod_revision (as etcd's watch delivers them).
func (e *DeltaEncoder) Revision(r Revision) error {
	if err := e.usable(); err != nil {
		return err
	}
	if r.Revision != e.next || r.Revision > e.to {
		return fmt.Errorf("delta %d..%d: revision %d out of order (want %d)", e.from, e.to, r.Revision, e.next)
	}
	if len(r.Events) == 0 {
		return fmt.Errorf("delta %d..%d: revision %d has no events", e.from, e.to, r.Revision)
	}
	if !representable(r.Time) {
		return fmt.Errorf("delta %d..%d: revision %d has no usable observation time (%v)", e.from, e.to, r.Revision, r.Time)
	}
	for i, ev := range r.Events {
		if err := checkEvent(ev, r.Revision); err != nil {
			return fmt.Errorf("delta %d..%d: revision %d: event %d: %w", e.from, e.to, r.Revision, i, err)
		}
	}
	b := binary.AppendUvarint(e.buf[:0], uint64(r.Revision))
	b = binary.AppendVarint(b, r.Time.Truncate(time.Millisecond).UnixNano())
	b = binary.AppendUvarint(b, uint64(len(r.Events)))
	for _, ev := range r.Events {
		size := ev.Size()
		b = binary.AppendUvarint(b, uint64(size))
		n := len(b)
		b = slices.Grow(b, size)[:n+size]
		if _, err := ev.MarshalToSizedBuffer(b[n:]); err != nil {
			return fmt.Errorf("delta: encode event at revision %d: %w", r.Revision, err)
		}
	}
	if len(b) > maxDeltaRecord {
		return fmt.Errorf("delta %d..%d: revision %d is %d bytes, above the limit of %d", e.from, e.to, r.Revision, len(b), maxDeltaRecord)
	}
	e.buf = b
	e.record(recRevision, b)
	e.next++
	e.count++
	return e.err
}

// Close writes the end record and flushes. It fails unless every revision from..to was
// written. It does not close the underlying writer.
func (e *DeltaEncoder) Close() error {
	if err := e.usable(); err != nil {
		return err
	}
	e.closed = true
	if e.next != e.to+1 {
		e.err = fmt.Errorf("delta %d..%d: closed after revision %d", e.from, e.to, e.next-1)
		return e.err
	}
	e.record(recEnd, binary.AppendUvarint(e.buf[:0], e.count))
	if e.err == nil {
		e.err = e.w.Flush()
	}
	return e.err
}

func (e *DeltaEncoder) usable() error {
	if e.err != nil {
		return e.err
	}
	if e.closed {
		return fmt.Errorf("delta %d..%d: the encoder is closed", e.from, e.to)
	}
	return nil
}

func (e *DeltaEncoder) record(typ byte, body []byte) {
	if e.err != nil {
		return
	}
	var hdr [1 + binary.MaxVarintLen64]byte
	hdr[0] = typ
	n := 1 + binary.PutUvarint(hdr[1:], uint64(len(body)))
	if _, err := e.w.Write(hdr[:n]); err != nil {
		e.err = err
		return
	}
	if _, err := e.w.Write(body); err != nil {
		e.err = err
	}
}

// minTTL is the lowest TTL a lease record of format version v may carry.
func minTTL(version uint64) int64 {
	if version >= convertedFormatVersion {
		return UnrecordedTTL
	}
	return 0
}

// representable reports whether t survives a round trip through UnixNano.
func representable(t time.Time) bool {
	return !t.IsZero() && t.Year() >= 1678 && t.Year() <= 2261
}

// checkEvent checks that ev is a PUT or DELETE of a key at revision rev.
func checkEvent(ev *mvccpb.Event, rev int64) error {
	switch {
	case ev == nil || ev.Kv == nil:
		return errors.New("no key-value")
	case ev.Type != mvccpb.PUT && ev.Type != mvccpb.DELETE:
		return fmt.Errorf("unknown event type %d", ev.Type)
	case len(ev.Kv.Key) == 0:
		return errors.New("empty key")
	case ev.Kv.ModRevision != rev:
		return fmt.Errorf("key %q has mod_revision %d", ev.Kv.Key, ev.Kv.ModRevision)
	}
	return nil
}

// DeltaDecoder reads a delta payload one record at a time; it never holds more than one
// revision's events.
//
// Read from a Store, the payload is verified only at its end: the decoder reads its source
// to the end after the end record, and when a record does not decode it reads the rest of
// the source too, so that a payload damaged in storage is reported with ErrCorrupt (naming
// the object) rather than as a malformed payload.
type DeltaDecoder struct {
	r        *bufio.Reader
	version  uint64
	from, to int64
	next     int64
	count    uint64
	done     bool
	err      error // sticky
	buf      []byte
}

// NewDeltaDecoder reads the header of a delta payload.
func NewDeltaDecoder(r io.Reader) (*DeltaDecoder, error) {
	d := &DeltaDecoder{r: bufio.NewReaderSize(r, 256<<10)}
	if err := d.header(); err != nil {
		return nil, d.fail(err)
	}
	return d, nil
}

func (d *DeltaDecoder) header() error {
	typ, body, err := d.record()
	if err != nil {
		return err
	}
	if typ != recHeader {
		return malformed("starts with record %q, not a header", typ)
	}
	version, body, err := uvarint(body)
	if err != nil {
		return err
	}
	if version != deltaFormatVersion && version != convertedFormatVersion {
		return malformed("unsupported format version %d (this etcdbr reads versions %d and %d)", version, deltaFormatVersion, convertedFormatVersion)
	}
	d.version = version
	from, body, err := uvarint(body)
	if err != nil {
		return err
	}
	to, body, err := uvarint(body)
	if err != nil {
		return err
	}
	if len(body) != 0 {
		return malformed("%d unexpected bytes in the header", len(body))
	}
	if from < 1 || to < from || to > 1<<62 {
		return malformed("invalid revision range %d..%d", from, to)
	}
	d.from, d.to, d.next = int64(from), int64(to), int64(from)
	return nil
}

// From is the first revision the delta covers.
func (d *DeltaDecoder) From() int64 { return d.from }

// To is the last revision the delta covers.
func (d *DeltaDecoder) To() int64 { return d.to }

// Next returns the next lease or revision record (exactly one of the two is set), and io.EOF
// once the end record was read, every revision from..to was seen and the source ended (for
// a Store object: its checksum matched). Any other error is final. The returned values are
// not used by the decoder again.
func (d *DeltaDecoder) Next() (*Lease, *Revision, error) { return d.NextInto(nil) }

// NextInto is Next decoding a revision record into reuse (when not nil): a revision an
// earlier call returned and its caller no longer uses, nor any slice or event of it. Its
// events, their key-values and the key-values' key and value buffers are written over, so
// that once they have grown a revision decodes without allocating. The revision returned
// is reuse, or a new one for a lease record's call, reuse then untouched. What decodes is
// what Next decodes, but for two things no valid payload shows: an absent value is an
// empty one, not nil, and an event without a key-value fails as one with an empty key.
func (d *DeltaDecoder) NextInto(reuse *Revision) (*Lease, *Revision, error) {
	if d.err != nil {
		return nil, nil, d.err
	}
	if d.done {
		return nil, nil, io.EOF
	}
	l, r, err := d.next1(reuse)
	if err != nil {
		return nil, nil, d.fail(err)
	}
	return l, r, nil
}

func (d *DeltaDecoder) next1(reuse *Revision) (*Lease, *Revision, error) {
	typ, body, err := d.record()
	if err != nil {
		return nil, nil, err
	}
	switch typ {
	case recLease:
		id, rest, err := varint(body)
		if err != nil {
			return nil, nil, err
		}
		ttl, rest, err := varint(rest)
		if err != nil {
			return nil, nil, err
		}
		if len(rest) != 0 || id == 0 || ttl < minTTL(d.version) {
			return nil, nil, malformed("invalid lease record (lease %x, TTL %d, %d extra bytes)", id, ttl, len(rest))
		}
		return &Lease{ID: id, TTL: ttl}, nil, nil
	case recRevision:
		rev, err := d.revision(body, reuse)
		return nil, rev, err
	case recEnd:
		count, rest, err := uvarint(body)
		if err != nil {
			return nil, nil, err
		}
		if len(rest) != 0 || d.next != d.to+1 || count != d.count {
			return nil, nil, malformed("%d..%d ends after revision %d (%d revisions, end record says %d)", d.from, d.to, d.next-1, d.count, count)
		}
		// Read the source to its end: only there does a Store object vouch for its content.
		switch _, err := d.r.ReadByte(); {
		case err == nil:
			return nil, nil, malformed("%d..%d: data after the end record", d.from, d.to)
		case !errors.Is(err, io.EOF):
			return nil, nil, err
		}
		d.done = true
		return nil, nil, io.EOF
	case recHeader:
		return nil, nil, malformed("a second header record")
	default:
		return nil, nil, malformed("unknown record type %q", typ)
	}
}

func (d *DeltaDecoder) revision(body []byte, reuse *Revision) (*Revision, error) {
	rev, body, err := uvarint(body)
	if err != nil {
		return nil, err
	}
	if rev != uint64(d.next) || d.next > d.to {
		return nil, malformed("%d..%d: revision %d where %d was due", d.from, d.to, rev, d.next)
	}
	nanos, body, err := varint(body)
	if err != nil {
		return nil, err
	}
	observed := time.Unix(0, nanos).UTC()
	if !representable(observed) {
		return nil, malformed("revision %d was observed at %v, outside the years 1678-2261 a delta holds", rev, observed)
	}
	n, body, err := uvarint(body)
	if err != nil {
		return nil, err
	}
	if n == 0 || n > uint64(len(body)) {
		return nil, malformed("revision %d has an invalid event count %d", rev, n)
	}
	var r *Revision
	if reuse != nil {
		r = reuse
		r.Revision, r.Time, r.Events = int64(rev), observed, reusedEvents(r.Events, int(n))
	} else {
		r = &Revision{Revision: int64(rev), Time: observed, Events: make([]*mvccpb.Event, n)}
	}
	for i := range r.Events {
		size, rest, err := uvarint(body)
		if err != nil {
			return nil, err
		}
		if size > uint64(len(rest)) {
			return nil, malformed("revision %d: event %d overruns its record", rev, i)
		}
		ev := r.Events[i]
		if ev == nil {
			ev = &mvccpb.Event{}
		}
		if err := ev.Unmarshal(rest[:size]); err != nil {
			return nil, malformed("revision %d: decode event %d: %v", rev, i, err)
		}
		if err := checkEvent(ev, r.Revision); err != nil {
			return nil, malformed("revision %d: event %d: %v", rev, i, err)
		}
		r.Events[i] = ev
		body = rest[size:]
	}
	if len(body) != 0 {
		return nil, malformed("revision %d: %d bytes after its %d events", rev, len(body), n)
	}
	d.next++
	d.count++
	return r, nil
}

// reusedEvents returns n events for a revision to decode into: those of evs (its whole
// capacity) cleared, each keeping its key-value and their buffers, then nil ones (new).
// Unmarshal merges into what it is given: a field the record leaves out must be zero.
func reusedEvents(evs []*mvccpb.Event, n int) []*mvccpb.Event {
	if cap(evs) < n {
		evs = append(evs[:cap(evs)], make([]*mvccpb.Event, n-cap(evs))...)
	}
	evs = evs[:n]
	for _, ev := range evs {
		if ev == nil {
			continue
		}
		kv := ev.Kv
		*ev = mvccpb.Event{}
		if kv != nil {
			*kv = mvccpb.KeyValue{Key: kv.Key[:0], Value: kv.Value[:0]}
			ev.Kv = kv
		}
	}
	return evs
}

// record reads one record: its type and body (valid until the next call).
func (d *DeltaDecoder) record() (byte, []byte, error) {
	typ, err := d.r.ReadByte()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return 0, nil, malformed("ends without its end record")
		}
		return 0, nil, err
	}
	src := byteSource{r: d.r}
	size, err := binary.ReadUvarint(&src)
	switch {
	case err != nil && src.err == nil:
		return 0, nil, malformed("record length: %v", err) // a number above 64 bits
	case err != nil:
		return 0, nil, truncated("record length", err)
	}
	if size > maxDeltaRecord {
		return 0, nil, malformed("record of %d bytes exceeds the limit of %d", size, maxDeltaRecord)
	}
	// Grow the buffer as the data arrives, so that a corrupt length cannot allocate more than
	// about twice what the source holds.
	buf := d.buf[:0]
	for uint64(len(buf)) < size {
		n := len(buf)
		chunk := int(min(size-uint64(n), uint64(max(n, recordChunk))))
		buf = slices.Grow(buf, chunk)[:n+chunk]
		if _, err := io.ReadFull(d.r, buf[n:]); err != nil {
			d.buf = buf[:0]
			return 0, nil, truncated("record body", err)
		}
	}
	d.buf = buf
	return typ, buf, nil
}

// byteSource remembers the error of the reader it reads, so that a number that does not fit
// 64 bits (malformed data) is not taken for a failure of the source.
type byteSource struct {
	r   io.ByteReader
	err error
}

func (b *byteSource) ReadByte() (byte, error) {
	c, err := b.r.ReadByte()
	if err != nil {
		b.err = err
	}
	return c, err
}

// fail makes err final. A malformed payload may be a damaged one whose checksum is only
// checked at its end: then the rest of the source is read, and the source's error (ErrCorrupt
// for a Store object) is reported instead.
func (d *DeltaDecoder) fail(err error) error {
	if errors.Is(err, ErrMalformedDelta) {
		if _, derr := io.Copy(io.Discard, d.r); derr != nil {
			err = fmt.Errorf("%w (the payload did not decode: %v)", derr, err)
		}
	}
	d.err = err
	return err
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformedDelta}, args...)...)
}

// truncated reports a read that ended early: the payload is cut short when the source ended
// cleanly, otherwise the source's error is returned.
func truncated(what string, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return malformed("%s: %v", what, io.ErrUnexpectedEOF)
	}
	return err
}

func uvarint(b []byte) (uint64, []byte, error) {
	v, n := binary.Uvarint(b)
	if n <= 0 {
		return 0, nil, malformed("malformed number")
	}
	return v, b[n:], nil
}

func varint(b []byte) (int64, []byte, error) {
	v, n := binary.Varint(b)
	if n <= 0 {
		return 0, nil, malformed("malformed number")
	}
	return v, b[n:], nil
}
