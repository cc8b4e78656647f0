package snapstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"testing/iotest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// deltaItem is one record of a delta as a test writes and expects it back.
type deltaItem struct {
	lease *Lease
	rev   *Revision
}

func put(key, value string, create, mod, version, lease int64) *mvccpb.Event {
	return &mvccpb.Event{Type: mvccpb.PUT, Kv: &mvccpb.KeyValue{
		Key: []byte(key), Value: []byte(value), CreateRevision: create, ModRevision: mod, Version: version, Lease: lease,
	}}
}

func del(key string, mod int64) *mvccpb.Event {
	return &mvccpb.Event{Type: mvccpb.DELETE, Kv: &mvccpb.KeyValue{Key: []byte(key), ModRevision: mod}}
}

// sampleDelta is revisions 10..13 with two leases, a multi-op revision, a delete, an empty
// value and a value that is not text.
func sampleDelta() (from, to int64, items []deltaItem) {
	at := time.Date(2026, 11, 25, 15, 45, 0, 123_456_789, time.UTC)
	return 10, 13, []deltaItem{
		{lease: &Lease{ID: 0x694d9b1a2c3e4f50, TTL: 60}},
		{rev: &Revision{Revision: 10, Time: at, Events: []*mvccpb.Event{
			put("/registry/a", "one", 10, 10, 1, 0x694d9b1a2c3e4f50),
		}}},
		{rev: &Revision{Revision: 11, Time: at.Add(time.Millisecond), Events: []*mvccpb.Event{
			put("/registry/a", "two", 10, 11, 2, 0),
			put("/registry/b", "", 11, 11, 1, 0),
			del("/registry/c", 11),
		}}},
		{lease: &Lease{ID: -7, TTL: 0}}, // a negative ID is a valid int64 lease; TTL 0 is "unknown"
		{rev: &Revision{Revision: 12, Time: at.Add(2 * time.Second), Events: []*mvccpb.Event{
			put("/registry/d", string([]byte{0, 0xff, 0x80, 'x'}), 12, 12, 1, -7),
		}}},
		{rev: &Revision{Revision: 13, Time: at.Add(3 * time.Second), Events: []*mvccpb.Event{
			del("/registry/a", 13),
			del("/registry/b", 13),
		}}},
	}
}

// encodeDelta writes items as a delta payload covering from..to.
func encodeDelta(t testing.TB, from, to int64, items []deltaItem) []byte {
	t.Helper()
	var buf bytes.Buffer
	e, err := NewDeltaEncoder(&buf, from, to)
	require.NoError(t, err)
	for _, it := range items {
		if it.lease != nil {
			require.NoError(t, e.Lease(*it.lease))
		} else {
			require.NoError(t, e.Revision(*it.rev))
		}
	}
	require.NoError(t, e.Close())
	return buf.Bytes()
}

// decodeDelta reads a whole payload.
func decodeDelta(r io.Reader) (from, to int64, items []deltaItem, err error) {
	d, err := NewDeltaDecoder(r)
	if err != nil {
		return 0, 0, nil, err
	}
	for {
		l, rev, err := d.Next()
		if errors.Is(err, io.EOF) {
			return d.From(), d.To(), items, nil
		}
		if err != nil {
			return d.From(), d.To(), items, err
		}
		if (l == nil) == (rev == nil) {
			return 0, 0, nil, fmt.Errorf("Next returned lease %v and revision %v", l, rev)
		}
		items = append(items, deltaItem{lease: l, rev: rev})
	}
}

