package snapstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"syscall"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// TestConformance runs the same checks against every kind of store: file,
// mem, and real MinIO (S3), fake-gcs-server (GCS) and Azurite (Azure)
// servers. The 1 GiB upload, the killed upload and the server restarts are
// in conformance_large_test.go and restart_test.go.
func TestConformance(t *testing.T) {
	forEachKind(t, func(t *testing.T, kind storeKind) {
		t.Run("write, list in order, read back", func(t *testing.T) { testWriteListRead(t, kind) })
		t.Run("ranged read", func(t *testing.T) { testRangedRead(t, kind) })
		t.Run("resume a broken read", func(t *testing.T) { testResume(t, kind) })
		t.Run("delete", func(t *testing.T) { testDelete(t, kind) })
		t.Run("abort and cancel", func(t *testing.T) { testAbortCancel(t, kind) })
		t.Run("copy", func(t *testing.T) { testCopy(t, kind) })
		t.Run("encryption", func(t *testing.T) { testEncryption(t, kind) })
	})
}

// testObject is an object written by a conformance test.
type testObject struct {
	snap    catalog.Snapshot
	payload []byte
}

// writeMixed writes full snapshots and deltas of various sizes in an order
// that is not revision order, and returns them in revision order.
func writeMixed(t *testing.T, s *Store) []testObject {
	t.Helper()
	at := func(sec int) time.Time { return testTime.Add(time.Duration(sec) * time.Second) }
	objs := []testObject{
		{catalog.Snapshot{Kind: catalog.KindDelta, From: 1001, Revision: 1500, Time: at(40)}, randomBytes(20<<20+17, 1)}, // multipart
		{catalog.Snapshot{Kind: catalog.KindFull, Revision: 1000, Time: at(30)}, compressible(3 << 20)},
		{catalog.Snapshot{Kind: catalog.KindFull, Revision: 9, Time: at(10)}, []byte{}},
		{catalog.Snapshot{Kind: catalog.KindDelta, From: 10, Revision: 1000, Time: at(20)}, []byte("small")},
		{catalog.Snapshot{Kind: catalog.KindFull, Revision: 1500, Time: at(41)}, randomBytes(1<<20, 2)},
		{catalog.Snapshot{Kind: catalog.KindDelta, From: 1501, Revision: 1501, Time: at(50)}, randomBytes(8<<20, 3)}, // one part exactly
	}
	for i := range objs {
		objs[i].snap = writeObject(t, s, objs[i].snap, objs[i].payload)
	}
	return objs
}

func testWriteListRead(t *testing.T, kind storeKind) {
	ctx := context.Background()
	ts := newTestStore(t, kind)
	s := ts.open(t, Options{})
	objs := writeMixed(t, s)
	ts.putRaw(t, s, "full/notes.txt", []byte("not a backup"))
	ts.putRaw(t, s, catalog.FullName(5, testTime, false)+".a1b2.tmp", []byte("partial"))

	for _, kind := range []catalog.Kind{catalog.KindFull, catalog.KindDelta} {
		var want []catalog.Snapshot
		for _, o := range objs {
			if o.snap.Kind == kind {
				want = append(want, o.snap)
			}
		}
		slices.SortFunc(want, catalog.CompareSnapshots)
		got, err := s.List(ctx, kind)
		require.NoError(t, err)
		assert.Equal(t, want, got, "%s listing", kind)
		latest, ok, err := s.Latest(ctx, kind)
		require.NoError(t, err)
		require.True(t, ok)
		assert.Equal(t, want[len(want)-1], latest)
	}
	for _, o := range objs {
		back, err := readObject(s, o.snap)
		require.NoError(t, err, o.snap.Key)
		assert.True(t, bytes.Equal(o.payload, back), "payload of %s differs", o.snap.Key)
	}
	_, err := readObject(s, catalog.Snapshot{Kind: catalog.KindFull, Revision: 77, Time: testTime})
	assert.ErrorIs(t, err, ErrNotFound)

	if kind.server != nil {
		// Another prefix of the same bucket is another store.
		other, err := Open(ctx, ts.sibling("etcd/other"), Options{})
		require.NoError(t, err)
		defer other.Close()
		list, err := other.List(ctx, catalog.KindFull)
		require.NoError(t, err)
		assert.Empty(t, list)
		theirs := writeObject(t, other, catalog.Snapshot{Kind: catalog.KindFull, Revision: 2000, Time: testTime}, []byte("theirs"))
		mine, err := s.List(ctx, catalog.KindFull)
		require.NoError(t, err)
		assert.NotContains(t, mine, theirs)
	}
}

