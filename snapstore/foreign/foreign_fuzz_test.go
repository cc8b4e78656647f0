package foreign

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"testing"
)

// seedEBRPayload is a delta payload as etcd-backup-restore writes it (see ebrPayload).
func seedEBRPayload(f *testing.F, events []EBREvent) []byte {
	var buf bytes.Buffer
	buf.WriteByte('[')
	for i, e := range events {
		if i > 0 {
			buf.WriteByte(',')
		}
		b, err := json.Marshal(ebrEvent{EtcdEvent: e.Event, Time: e.Time})
		if err != nil {
			f.Fatal(err)
		}
		buf.Write(b)
	}
	buf.WriteByte(']')
	sum := sha256.Sum256(buf.Bytes())
	return append(buf.Bytes(), sum[:]...)
}

// FuzzEBRDelta reads etcd-backup-restore delta payloads. With addSum the fuzzer's bytes are
// the JSON text and the right SHA-256 is appended (the JSON decoding is what is explored);
// without it they are the whole payload. No input panics; every error wraps ErrMalformed or
// ErrChecksum (the source never fails here); a payload that reads to its end ends with the
// SHA-256 of everything before it and held at least one event, each with a key-value.
func FuzzEBRDelta(f *testing.F) {
	payload := seedEBRPayload(f, sampleEvents())
	f.Add(payload, false)
	f.Add(payload[:len(payload)-sha256.Size], true)
	f.Add([]byte(`[{"etcdEvent":{"kv":{"key":"YQ==","mod_revision":3}},"time":"2026-11-25T10:00:00Z"}]`), true)
	f.Add([]byte(`[]`), true)
	f.Add([]byte{}, false)
	f.Fuzz(func(t *testing.T, data []byte, addSum bool) {
		if addSum {
			sum := sha256.Sum256(data)
			data = append(bytes.Clone(data), sum[:]...)
		}
		d := NewEBRDeltaReader(bytes.NewReader(data))
		var events []EBREvent
		var err error
		for {
			var e EBREvent
			if e, err = d.Next(); err != nil {
				break
			}
			events = append(events, e)
		}
		if !errors.Is(err, io.EOF) {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrChecksum) {
				t.Fatalf("error without ErrMalformed or ErrChecksum: %v", err)
			}
			return
		}
		if len(data) < sha256.Size {
			t.Fatalf("a %d-byte payload read to its end", len(data))
		}
		body := data[:len(data)-sha256.Size]
		if sum := sha256.Sum256(body); !bytes.Equal(sum[:], data[len(body):]) {
			t.Fatalf("a payload whose SHA-256 does not match read to its end")
		}
		if len(events) == 0 || d.Events() != len(events) {
			t.Fatalf("read to its end with %d events (Events says %d)", len(events), d.Events())
		}
		for i, e := range events {
			if e.Event == nil || e.Event.Kv == nil {
				t.Fatalf("event %d has no key-value", i)
			}
		}
	})
}