func TestDeltaRoundTrip(t *testing.T) {
	from, to, items := sampleDelta()
	payload := encodeDelta(t, from, to, items)
	for name, wrap := range map[string]func(io.Reader) io.Reader{
		"plain":    func(r io.Reader) io.Reader { return r },
		"one byte": iotest.OneByteReader,
		"data+EOF": iotest.DataErrReader,
	} {
		t.Run(name, func(t *testing.T) {
			gotFrom, gotTo, got, err := decodeDelta(wrap(bytes.NewReader(payload)))
			require.NoError(t, err)
			assert.Equal(t, from, gotFrom)
			assert.Equal(t, to, gotTo)
			require.Len(t, got, len(items))
			for i := range items {
				assert.Equal(t, items[i].lease, got[i].lease, "record %d", i)
				if items[i].rev != nil {
					require.NotNil(t, got[i].rev, "record %d", i)
					assert.Equal(t, items[i].rev.Revision, got[i].rev.Revision)
					// Times are kept to the millisecond, as in object names.
					want := items[i].rev.Time.Truncate(time.Millisecond)
					assert.True(t, want.Equal(got[i].rev.Time), "time %v, want %v", got[i].rev.Time, want)
					assert.Equal(t, time.UTC, got[i].rev.Time.Location())
					assert.Equal(t, marshalEvents(t, items[i].rev.Events), marshalEvents(t, got[i].rev.Events), "record %d", i)
				}
			}
		})
	}

	// After the end, Next keeps returning io.EOF.
	d, err := NewDeltaDecoder(bytes.NewReader(payload))
	require.NoError(t, err)
	for {
		if _, _, err := d.Next(); err != nil {
			require.ErrorIs(t, err, io.EOF)
			break
		}
	}
	_, _, err = d.Next()
	assert.ErrorIs(t, err, io.EOF)
}

// A revision's events are decoded into fresh values: a caller may keep them.
func TestDeltaDecoderDoesNotReuseEvents(t *testing.T) {
	from, to, items := sampleDelta()
	d, err := NewDeltaDecoder(bytes.NewReader(encodeDelta(t, from, to, items)))
	require.NoError(t, err)
	var kept []*Revision
	for {
		_, r, err := d.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		if r != nil {
			kept = append(kept, r)
		}
	}
	require.Len(t, kept, 4)
	assert.Equal(t, "one", string(kept[0].Events[0].Kv.Value))
	assert.Equal(t, "two", string(kept[1].Events[0].Kv.Value))
}