// testRangedRead checks the ranged reads that resuming a download relies on.
func testRangedRead(t *testing.T, kind storeKind) {
	ctx := context.Background()
	ts := newTestStore(t, kind)
	s := ts.open(t, Options{})
	snap := writeObject(t, s, catalog.Snapshot{Kind: catalog.KindFull, Revision: 3, Time: testTime}, randomBytes(9<<20, 4))
	whole, err := s.bucket.ReadAll(ctx, snap.Key)
	require.NoError(t, err)
	require.EqualValues(t, snap.Size, len(whole))
	for _, off := range []int64{0, 1, 4 << 20, 8 << 20, snap.Size - 1} {
		body, err := bucketRange(s.bucket, snap.Key)(ctx, off)
		require.NoError(t, err, "offset %d", off)
		got, err := io.ReadAll(body)
		require.NoError(t, err)
		require.NoError(t, body.Close())
		assert.Equal(t, snap.Size, body.Size(), "size reported at offset %d", off)
		assert.True(t, bytes.Equal(whole[off:], got), "bytes from offset %d differ", off)
	}
}

// faultyRanges breaks the object's stream after every `every` bytes with a
// connection reset, and fails the first open after each break with a
// server error, until `breaks` breaks happened.
type faultyRanges struct {
	open          rangeOpener
	every, breaks int
	failOpen      bool
	opens         []int64 // the offsets opened
}

func (f *faultyRanges) opener(ctx context.Context, off int64) (rangeBody, error) {
	if f.failOpen {
		f.failOpen = false
		return nil, errors.New("503 Service Unavailable (injected)")
	}
	body, err := f.open(ctx, off)
	if err != nil {
		return nil, err
	}
	f.opens = append(f.opens, off)
	if f.breaks == 0 {
		return body, nil
	}
	f.breaks--
	f.failOpen = true
	return &breakingBody{rangeBody: body, left: f.every}, nil
}

type breakingBody struct {
	rangeBody
	left int
}

func (b *breakingBody) Read(p []byte) (int, error) {
	if b.left == 0 {
		return 0, fmt.Errorf("read tcp: %w (injected)", syscall.ECONNRESET)
	}
	n, err := b.rangeBody.Read(p[:min(len(p), b.left)])
	b.left -= n
	return n, err
}

