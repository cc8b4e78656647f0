package snapstore

import (
	"archive/zip"
	"bytes"
	"compress/gzip"
	"compress/lzw"
	"compress/zlib"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// boltDB returns an etcd-like bbolt db whose revision is rev (a "key" bucket whose newest key
// is rev_0), followed by its SHA-256 as etcd's Maintenance API sends it, and the db alone.
func boltDB(t *testing.T, rev int64) (payload, db []byte) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "db")
	b, err := bolt.Open(path, 0o600, nil)
	require.NoError(t, err)
	require.NoError(t, b.Update(func(tx *bolt.Tx) error {
		for _, name := range []string{"meta", "lease"} {
			if _, err := tx.CreateBucket([]byte(name)); err != nil {
				return err
			}
		}
		keys, err := tx.CreateBucket([]byte("key"))
		if err != nil {
			return err
		}
		for r := int64(1); r <= rev; r++ {
			k := make([]byte, 17)
			binary.BigEndian.PutUint64(k, uint64(r))
			k[8] = '_'
			if err := keys.Put(k, []byte("kv")); err != nil {
				return err
			}
		}
		return nil
	}))
	require.NoError(t, b.Close())
	db, err = os.ReadFile(path)
	require.NoError(t, err)
	sum := sha256.Sum256(db)
	return append(bytes.Clone(db), sum[:]...), db
}

// ebrEvents is what etcd-backup-restore writes into a delta: a JSON array of
// {"etcdEvent": clientv3.Event, "time": ...}, then the SHA-256 of the JSON.
func ebrEvents(t *testing.T, events []*mvccpb.Event, at time.Time) []byte {
	t.Helper()
	type event struct {
		EtcdEvent *mvccpb.Event `json:"etcdEvent"`
		Time      time.Time     `json:"time"`
	}
	var buf bytes.Buffer
	buf.WriteByte('[')
	for i, ev := range events {
		if i > 0 {
			buf.WriteByte(',')
		}
		b, err := json.Marshal(event{ev, at.Add(time.Duration(ev.Kv.ModRevision) * time.Millisecond)})
		require.NoError(t, err)
		buf.Write(b)
	}
	buf.WriteByte(']')
	sum := sha256.Sum256(buf.Bytes())
	return append(buf.Bytes(), sum[:]...)
}

// ebrCompress compresses b as etcd-backup-restore's --compression-policy does (suffix "" is
// none).
func ebrCompress(t *testing.T, b []byte, suffix string) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w io.WriteCloser
	switch suffix {
	case "":
		return b
	case ".gz":
		w = gzip.NewWriter(&buf)
	case ".zlib":
		w = zlib.NewWriter(&buf)
	case ".Z":
		w = lzw.NewWriter(&buf, lzw.LSB, 8)
	default:
		t.Fatalf("no compression %q", suffix)
	}
	_, err := w.Write(b)
	require.NoError(t, err)
	require.NoError(t, w.Close())
	return buf.Bytes()
}

// putFile writes data as the file dir/key.
func putFile(t *testing.T, dir, key string, data []byte) {
	t.Helper()
	path := filepath.Join(dir, filepath.FromSlash(key))
	require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o700))
	require.NoError(t, os.WriteFile(path, data, 0o600))
}

func put3(rev int64, key string, lease int64) *mvccpb.Event {
	return &mvccpb.Event{Type: mvccpb.PUT, Kv: &mvccpb.KeyValue{Key: []byte(key), Value: []byte("v"), CreateRevision: rev, ModRevision: rev, Version: 1, Lease: lease}}
}