func TestDeltaEncoderRejects(t *testing.T) {
	at := testTime
	ok := func(rev int64) Revision {
		return Revision{Revision: rev, Time: at, Events: []*mvccpb.Event{put("k", "v", rev, rev, 1, 0)}}
	}
	tests := []struct {
		name  string
		write func(e *DeltaEncoder) error
		want  string
	}{
		{"revision before from", func(e *DeltaEncoder) error { return e.Revision(ok(4)) }, "out of order"},
		{"revision skipped", func(e *DeltaEncoder) error { return e.Revision(ok(6)) }, "out of order"},
		{"revision twice", func(e *DeltaEncoder) error {
			require.NoError(t, e.Revision(ok(5)))
			return e.Revision(ok(5))
		}, "out of order"},
		{"revision after to", func(e *DeltaEncoder) error {
			for r := int64(5); r <= 7; r++ {
				require.NoError(t, e.Revision(ok(r)))
			}
			return e.Revision(ok(8))
		}, "out of order"},
		{"no events", func(e *DeltaEncoder) error { return e.Revision(Revision{Revision: 5, Time: at}) }, "no events"},
		{"no time", func(e *DeltaEncoder) error {
			r := ok(5)
			r.Time = time.Time{}
			return e.Revision(r)
		}, "observation time"},
		{"time beyond 2262", func(e *DeltaEncoder) error {
			r := ok(5)
			r.Time = time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)
			return e.Revision(r)
		}, "observation time"},
		{"nil event", func(e *DeltaEncoder) error {
			return e.Revision(Revision{Revision: 5, Time: at, Events: []*mvccpb.Event{nil}})
		}, "no key-value"},
		{"event without key-value", func(e *DeltaEncoder) error {
			return e.Revision(Revision{Revision: 5, Time: at, Events: []*mvccpb.Event{{Type: mvccpb.PUT}}})
		}, "no key-value"},
		{"empty key", func(e *DeltaEncoder) error {
			return e.Revision(Revision{Revision: 5, Time: at, Events: []*mvccpb.Event{put("", "v", 5, 5, 1, 0)}})
		}, "empty key"},
		{"event of another revision", func(e *DeltaEncoder) error {
			return e.Revision(Revision{Revision: 5, Time: at, Events: []*mvccpb.Event{put("k", "v", 4, 4, 1, 0)}})
		}, "mod_revision 4"},
		{"unknown event type", func(e *DeltaEncoder) error {
			ev := put("k", "v", 5, 5, 1, 0)
			ev.Type = 7
			return e.Revision(Revision{Revision: 5, Time: at, Events: []*mvccpb.Event{ev}})
		}, "unknown event type"},
		{"lease without ID", func(e *DeltaEncoder) error { return e.Lease(Lease{ID: 0, TTL: 5}) }, "invalid lease"},
		{"lease with negative TTL", func(e *DeltaEncoder) error { return e.Lease(Lease{ID: 1, TTL: -1}) }, "invalid lease"},
		{"close before the last revision", func(e *DeltaEncoder) error {
			require.NoError(t, e.Revision(ok(5)))
			return e.Close()
		}, "closed after revision 5"},
		{"write after close", func(e *DeltaEncoder) error {
			for r := int64(5); r <= 7; r++ {
				require.NoError(t, e.Revision(ok(r)))
			}
			require.NoError(t, e.Close())
			return e.Lease(Lease{ID: 1, TTL: 5})
		}, "closed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := NewDeltaEncoder(io.Discard, 5, 7)
			require.NoError(t, err)
			err = tt.write(e)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
		})
	}

	for _, r := range [][2]int64{{0, 5}, {-1, 5}, {6, 5}} {
		_, err := NewDeltaEncoder(io.Discard, r[0], r[1])
		assert.Error(t, err, "range %d..%d", r[0], r[1])
	}

	// A failing writer is reported, and the error sticks.
	errDisk := errors.New("disk full")
	e, err := NewDeltaEncoder(&failWriter{err: errDisk}, 5, 5)
	require.NoError(t, err) // buffered
	require.NoError(t, e.Revision(ok(5)))
	err = e.Close()
	require.ErrorIs(t, err, errDisk)
	assert.ErrorIs(t, e.Lease(Lease{ID: 1, TTL: 1}), errDisk)
}

// marshalEvents compares events as protobuf does (a nil value is an empty one).
func marshalEvents(t testing.TB, evs []*mvccpb.Event) [][]byte {
	t.Helper()
	out := make([][]byte, len(evs))
	for i, ev := range evs {
		b, err := ev.Marshal()
		require.NoError(t, err)
		out[i] = b
	}
	return out
}

type failWriter struct{ err error }

func (f *failWriter) Write([]byte) (int, error) { return 0, f.err }

// record builds one raw record.
func record(typ byte, body []byte) []byte {
	b := append([]byte{typ}, binary.AppendUvarint(nil, uint64(len(body)))...)
	return append(b, body...)
}

func uvarints(vs ...uint64) []byte {
	var b []byte
	for _, v := range vs {
		b = binary.AppendUvarint(b, v)
	}
	return b
}

// revisionBody builds the body of a revision record with the given events.
func revisionBody(rev int64, evs ...*mvccpb.Event) []byte {
	b := uvarints(uint64(rev))
	b = binary.AppendVarint(b, testTime.UnixNano())
	b = binary.AppendUvarint(b, uint64(len(evs)))
	for _, ev := range evs {
		m, err := ev.Marshal()
		if err != nil {
			panic(err)
		}
		b = binary.AppendUvarint(b, uint64(len(m)))
		b = append(b, m...)
	}
	return b
}