// testResume reads objects through the real pipeline over streams that
// break: the payload comes back whole and verified, each resume starting
// where the previous stream stopped.
func testResume(t *testing.T, kind storeKind) {
	ctx := context.Background()
	ts := newTestStore(t, kind)
	id, err := age.GenerateX25519Identity()
	require.NoError(t, err)
	s := ts.open(t, Options{
		Recipients: []age.Recipient{id.Recipient()},
		Identities: []age.Identity{id},
		Retry:      RetryPolicy{Attempts: 3, Initial: time.Millisecond, Max: 10 * time.Millisecond},
	})
	payload := append(randomBytes(4<<20, 5), compressible(2<<20)...)
	snap := writeObject(t, s, catalog.Snapshot{Kind: catalog.KindDelta, From: 5, Revision: 9, Time: testTime}, payload)

	faults := &faultyRanges{open: bucketRange(s.bucket, snap.Key), every: 1<<20 + 3, breaks: 3}
	body, err := openResuming(ctx, faults.opener, snap.Key, s.url, s.opts.Retry, s.opts.Log)
	require.NoError(t, err)
	r, err := newPayloadReader(snap.Key, s.url, body, true, s.opts.Identities, nil)
	require.NoError(t, err)
	back, err := io.ReadAll(r)
	require.NoError(t, err)
	require.NoError(t, r.Close())
	assert.True(t, bytes.Equal(payload, back), "payload differs")
	assert.Equal(t, 3, body.resumes)
	every := int64(faults.every)
	assert.Equal(t, []int64{0, every, 2 * every, 3 * every}, faults.opens)

	// A stream that breaks after its last byte needs no resume.
	faults = &faultyRanges{open: bucketRange(s.bucket, snap.Key), every: int(snap.Size), breaks: 1}
	body, err = openResuming(ctx, faults.opener, snap.Key, s.url, s.opts.Retry, s.opts.Log)
	require.NoError(t, err)
	r, err = newPayloadReader(snap.Key, s.url, body, true, s.opts.Identities, nil)
	require.NoError(t, err)
	back, err = io.ReadAll(r)
	require.NoError(t, err)
	require.NoError(t, r.Close())
	assert.True(t, bytes.Equal(payload, back), "payload differs")
	assert.Equal(t, 0, body.resumes)
	assert.Equal(t, []int64{0}, faults.opens)

	// A stream that keeps failing without progress is given up, with the cause.
	faults = &faultyRanges{open: bucketRange(s.bucket, snap.Key), every: 200_000, breaks: 1000}
	body, err = openResuming(ctx, func(ctx context.Context, off int64) (rangeBody, error) {
		b, err := faults.opener(ctx, off)
		if err != nil {
			return nil, err
		}
		if off > 0 {
			b.(*breakingBody).left = 0 // no progress at all after the first break
		}
		return b, nil
	}, snap.Key, s.url, s.opts.Retry, s.opts.Log)
	require.NoError(t, err)
	r, err = newPayloadReader(snap.Key, s.url, body, true, s.opts.Identities, nil)
	require.NoError(t, err)
	_, err = io.ReadAll(r)
	require.Error(t, err)
	assert.ErrorIs(t, err, syscall.ECONNRESET)
	assert.NotErrorIs(t, err, ErrCorrupt, "a store failure is not corruption")
	assert.Contains(t, err.Error(), "gave up after 3 tries")
	require.NoError(t, r.Close())
}

func testDelete(t *testing.T, kind storeKind) {
	ctx := context.Background()
	ts := newTestStore(t, kind)
	s := ts.open(t, Options{})
	a := writeObject(t, s, catalog.Snapshot{Kind: catalog.KindFull, Revision: 10, Time: testTime}, []byte("a"))
	b := writeObject(t, s, catalog.Snapshot{Kind: catalog.KindDelta, From: 11, Revision: 12, Time: testTime}, []byte("b"))
	ts.putRaw(t, s, "full/notes.txt", []byte("not a backup"))

	require.NoError(t, s.Delete(ctx, a))
	require.NoError(t, s.Delete(ctx, a), "deleting twice is not an error")
	fulls, err := s.List(ctx, catalog.KindFull)
	require.NoError(t, err)
	assert.Empty(t, fulls)
	_, err = readObject(s, a)
	assert.ErrorIs(t, err, ErrNotFound)
	assert.Error(t, s.Delete(ctx, catalog.Snapshot{Key: "full/notes.txt"}), "only backup objects are deleted")
	assert.ElementsMatch(t, []string{b.Key, "full/notes.txt"}, ts.rawKeys(t, s))
}