// ebrStore writes an etcd-backup-restore store into dir: a v1 full snapshot at revision 50,
// a v2 full snapshot named 100 holding revision 102 (written while it was taken), and deltas
// 101..103 (the first in two revisions, one a transaction of two puts) and 104..104, plus
// what is not a snapshot. It returns the events of the deltas, by revision.
func ebrStore(t *testing.T, dir, suffix string) map[int64][]*mvccpb.Event {
	t.Helper()
	full50, _ := boltDB(t, 50)
	full102, _ := boltDB(t, 102)
	putFile(t, dir, "v1/Backup-1600000000/Full-00000000-00000050-1600000000"+suffix, ebrCompress(t, full50, suffix))
	putFile(t, dir, "v2/Full-00000000-00000100-1700000000"+suffix, ebrCompress(t, full102, suffix))
	revs := map[int64][]*mvccpb.Event{
		101: {put3(101, "/a", 0)},
		102: {put3(102, "/b", 0x77), put3(102, "/c", 0x77)},
		103: {{Type: mvccpb.DELETE, Kv: &mvccpb.KeyValue{Key: []byte("/a"), ModRevision: 103}}},
		104: {put3(104, "/d", 0x78)},
	}
	at := time.Date(2023, 11, 14, 22, 13, 20, 0, time.UTC)
	var first []*mvccpb.Event
	for r := int64(101); r <= 103; r++ {
		first = append(first, revs[r]...)
	}
	putFile(t, dir, "v2/Incr-00000101-00000103-1700000010"+suffix, ebrCompress(t, ebrEvents(t, first, at), suffix))
	putFile(t, dir, "v2/Incr-00000104-00000104-1700000020"+suffix, ebrCompress(t, ebrEvents(t, revs[104], at), suffix))
	putFile(t, dir, "v2/Full-00000000-00000200-1700000100"+suffix+"/0000000001", []byte("a chunk"))
	putFile(t, dir, "v2/notes.txt", []byte("not a snapshot"))
	return revs
}

