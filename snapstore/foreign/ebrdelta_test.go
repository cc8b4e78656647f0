package foreign

import (
	"bytes"
	"compress/gzip"
	"compress/lzw"
	"compress/zlib"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

// ebrPayload is a delta payload as etcd-backup-restore writes it: the JSON array of events
// (clientv3.Event and the time, encoding/json's form) followed by the SHA-256 of the JSON.
func ebrPayload(t *testing.T, events []EBREvent) []byte {
	t.Helper()
	var buf bytes.Buffer
	buf.WriteByte('[')
	for i, e := range events {
		if i > 0 {
			buf.WriteByte(',')
		}
		b, err := json.Marshal(ebrEvent{EtcdEvent: e.Event, Time: e.Time})
		if err != nil {
			t.Fatal(err)
		}
		buf.Write(b)
	}
	buf.WriteByte(']')
	sum := sha256.Sum256(buf.Bytes())
	return append(buf.Bytes(), sum[:]...)
}

// compress compresses b as etcd-backup-restore's compression policy c does.
func compress(t *testing.T, b []byte, c Compression) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w io.WriteCloser
	switch c {
	case None:
		return b
	case Gzip:
		w = gzip.NewWriter(&buf)
	case Zlib:
		w = zlib.NewWriter(&buf)
	case LZW:
		w = lzw.NewWriter(&buf, lzw.LSB, 8)
	}
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func sampleEvents() []EBREvent {
	at := time.Date(2026, 11, 25, 10, 0, 0, 123456789, time.FixedZone("CET", 3600))
	return []EBREvent{
		{Event: &mvccpb.Event{Type: mvccpb.PUT, Kv: &mvccpb.KeyValue{Key: []byte("/a"), Value: []byte("1"), CreateRevision: 10, ModRevision: 10, Version: 1}}, Time: at},
		{Event: &mvccpb.Event{Type: mvccpb.PUT, Kv: &mvccpb.KeyValue{Key: []byte("/b"), Value: []byte{0, 1, 2}, CreateRevision: 10, ModRevision: 10, Version: 1, Lease: 0x1234}}, Time: at},
		{Event: &mvccpb.Event{Type: mvccpb.DELETE, Kv: &mvccpb.KeyValue{Key: []byte("/a"), ModRevision: 11}}, Time: at.Add(time.Second)},
	}
}

func readAll(d *EBRDeltaReader) ([]EBREvent, error) {
	var out []EBREvent
	for {
		e, err := d.Next()
		if err != nil {
			return out, err
		}
		out = append(out, e)
	}
}

// TestEBRDeltaCompressions reads a delta in each compression etcd-backup-restore writes.
func TestEBRDeltaCompressions(t *testing.T) {
	want := sampleEvents()
	payload := ebrPayload(t, want)
	for _, c := range []Compression{None, Gzip, Zlib, LZW} {
		t.Run(c.String(), func(t *testing.T) {
			r, err := Decompress(bytes.NewReader(compress(t, payload, c)), c)
			if err != nil {
				t.Fatal(err)
			}
			got, err := readAll(NewEBRDeltaReader(r))
			if !errors.Is(err, io.EOF) {
				t.Fatalf("read: %v", err)
			}
			if len(got) != len(want) {
				t.Fatalf("got %d events, want %d", len(got), len(want))
			}
			for i := range want {
				if got[i].Event.String() != want[i].Event.String() || !got[i].Time.Equal(want[i].Time) {
					t.Errorf("event %d: got %v at %v, want %v at %v", i, got[i].Event, got[i].Time, want[i].Event, want[i].Time)
				}
			}
		})
	}
}

// TestEBRDeltaDamage: a payload that fails its SHA-256 is reported so, also when the damage
// makes the JSON unreadable; one that is not a delta's JSON is malformed.
func TestEBRDeltaDamage(t *testing.T) {
	payload := ebrPayload(t, sampleEvents())
	flip := func(i int) []byte {
		b := bytes.Clone(payload)
		b[i] ^= 0x20
		return b
	}
	sum := sha256.Sum256([]byte(`{"a":1}`))
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"value changed", flip(bytes.Index(payload, []byte(`"value"`)) + 10), ErrChecksum},
		{"JSON broken", flip(1), ErrChecksum},
		{"checksum changed", flip(len(payload) - 1), ErrChecksum},
		{"cut short", payload[:len(payload)-5], ErrChecksum},
		{"empty", nil, ErrChecksum},
		{"not an array", append([]byte(`{"a":1}`), sum[:]...), ErrMalformed},
		{"no events", append([]byte(`[]`), func() []byte { s := sha256.Sum256([]byte(`[]`)); return s[:] }()...), ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := readAll(NewEBRDeltaReader(bytes.NewReader(tt.in)))
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want an error wrapping %v", err, tt.want)
			}
		})
	}
}

// TestEBRDeltaSourceError: an error of the source is returned as it is, not as damage.
func TestEBRDeltaSourceError(t *testing.T) {
	boom := errors.New("connection reset")
	payload := ebrPayload(t, sampleEvents())
	r := io.MultiReader(bytes.NewReader(payload[:40]), errReader{boom})
	_, err := readAll(NewEBRDeltaReader(r))
	if !errors.Is(err, boom) || errors.Is(err, ErrMalformed) || errors.Is(err, ErrChecksum) {
		t.Fatalf("got %v, want the source's error", err)
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// TestDecompressDamage: damaged compressed data fails while it is read.
func TestDecompressDamage(t *testing.T) {
	payload := bytes.Repeat([]byte("etcd-backup-restore "), 1000)
	for _, c := range []Compression{Gzip, Zlib} {
		b := compress(t, payload, c)
		b[len(b)-6] ^= 0xff // the checksum at the end
		r, err := Decompress(bytes.NewReader(b), c)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, r); err == nil {
			t.Errorf("%v: damaged data read without an error", c)
		}
	}
}