// FuzzParseEBRKey parses keys of etcd-backup-restore's store. A key it accepts has a kind,
// a layout, revisions with 1 <= Last and Start <= Last (Start >= 1 for a delta), .final
// only on a full snapshot, and it is the key it was parsed from; written again the way
// etcd-backup-restore names objects, its fields parse back the same.
func FuzzParseEBRKey(f *testing.F) {
	f.Add("v2/Full-00000000-00001234-1700000000.gz")
	f.Add("v2/Incr-00001235-00001300-1700000010.zlib")
	f.Add("v1/Backup-1700000000/Incr-00000001-00000002-1700000001.Z")
	f.Add("v2/Full-00000000-00001234-1700000000.final")
	f.Add("v2/Full-00000000-00001234-1700000000/chunk-1")
	f.Fuzz(func(t *testing.T, key string) {
		o, ok := ParseEBRKey(key)
		if !ok {
			return
		}
		if o.Key != key || (o.Layout != "v1" && o.Layout != "v2") || (o.Kind != EBRFull && o.Kind != EBRDelta) ||
			o.Last < 1 || o.Start > o.Last || o.Start < 0 || (o.Kind == EBRDelta && o.Start < 1) ||
			(o.Final && o.Kind != EBRFull) || o.Compression < None || o.Compression > LZW {
			t.Fatalf("ParseEBRKey(%q) = %+v", key, o)
		}
		dir := "v2/"
		if o.Layout == "v1" {
			dir = "v1/Backup-1/"
		}
		name := fmt.Sprintf("%s%s-%08d-%08d-%d%s", dir, o.Kind, o.Start, o.Last, o.Created.Unix(), o.Compression.suffix())
		if o.Final {
			name += ".final"
		}
		again, ok := ParseEBRKey(name)
		again.Key = o.Key
		if !ok || again.Kind != o.Kind || again.Start != o.Start || again.Last != o.Last || !again.Created.Equal(o.Created) ||
			again.Compression != o.Compression || again.Final != o.Final {
			t.Fatalf("ParseEBRKey(%q) = %+v; written again as %q it parses as %+v (%v)", key, o, name, again, ok)
		}
	})
}

// FuzzSnapshotFile sniffs and reads snapshot files of other tools (a plain db, gzip, a zip
// archive). No input panics; a zip entry that reads to its end has the CRC-32 recorded in
// its local header or in its data descriptor.
func FuzzSnapshotFile(f *testing.F) {
	db := fakeDB(1024)
	f.Add(db)
	for _, method := range []uint16{zip.Deflate, zip.Store} {
		var buf bytes.Buffer
		zw := zip.NewWriter(&buf)
		w, err := zw.CreateHeader(&zip.FileHeader{Name: "snapshot.db", Method: method})
		if err != nil {
			f.Fatal(err)
		}
		if _, err := w.Write(db); err != nil {
			f.Fatal(err)
		}
		if err := zw.Close(); err != nil {
			f.Fatal(err)
		}
		f.Add(buf.Bytes())
	}
	f.Add([]byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte("PK\x03\x04"))
	f.Fuzz(func(t *testing.T, file []byte) {
		format, err := SniffSnapshot(file[:min(len(file), SniffLen)])
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("sniff: error without ErrMalformed: %v", err)
			}
			return
		}
		r, err := OpenSnapshot(bytes.NewReader(file), format)
		if err != nil {
			return
		}
		defer r.Close()
		out, err := io.ReadAll(io.LimitReader(r, 64<<20))
		if err != nil || format != ZipDB {
			return
		}
		crc := crc32.ChecksumIEEE(out)
		if !bytes.Contains(file, []byte{byte(crc), byte(crc >> 8), byte(crc >> 16), byte(crc >> 24)}) {
			t.Fatalf("a zip entry read to its end with CRC-32 %08x, which the archive does not record", crc)
		}
	})
}

// TestZipEntryWithoutDescriptor: a zip entry whose CRC-32 follows its data (a data
// descriptor) and whose file ends right after the data is cut off, not read to its end (found
// by FuzzSnapshotFile: the end of the file where the descriptor belongs was taken for a
// clean end, and the entry was never checked).
func TestZipEntryWithoutDescriptor(t *testing.T) {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, err := zw.CreateHeader(&zip.FileHeader{Name: "snapshot.db", Method: zip.Deflate})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(fakeDB(4096)); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	zr, err := zip.NewReader(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	start, err := zr.File[0].DataOffset()
	if err != nil {
		t.Fatal(err)
	}
	cut := buf.Bytes()[:start+int64(zr.File[0].CompressedSize64)]
	r, err := OpenSnapshot(bytes.NewReader(cut), ZipDB)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := io.ReadAll(r); !errors.Is(err, ErrChecksum) {
		t.Fatalf("got %v, want an error wrapping ErrChecksum", err)
	}
}