func openExisting(t *testing.T, url string) *Store {
	t.Helper()
	s, err := Open(context.Background(), url, Options{MustExist: true})
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// TestEBRStore reads an etcd-backup-restore store in each compression it writes: detected,
// listed as etcdbr snapshots, full snapshots as the db and its SHA-256, deltas converted to
// etcdbr's delta payload (format version 2, leases without TTLs), and never written to.
func TestEBRStore(t *testing.T) {
	ctx := context.Background()
	for _, suffix := range []string{"", ".gz", ".zlib", ".Z"} {
		t.Run("compression "+suffix, func(t *testing.T) {
			dir := t.TempDir()
			revs := ebrStore(t, dir, suffix)
			s := openExisting(t, "file://"+dir)
			layout, err := s.Detect(ctx)
			require.NoError(t, err)
			require.Equal(t, LayoutEtcdBackupRestore, layout)
			require.True(t, s.ReadOnly())

			l, err := s.ListBackups(ctx)
			require.NoError(t, err)
			require.Len(t, l.Fulls, 2)
			require.Len(t, l.Deltas, 2)
			f := l.Fulls[1]
			require.Equal(t, "v2/Full-00000000-00000100-1700000000"+suffix, f.Key)
			require.Equal(t, int64(100), f.Revision)
			require.True(t, f.RevisionAtLeast)
			require.Equal(t, time.Unix(1700000000, 999e6).UTC(), f.Time, "the end of the name's second")
			require.Equal(t, int64(50), l.Fulls[0].Revision)
			d := l.Deltas[0]
			require.Equal(t, [2]int64{101, 103}, [2]int64{d.From, d.Revision})
			require.False(t, d.RevisionAtLeast)

			// The full snapshot's payload is the db and its SHA-256; HeadSum is the db's hash.
			want, db := boltDB(t, 102)
			r, err := s.OpenReader(ctx, f)
			require.NoError(t, err)
			got, err := io.ReadAll(r)
			require.NoError(t, err)
			require.Equal(t, want, got)
			sum := sha256.Sum256(db)
			require.Equal(t, sum[:], r.HeadSum())
			require.NoError(t, r.Close())

			// The delta, converted.
			r, err = s.OpenReader(ctx, d)
			require.NoError(t, err)
			dec, err := NewDeltaDecoder(r)
			require.NoError(t, err)
			require.Equal(t, [2]int64{101, 103}, [2]int64{dec.From(), dec.To()})
			var leases []Lease
			for rev := int64(101); ; {
				l, got, err := dec.Next()
				if errors.Is(err, io.EOF) {
					require.Equal(t, int64(104), rev, "revisions read")
					break
				}
				require.NoError(t, err)
				if l != nil {
					leases = append(leases, *l)
					continue
				}
				require.Equal(t, rev, got.Revision)
				require.Len(t, got.Events, len(revs[rev]))
				for i := range got.Events {
					require.Equal(t, revs[rev][i].String(), got.Events[i].String())
				}
				require.Equal(t, time.Date(2023, 11, 14, 22, 13, 20, 0, time.UTC).Add(time.Duration(rev)*time.Millisecond), got.Time)
				rev++
			}
			require.Equal(t, []Lease{{ID: 0x77, TTL: UnrecordedTTL}}, leases)
			require.NoError(t, r.Close())

			// Read-only: nothing is written, deleted or recorded.
			_, err = s.Create(ctx, catalog.Snapshot{Kind: catalog.KindFull, Revision: 200, Time: testTime})
			require.ErrorIs(t, err, ErrReadOnly)
			require.ErrorIs(t, s.Delete(ctx, f), ErrReadOnly)
			_, err = s.ListForGC(ctx)
			require.ErrorIs(t, err, ErrReadOnly)
			require.NoError(t, s.RecordDamage(ctx, f, "verify", errors.New("test")))
			lock, err := s.AcquireRestoreLock(ctx, LockOptions{})
			require.NoError(t, err)
			require.Nil(t, lock)
			require.ErrorIs(t, s.ClaimClusterID(ctx, "1234"), ErrReadOnly)
			entries, err := os.ReadDir(dir)
			require.NoError(t, err)
			names := []string{}
			for _, e := range entries {
				names = append(names, e.Name())
			}
			require.Equal(t, []string{"v1", "v2"}, names, "nothing written into the store")
		})
	}
}

// TestEBRStoreURLs: a URL that names v2/ reads the store it belongs to; layout= names the
// layout without detection; an etcdbr store is not taken for another tool's.
func TestEBRStoreURLs(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	ebrStore(t, dir, ".gz")
	for _, url := range []string{"file://" + dir + "/v2", dir + "/v2", "file://" + dir + "?layout=etcd-backup-restore", "file://" + dir + "/v2?layout=ebr"} {
		s := openExisting(t, url)
		_, err := s.Detect(ctx)
		require.NoError(t, err, url)
		l, err := s.ListBackups(ctx)
		require.NoError(t, err, url)
		require.Len(t, l.Fulls, 2, url)
		require.Len(t, l.Deltas, 2, url)
	}
	_, err := Open(ctx, "file://"+dir+"?layout=rsync", Options{})
	require.ErrorContains(t, err, `unknown layout="rsync"`)

	own, ownDir := openFileStore(t, Options{})
	full, _ := boltDB(t, 7)
	writeObject(t, own, catalog.Snapshot{Kind: catalog.KindFull, Revision: 7, Time: testTime}, full)
	putFile(t, ownDir, "v2/Full-00000000-00000100-1700000000", full) // another tool's files beside: still etcdbr's store
	s := openExisting(t, "file://"+ownDir)
	layout, err := s.Detect(ctx)
	require.NoError(t, err)
	require.Equal(t, LayoutEtcdbr, layout)
}

// TestEBRDeltaDamage: a converted delta that fails etcd-backup-restore's SHA-256 is corrupt;
// one whose events are not the revisions its name says is malformed. Both name the object.
func TestEBRDeltaDamage(t *testing.T) {
	ctx := context.Background()
	at := time.Unix(1700000000, 0)
	good := ebrEvents(t, []*mvccpb.Event{put3(101, "/a", 0), put3(102, "/b", 0)}, at)
	bad := bytes.Clone(good)
	bad[20] ^= 0x01
	for _, tt := range []struct {
		name string
		key  string
		data []byte
		want error
	}{
		{"sha256", "v2/Incr-00000101-00000102-1700000010", bad, ErrCorrupt},
		{"gzip", "v2/Incr-00000101-00000102-1700000010.gz", ebrCompress(t, good, ".gz")[:40], ErrCorrupt},
		{"revision missing", "v2/Incr-00000101-00000103-1700000010", good, ErrMalformedDelta},
		{"starts later", "v2/Incr-00000100-00000102-1700000010", good, ErrMalformedDelta},
		{"not events", "v2/Incr-00000101-00000102-1700000010", append([]byte(`{}`), func() []byte { s := sha256.Sum256([]byte(`{}`)); return s[:] }()...), ErrMalformedDelta},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			putFile(t, dir, tt.key, tt.data)
			s := openExisting(t, "file://"+dir+"?layout=etcd-backup-restore")
			l, err := s.ListBackups(ctx)
			require.NoError(t, err)
			require.Len(t, l.Deltas, 1)
			_, err = readObject(s, l.Deltas[0])
			require.ErrorIs(t, err, tt.want)
			require.ErrorContains(t, err, tt.key)
		})
	}
}

