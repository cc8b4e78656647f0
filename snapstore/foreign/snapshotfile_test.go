package foreign

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
)

// fakeDB is bytes that start like a bbolt db (the meta page's magic 16 bytes in).
func fakeDB(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i * 7)
	}
	binary.NativeEndian.PutUint32(b[16:], boltMagic)
	return b
}

func zipOf(t *testing.T, name string, data []byte, method uint16) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, err := zw.CreateHeader(&zip.FileHeader{Name: name, Method: method})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestSnapshotFiles reads a db in each snapshot file format.
func TestSnapshotFiles(t *testing.T) {
	db := fakeDB(3 << 20)
	for _, tt := range []struct {
		name string
		file []byte
		want SnapshotFormat
	}{
		{"plain", db, PlainDB},
		{"gzip", compress(t, db, Gzip), GzipDB},
		{"k3s zip", zipOf(t, "etcd-snapshot-node1-1700000000", db, zip.Deflate), ZipDB},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f, err := SniffSnapshot(tt.file[:SniffLen])
			if err != nil || f != tt.want {
				t.Fatalf("SniffSnapshot = %v, %v; want %v", f, err, tt.want)
			}
			r, err := OpenSnapshot(bytes.NewReader(tt.file), f)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(r)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, db) {
				t.Fatalf("read %d bytes, not the db's %d", len(got), len(db))
			}
		})
	}
}

// TestSnapshotFileDamage: a zip entry that fails its CRC or holds no deflated data is
// reported; a file that is none of the formats is refused by name.
func TestSnapshotFileDamage(t *testing.T) {
	db := fakeDB(1 << 20)
	z := zipOf(t, "snap", db, zip.Deflate)
	// The data descriptor after the deflated data holds the CRC: find it by its signature.
	i := bytes.LastIndex(z, []byte("PK\x07\x08"))
	bad := bytes.Clone(z)
	bad[i+4] ^= 1
	r, err := OpenSnapshot(bytes.NewReader(bad), ZipDB)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, r); !errors.Is(err, ErrChecksum) {
		t.Errorf("CRC changed: got %v, want ErrChecksum", err)
	}
	stored := zipOf(t, "snap", db, zip.Store)
	if _, err := OpenSnapshot(bytes.NewReader(stored), ZipDB); !errors.Is(err, ErrMalformed) {
		t.Errorf("stored with a data descriptor: got %v, want ErrMalformed (its length is only at its end)", err)
	}
	for _, head := range [][]byte{[]byte("hello, this is not a snapshot at all"), {0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0}, nil} {
		if _, err := SniffSnapshot(head); !errors.Is(err, ErrMalformed) {
			t.Errorf("SniffSnapshot(%q) = %v, want ErrMalformed", head, err)
		}
	}
}