func TestDeltaDecoderRejectsMalformed(t *testing.T) {
	header := record(recHeader, uvarints(1, 5, 6))
	rev5 := record(recRevision, revisionBody(5, put("k", "v", 5, 5, 1, 0)))
	rev6 := record(recRevision, revisionBody(6, del("k", 6)))
	end := record(recEnd, uvarints(2))
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	valid := cat(header, rev5, rev6, end)
	_, _, _, err := decodeDelta(bytes.NewReader(valid))
	require.NoError(t, err, "the base of the table must be valid")

	tests := []struct {
		name    string
		payload []byte
		want    string
	}{
		{"empty", nil, "without its end record"},
		{"no header", cat(rev5, rev6, end), "not a header"},
		{"format version 3", cat(record(recHeader, uvarints(3, 5, 6)), rev5, rev6, end), "format version 3"},
		{"range starting at 0", cat(record(recHeader, uvarints(1, 0, 6)), rev5, rev6, end), "invalid revision range"},
		{"range backwards", cat(record(recHeader, uvarints(1, 6, 5)), rev5, rev6, end), "invalid revision range"},
		{"header with extra bytes", cat(record(recHeader, uvarints(1, 5, 6, 9)), rev5, rev6, end), "unexpected bytes"},
		{"second header", cat(header, header, rev5, rev6, end), "second header"},
		{"missing revision", cat(header, rev6, end), "revision 6 where 5 was due"},
		{"revision twice", cat(header, rev5, rev5, rev6, end), "revision 5 where 6 was due"},
		{"revision past the range", cat(header, rev5, rev6, record(recRevision, revisionBody(7, del("k", 7))), end), "revision 7 where 7 was due"},
		{"end too early", cat(header, rev5, end), "ends after revision 5"},
		{"end count wrong", cat(header, rev5, rev6, record(recEnd, uvarints(3))), "end record says 3"},
		{"no end", cat(header, rev5, rev6), "without its end record"},
		{"data after the end", cat(valid, []byte{0}), "data after the end record"},
		{"unknown record", cat(header, record('X', nil), rev5, rev6, end), "unknown record type"},
		{"zero events", cat(header, record(recRevision, revisionBody(5)), rev6, end), "invalid event count 0"},
		{"event of another revision", cat(header, record(recRevision, revisionBody(5, put("k", "v", 4, 4, 1, 0))), rev6, end), "mod_revision 4"},
		{"event without key", cat(header, record(recRevision, revisionBody(5, &mvccpb.Event{})), rev6, end), "no key-value"},
		{"event of unknown type", cat(header, record(recRevision, revisionBody(5, &mvccpb.Event{Type: 9, Kv: &mvccpb.KeyValue{Key: []byte("k"), ModRevision: 5}})), rev6, end), "unknown event type"},
		{"event that does not decode", cat(header, record(recRevision, append(uvarints(5), 0, 1, 3, 0xff, 0xff, 0xff)), rev6, end), "decode event 0"},
		{"event overrunning its record", cat(header, record(recRevision, append(uvarints(5), 0, 1, 9, 0x0a)), rev6, end), "overruns"},
		{"bytes after the events", cat(header, record(recRevision, append(revisionBody(5, put("k", "v", 5, 5, 1, 0)), 0)), rev6, end), "bytes after its 1 events"},
		{"lease without ID", cat(header, record(recLease, binary.AppendVarint(binary.AppendVarint(nil, 0), 5)), rev5, rev6, end), "invalid lease"},
		{"lease with negative TTL", cat(header, record(recLease, binary.AppendVarint(binary.AppendVarint(nil, 3), -5)), rev5, rev6, end), "invalid lease"},
		{"bad number", cat(header, record(recLease, []byte{0x80}), rev5, rev6, end), "malformed number"},
		{"record above the limit", cat(header, []byte{recRevision}, uvarints(maxDeltaRecord+1), rev5), "exceeds the limit"},
		{"record length cut", cat(header, []byte{recRevision, 0x80}), "record length"},
		{"record body cut", cat(header, rev5[:len(rev5)-1]), "record body"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, _, err := decodeDelta(bytes.NewReader(tt.payload))
			require.Error(t, err)
			assert.ErrorIs(t, err, ErrMalformedDelta)
			assert.NotErrorIs(t, err, io.EOF)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
}

// Every cut of a valid payload is an error, never a shorter valid delta.
func TestDeltaDecoderEveryTruncation(t *testing.T) {
	from, to, items := sampleDelta()
	payload := encodeDelta(t, from, to, items)
	for n := range len(payload) {
		_, _, _, err := decodeDelta(bytes.NewReader(payload[:n]))
		require.Error(t, err, "cut at %d of %d bytes", n, len(payload))
		require.ErrorIs(t, err, ErrMalformedDelta, "cut at %d", n)
	}
}

// A source failing mid-way is reported as its own error, not as a malformed payload.
func TestDeltaDecoderSourceError(t *testing.T) {
	from, to, items := sampleDelta()
	payload := encodeDelta(t, from, to, items)
	errNetwork := errors.New("connection reset by peer")
	for _, cut := range []int{0, 3, len(payload) / 2, len(payload) - 1, len(payload)} {
		_, _, _, err := decodeDelta(io.MultiReader(bytes.NewReader(payload[:cut]), iotest.ErrReader(errNetwork)))
		require.ErrorIs(t, err, errNetwork, "cut at %d", cut)
		assert.NotErrorIs(t, err, ErrMalformedDelta, "cut at %d", cut)
	}
}

// A record that claims a huge length but is followed by little data allocates about as much
// as there is data, not what it claims.
func TestDeltaDecoderCorruptLengthDoesNotAllocate(t *testing.T) {
	payload := bytes.Join([][]byte{
		record(recHeader, uvarints(1, 5, 6)),
		{recRevision}, uvarints(maxDeltaRecord - 1), bytes.Repeat([]byte{1}, 100),
	}, nil)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, _, _, err := decodeDelta(bytes.NewReader(payload))
	runtime.ReadMemStats(&after)
	require.ErrorIs(t, err, ErrMalformedDelta)
	assert.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(16<<20), "bytes allocated")
}

// Read from a store, a damaged delta is reported as corrupt (naming the object) wherever the
// damage is, even when the damaged bytes still decode or make the payload undecodable before
// the checksum at its end is reached.
func TestDeltaFromStoreCorrupt(t *testing.T) {
	from, to, items := sampleDelta()
	// Enough revisions that the object spans several zstd blocks.
	at := items[len(items)-1].rev.Time
	for r := to + 1; r <= 3000; r++ {
		items = append(items, deltaItem{rev: &Revision{Revision: r, Time: at, Events: []*mvccpb.Event{
			put(fmt.Sprintf("/registry/k%05d", r%700), fmt.Sprintf("value %d %x", r, r*r*7919), r, r, 1, 0),
		}}})
		to = r
	}
	payload := encodeDelta(t, from, to, items)
	s, dir := openFileStore(t, Options{})
	snap := writeObject(t, s, catalog.Snapshot{Kind: catalog.KindDelta, From: from, Revision: to, Time: testTime}, payload)
	path := filepath.Join(dir, filepath.FromSlash(snap.Key))
	original, err := os.ReadFile(path)
	require.NoError(t, err)

	read := func() error {
		r, err := s.Open(t.Context(), snap)
		require.NoError(t, err)
		defer r.Close()
		_, _, _, err = decodeDelta(r)
		return err
	}
	require.NoError(t, read())

	positions := []int{len(original) - 1, len(original) - trailerSize - 1, len(original) - trailerSize - 5}
	for i := 0; i < len(original)-trailerSize; i += max(1, len(original)/40) {
		positions = append(positions, i)
	}
	for _, pos := range positions {
		mangled := bytes.Clone(original)
		mangled[pos] ^= 0x10
		require.NoError(t, os.WriteFile(path, mangled, 0o600))
		err := read()
		require.Error(t, err, "byte %d of %d flipped", pos, len(original))
		assert.ErrorIs(t, err, ErrCorrupt, "byte %d of %d flipped", pos, len(original))
		assert.Contains(t, err.Error(), snap.Key)
	}
}