// testEncryption writes a mixed store (plain objects, and objects encrypted
// to two different keys) and reads it with every combination of identities.
func testEncryption(t *testing.T, kind storeKind) {
	ctx := context.Background()
	ts := newTestStore(t, kind)
	alice, err := age.GenerateX25519Identity()
	require.NoError(t, err)
	bob, err := age.GenerateX25519Identity()
	require.NoError(t, err)
	s := ts.open(t, Options{})
	marker := []byte("/registry/secrets/kube-system/bootstrap-token-abcdef")
	payload := bytes.Repeat(marker, 1<<14)

	plain := writeObject(t, s, catalog.Snapshot{Kind: catalog.KindFull, Revision: 1, Time: testTime}, payload)
	s.opts.Recipients = []age.Recipient{alice.Recipient()}
	toAlice := writeObject(t, s, catalog.Snapshot{Kind: catalog.KindDelta, From: 2, Revision: 3, Time: testTime}, payload)
	s.opts.Recipients = []age.Recipient{bob.Recipient()}
	toBob := writeObject(t, s, catalog.Snapshot{Kind: catalog.KindDelta, From: 4, Revision: 5, Time: testTime}, payload)
	assert.False(t, plain.Encrypted)
	assert.True(t, toAlice.Encrypted)
	assert.True(t, toBob.Encrypted)

	// The encrypted objects hold nothing of the payload in clear.
	for _, snap := range []catalog.Snapshot{toAlice, toBob} {
		raw, err := s.bucket.ReadAll(ctx, snap.Key)
		require.NoError(t, err)
		assert.False(t, bytes.Contains(raw, marker[:16]), "%s contains clear text", snap.Key)
	}

	for _, tc := range []struct {
		name       string
		identities []age.Identity
		readable   []catalog.Snapshot
		refused    []catalog.Snapshot
	}{
		{"no identity", nil, []catalog.Snapshot{plain}, []catalog.Snapshot{toAlice, toBob}},
		{"alice", []age.Identity{alice}, []catalog.Snapshot{plain, toAlice}, []catalog.Snapshot{toBob}},
		{"both", []age.Identity{bob, alice}, []catalog.Snapshot{plain, toAlice, toBob}, nil},
	} {
		s.opts.Identities = tc.identities
		for _, snap := range tc.readable {
			back, err := readObject(s, snap)
			require.NoError(t, err, "%s: %s", tc.name, snap.Key)
			assert.True(t, bytes.Equal(payload, back), "%s: %s", tc.name, snap.Key)
		}
		for _, snap := range tc.refused {
			_, err := readObject(s, snap)
			require.ErrorIs(t, err, ErrNoIdentity, "%s: %s", tc.name, snap.Key)
			assert.Contains(t, err.Error(), snap.Key, "the error names the object")
			assert.NotErrorIs(t, err, ErrCorrupt)
		}
	}
}

// testAbortCancel aborts uploads and cancels their context at various
// points: nothing becomes visible, and the store takes new uploads.
func testAbortCancel(t *testing.T, kind storeKind) {
	ctx := context.Background()
	ts := newTestStore(t, kind)
	s := ts.open(t, Options{})

	w, err := s.Create(ctx, catalog.Snapshot{Kind: catalog.KindFull, Revision: 7, Time: testTime})
	require.NoError(t, err)
	require.NoError(t, w.Abort(), "abort before any write")

	w, err = s.Create(ctx, catalog.Snapshot{Kind: catalog.KindFull, Revision: 8, Time: testTime})
	require.NoError(t, err)
	_, err = w.Write(randomBytes(20<<20, 6)) // several parts
	require.NoError(t, err)
	require.NoError(t, w.Abort(), "abort after parts were uploaded")
	_, err = w.Commit()
	assert.Error(t, err, "commit after abort")

	cctx, cancel := context.WithCancel(ctx)
	w, err = s.Create(cctx, catalog.Snapshot{Kind: catalog.KindDelta, From: 9, Revision: 10, Time: testTime})
	require.NoError(t, err)
	_, err = w.Write(randomBytes(20<<20, 7))
	require.NoError(t, err)
	cancel()
	_, err = w.Commit()
	assert.ErrorIs(t, err, context.Canceled, "commit after cancel")
	require.NoError(t, w.Abort())

	for _, k := range []catalog.Kind{catalog.KindFull, catalog.KindDelta} {
		list, err := s.List(ctx, k)
		require.NoError(t, err)
		assert.Empty(t, list, "%s objects visible after aborts", k)
	}
	for _, key := range ts.rawKeys(t, s) {
		_, ok := catalog.ParseName(key)
		assert.False(t, ok, "object %s is visible under a backup name", key)
	}
	if kind.server != nil {
		incomplete, err := kind.server.IncompleteUploads(ctx, ts.bucket)
		require.NoError(t, err)
		t.Logf("%s after aborts: incomplete uploads %q", kind.name, incomplete)
		if kind.server.Kind == "s3" {
			assert.Empty(t, incomplete, "aborted S3 uploads abort their multipart upload")
		}
	}
	snap := writeObject(t, s, catalog.Snapshot{Kind: catalog.KindFull, Revision: 11, Time: testTime}, []byte("after"))
	back, err := readObject(s, snap)
	require.NoError(t, err)
	assert.Equal(t, "after", string(back))
}