// TestConvertedDeltaFormat: format version 2 carries UnrecordedTTL; version 1 does not.
func TestConvertedDeltaFormat(t *testing.T) {
	var buf bytes.Buffer
	enc, err := NewDeltaEncoder(&buf, 5, 5)
	require.NoError(t, err)
	require.Error(t, enc.Lease(Lease{ID: 1, TTL: UnrecordedTTL}))

	buf.Reset()
	enc, err = NewConvertedDeltaEncoder(&buf, 5, 5)
	require.NoError(t, err)
	require.NoError(t, enc.Lease(Lease{ID: 1, TTL: UnrecordedTTL}))
	require.NoError(t, enc.Revision(Revision{Revision: 5, Time: testTime, Events: []*mvccpb.Event{put3(5, "/k", 1)}}))
	require.NoError(t, enc.Close())
	dec, err := NewDeltaDecoder(bytes.NewReader(buf.Bytes()))
	require.NoError(t, err)
	l, _, err := dec.Next()
	require.NoError(t, err)
	require.Equal(t, Lease{ID: 1, TTL: UnrecordedTTL}, *l)

	// The same records under version 1's header: refused as malformed.
	v1 := bytes.Clone(buf.Bytes())
	require.Equal(t, byte(convertedFormatVersion), v1[2], "the header's first byte after type and length")
	v1[2] = deltaFormatVersion
	dec, err = NewDeltaDecoder(bytes.NewReader(v1))
	require.NoError(t, err)
	_, _, err = dec.Next()
	require.ErrorIs(t, err, ErrMalformedDelta)
}

// TestSnapshotFileStore reads etcd snapshot files: a plain db with etcd's SHA-256 (etcdctl
// snapshot save), gzip, a k3s zip archive, as a local path and as an object; the revision
// comes from the db.
func TestSnapshotFileStore(t *testing.T) {
	ctx := context.Background()
	payload, _ := boltDB(t, 321)
	var zipped bytes.Buffer
	zw := zip.NewWriter(&zipped)
	w, err := zw.CreateHeader(&zip.FileHeader{Name: "etcd-snapshot-node1-1700000000", Method: zip.Deflate})
	require.NoError(t, err)
	_, err = w.Write(payload)
	require.NoError(t, err)
	require.NoError(t, zw.Close())
	for _, tt := range []struct{ name, file string }{
		{"snapshot.db", string(payload)},
		{"snapshot.db.gz", string(ebrCompress(t, payload, ".gz"))},
		{"etcd-snapshot-node1-1700000000.zip", zipped.String()},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			putFile(t, dir, tt.name, []byte(tt.file))
			mod := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
			require.NoError(t, os.Chtimes(filepath.Join(dir, tt.name), mod, mod))
			for _, url := range []string{filepath.Join(dir, tt.name), "file://" + filepath.Join(dir, tt.name)} {
				s := openExisting(t, url)
				layout, err := s.Detect(ctx)
				require.NoError(t, err)
				require.Equal(t, LayoutSnapshot, layout)
				l, err := s.ListBackups(ctx)
				require.NoError(t, err)
				require.Len(t, l.Fulls, 1)
				require.Empty(t, l.Deltas)
				f := l.Fulls[0]
				require.Equal(t, tt.name, f.Key)
				require.Equal(t, int64(321), f.Revision)
				require.Equal(t, mod, f.Time)
				require.False(t, f.RevisionAtLeast)
				got, err := readObject(s, f)
				require.NoError(t, err)
				require.Equal(t, payload, got)
			}
		})
	}

	// An object URL: detected when the object is there.
	backend, storeURL := fakeS3(t)
	_, err = backend.PutObject("backups", "snaps/etcd/snapshot.db", nil, bytes.NewReader(payload), int64(len(payload)), nil)
	require.NoError(t, err)
	s := openExisting(t, storeURL("backups/snaps/etcd/snapshot.db"))
	layout, err := s.Detect(ctx)
	require.NoError(t, err)
	require.Equal(t, LayoutSnapshot, layout)
	l, err := s.ListBackups(ctx)
	require.NoError(t, err)
	require.Len(t, l.Fulls, 1)
	require.Equal(t, int64(321), l.Fulls[0].Revision)
	got, err := readObject(s, l.Fulls[0])
	require.NoError(t, err)
	require.Equal(t, payload, got)

	// An etcd-backup-restore store in a bucket, named by its v2/ prefix.
	dir := t.TempDir()
	ebrStore(t, dir, ".gz")
	require.NoError(t, filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		require.NoError(t, err)
		rel, _ := filepath.Rel(dir, path)
		_, err = backend.PutObject("backups", "shoot--x/etcd-main/"+filepath.ToSlash(rel), nil, bytes.NewReader(b), int64(len(b)), nil)
		return err
	}))
	s = openExisting(t, storeURL("backups/shoot--x/etcd-main/v2"))
	layout, err = s.Detect(ctx)
	require.NoError(t, err)
	require.Equal(t, LayoutEtcdBackupRestore, layout)
	l, err = s.ListBackups(ctx)
	require.NoError(t, err)
	require.Len(t, l.Fulls, 2)
	require.Len(t, l.Deltas, 2)
	_, err = readObject(s, l.Deltas[1])
	require.NoError(t, err)
}

// TestCopyConverts copies an etcd-backup-restore store into an etcdbr store: full snapshots
// under the revision inside them (102, not the 100 of the name), deltas in etcdbr's format;
// each copy verified.
func TestCopyConverts(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	ebrStore(t, dir, ".gz")
	src := openExisting(t, dir)
	_, err := src.Detect(ctx)
	require.NoError(t, err)
	dst, _ := openFileStore(t, Options{})
	sel, err := SelectBackupCopies(ctx, src, dst, time.Time{})
	require.NoError(t, err)
	require.Len(t, sel.ToCopy, 4)
	done, err := CopyBackups(ctx, src, dst, sel, nil, nil)
	require.NoError(t, err)
	for _, d := range done {
		require.True(t, d.Result.Converted && d.Result.PayloadVerified, d.Snapshot.Key)
	}
	l, err := dst.ListBackups(ctx)
	require.NoError(t, err)
	var fulls, deltas []int64
	for _, f := range l.Fulls {
		fulls = append(fulls, f.Revision)
	}
	for _, d := range l.Deltas {
		deltas = append(deltas, d.From, d.Revision)
	}
	require.Equal(t, []int64{50, 102}, fulls)
	require.Equal(t, []int64{101, 103, 104, 104}, deltas)
	want, _ := boltDB(t, 102)
	got, err := readObject(dst, l.Fulls[1])
	require.NoError(t, err)
	require.Equal(t, want, got)

	// A db without etcd's SHA-256 (copied from a data dir) gets it appended.
	_, db := boltDB(t, 9)
	putFile(t, dir, "bare.db", db)
	bare := openExisting(t, filepath.Join(dir, "bare.db"))
	sel, err = SelectBackupCopies(ctx, bare, dst, time.Time{})
	require.NoError(t, err)
	_, err = CopyBackups(ctx, bare, dst, sel, nil, nil)
	require.NoError(t, err)
	l, err = dst.ListBackups(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(9), l.Fulls[0].Revision)
	got, err = readObject(dst, l.Fulls[0])
	require.NoError(t, err)
	sum := sha256.Sum256(db)
	require.Equal(t, append(bytes.Clone(db), sum[:]...), got)
}
