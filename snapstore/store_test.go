package snapstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"testing/iotest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// stores runs f against a fresh file store and a fresh mem store.
func stores(t *testing.T, f func(t *testing.T, s *Store)) {
	t.Run("file", func(t *testing.T) {
		s, _ := openFileStore(t, Options{})
		f(t, s)
	})
	t.Run("mem", func(t *testing.T) {
		f(t, openMemStore(t, Options{}))
	})
}

func TestRoundTrip(t *testing.T) {
	payloads := map[string][]byte{
		"empty":        {},
		"small":        []byte("hello, etcd"),
		"random 5 MiB": randomBytes(5<<20+123, 1),
		"text 3 MiB":   compressible(3 << 20),
	}
	stores(t, func(t *testing.T, s *Store) {
		rev := int64(100)
		for name, payload := range payloads {
			t.Run(name, func(t *testing.T) {
				rev++
				for _, snap := range []catalog.Snapshot{
					{Kind: catalog.KindFull, Revision: rev, Time: testTime},
					{Kind: catalog.KindDelta, From: rev, Revision: rev + 10, Time: testTime},
				} {
					got := writeObject(t, s, snap, payload)
					assert.Equal(t, snap.Name(false), got.Key)
					assert.Positive(t, got.Size)
					parsed, ok := catalog.ParseName(got.Key)
					require.True(t, ok)
					parsed.Size = got.Size
					assert.Equal(t, parsed, got)

					back, err := readObject(s, got)
					require.NoError(t, err)
					assert.True(t, bytes.Equal(payload, back), "payload differs")

					// Reading by fields (no Key) finds the same object.
					back, err = readObject(s, catalog.Snapshot{Kind: snap.Kind, From: snap.From, Revision: snap.Revision, Time: snap.Time})
					require.NoError(t, err)
					assert.True(t, bytes.Equal(payload, back), "payload differs")
				}
			})
		}
	})
}

func TestCreateNormalizesSnapshot(t *testing.T) {
	s := openMemStore(t, Options{})
	at := testTime.Add(456 * time.Microsecond).In(time.FixedZone("X", -7200))
	got := writeObject(t, s, catalog.Snapshot{Kind: catalog.KindFull, Revision: 9, Time: at, Key: "ignored", Encrypted: true, Size: 99}, nil)
	assert.Equal(t, catalog.FullName(9, testTime, false), got.Key)
	assert.Equal(t, testTime, got.Time)
	assert.Equal(t, time.UTC, got.Time.Location())
	assert.False(t, got.Encrypted)
}

func TestCreateRejectsInvalid(t *testing.T) {
	s := openMemStore(t, Options{})
	for _, snap := range []catalog.Snapshot{
		{Kind: catalog.KindFull, Revision: 0, Time: testTime},
		{Kind: catalog.KindDelta, From: 5, Revision: 4, Time: testTime},
		{Kind: "x", Revision: 4, Time: testTime},
		{Kind: catalog.KindFull, Revision: 4},
	} {
		_, err := s.Create(context.Background(), snap)
		assert.Error(t, err, "%+v", snap)
	}
}

func TestListAndLatest(t *testing.T) {
	stores(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		for _, kind := range []catalog.Kind{catalog.KindFull, catalog.KindDelta} {
			_, ok, err := s.Latest(ctx, kind)
			require.NoError(t, err)
			assert.False(t, ok)
		}

		// Written out of order; revisions with different digit counts.
		fulls := []catalog.Snapshot{
			{Kind: catalog.KindFull, Revision: 1000, Time: testTime},
			{Kind: catalog.KindFull, Revision: 5, Time: testTime.Add(time.Hour)},
			{Kind: catalog.KindFull, Revision: 99, Time: testTime.Add(-time.Hour)},
			{Kind: catalog.KindFull, Revision: 99, Time: testTime.Add(-2 * time.Hour)},
		}
		deltas := []catalog.Snapshot{
			{Kind: catalog.KindDelta, From: 100, Revision: 1000, Time: testTime},
			{Kind: catalog.KindDelta, From: 6, Revision: 99, Time: testTime},
			{Kind: catalog.KindDelta, From: 1001, Revision: 1001, Time: testTime},
			{Kind: catalog.KindDelta, From: 50, Revision: 99, Time: testTime},
		}
		for _, snap := range append(fulls, deltas...) {
			writeObject(t, s, snap, []byte(fmt.Sprint(snap.Revision)))
		}
		// Things that are not ours are ignored.
		for _, key := range []string{
			"full/junk", "full/" + catalog.FullName(7, testTime, false), "delta/README", "cluster-id",
			catalog.FullName(7, testTime, false) + ".tmp", catalog.DeltaName(1, 2, testTime, false) + ".123.tmp",
		} {
			require.NoError(t, s.bucket.WriteAll(ctx, key, []byte("x"), nil))
		}

		got, err := s.List(ctx, catalog.KindFull)
		require.NoError(t, err)
		assert.Equal(t, []string{
			catalog.FullName(5, testTime.Add(time.Hour), false),
			catalog.FullName(99, testTime.Add(-2*time.Hour), false),
			catalog.FullName(99, testTime.Add(-time.Hour), false),
			catalog.FullName(1000, testTime, false),
		}, keys(got))
		for _, snap := range got {
			assert.Positive(t, snap.Size)
		}

		got, err = s.List(ctx, catalog.KindDelta)
		require.NoError(t, err)
		assert.Equal(t, []string{
			catalog.DeltaName(6, 99, testTime, false),
			catalog.DeltaName(50, 99, testTime, false),
			catalog.DeltaName(100, 1000, testTime, false),
			catalog.DeltaName(1001, 1001, testTime, false),
		}, keys(got))
		// Sorted by Revision, then From.
		assert.Equal(t, int64(6), got[0].From)
		assert.Equal(t, int64(50), got[1].From)

		latest, ok, err := s.Latest(ctx, catalog.KindFull)
		require.NoError(t, err)
		require.True(t, ok)
		assert.Equal(t, int64(1000), latest.Revision)
		latest, ok, err = s.Latest(ctx, catalog.KindDelta)
		require.NoError(t, err)
		require.True(t, ok)
		assert.Equal(t, int64(1001), latest.Revision)

		_, err = s.List(ctx, "other")
		assert.Error(t, err)
	})
}

func keys(snaps []catalog.Snapshot) []string {
	var out []string
	for _, s := range snaps {
		out = append(out, s.Key)
	}
	return out
}

func TestListPages(t *testing.T) {
	// More objects than one listing page (fileblob's page is 1000 keys).
	s, dir := openFileStore(t, Options{})
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "delta"), 0o700))
	const n = 2500
	for i := range n {
		key := catalog.DeltaName(int64(i+1), int64(i+1), testTime, false)
		require.NoError(t, os.WriteFile(filepath.Join(dir, key), nil, 0o600))
	}
	got, err := s.List(context.Background(), catalog.KindDelta)
	require.NoError(t, err)
	require.Len(t, got, n)
	for i, snap := range got {
		assert.Equal(t, int64(i+1), snap.Revision)
	}
}

func TestDelete(t *testing.T) {
	stores(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		a := writeObject(t, s, catalog.Snapshot{Kind: catalog.KindFull, Revision: 10, Time: testTime}, []byte("a"))
		b := writeObject(t, s, catalog.Snapshot{Kind: catalog.KindDelta, From: 11, Revision: 20, Time: testTime}, []byte("b"))

		require.NoError(t, s.Delete(ctx, a))
		require.NoError(t, s.Delete(ctx, a), "deleting twice is fine")
		require.NoError(t, s.Delete(ctx, catalog.Snapshot{Kind: catalog.KindDelta, From: 11, Revision: 20, Time: testTime}), "by fields")

		for _, kind := range []catalog.Kind{catalog.KindFull, catalog.KindDelta} {
			got, err := s.List(ctx, kind)
			require.NoError(t, err)
			assert.Empty(t, got)
		}
		_, err := readObject(s, b)
		assert.ErrorIs(t, err, ErrNotFound)
		assert.Contains(t, err.Error(), b.Key)

		// Only our names are deleted.
		require.NoError(t, s.bucket.WriteAll(ctx, "cluster-id", []byte("x"), nil))
		assert.Error(t, s.Delete(ctx, catalog.Snapshot{Key: "cluster-id"}))
		ok, err := s.bucket.Exists(ctx, "cluster-id")
		require.NoError(t, err)
		assert.True(t, ok)
	})
}

func TestOpenMissing(t *testing.T) {
	stores(t, func(t *testing.T, s *Store) {
		_, err := readObject(s, catalog.Snapshot{Kind: catalog.KindFull, Revision: 1, Time: testTime})
		require.Error(t, err)
		assert.True(t, errors.Is(err, ErrNotFound))
		assert.Contains(t, err.Error(), catalog.FullName(1, testTime, false))
	})
}

func TestMemPrefix(t *testing.T) {
	s := openMemStore(t, Options{})
	ctx := context.Background()
	snap := writeObject(t, s, catalog.Snapshot{Kind: catalog.KindFull, Revision: 1, Time: testTime}, []byte("x"))
	// The store's bucket is prefixed: the key is relative to "some/prefix/".
	ok, err := s.bucket.Exists(ctx, snap.Key)
	require.NoError(t, err)
	assert.True(t, ok)
	assert.Equal(t, "mem://some/prefix", s.URL())
}

func TestWriterAfterCommit(t *testing.T) {
	s := openMemStore(t, Options{})
	w, err := s.Create(context.Background(), catalog.Snapshot{Kind: catalog.KindFull, Revision: 1, Time: testTime})
	require.NoError(t, err)
	_, err = w.Write([]byte("x"))
	require.NoError(t, err)
	_, err = w.Commit()
	require.NoError(t, err)
	_, err = w.Write([]byte("y"))
	assert.Error(t, err)
	_, err = w.Commit()
	assert.Error(t, err)
	require.NoError(t, w.Abort())
	back, err := readObject(s, catalog.Snapshot{Kind: catalog.KindFull, Revision: 1, Time: testTime})
	require.NoError(t, err)
	assert.Equal(t, "x", string(back))
}

// HeadSum is the SHA-256 of the payload without its last 32 bytes once the reader reached
// io.EOF (nil before), however the payload is read, hashed aside or not.
func TestReaderHeadSum(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, "mem://headsum", Options{})
	require.NoError(t, err)
	defer s.Close()
	for i, n := range []int{0, 1, 31, 32, 33, 64, 4096 + 32, 3<<20 + 7} {
		payload := randomBytes(n, uint64(i))
		snap := writeObject(t, s, catalog.Snapshot{Kind: catalog.KindFull, Revision: int64(i + 1), Time: testTime}, payload)
		head := sha256.Sum256(payload[:max(n-sha256.Size, 0)])
		for name, wrap := range map[string]func(io.Reader) io.Reader{
			"whole": func(r io.Reader) io.Reader { return r }, "one byte": iotest.OneByteReader, "half": iotest.HalfReader,
		} {
			for _, aside := range []bool{false, true} {
				r, err := s.OpenReader(ctx, snap)
				require.NoError(t, err)
				if aside {
					r.HashAside()
				}
				require.Nil(t, r.HeadSum(), "%d bytes, %s: before the end", n, name)
				back, err := io.ReadAll(wrap(r))
				require.NoError(t, err)
				require.True(t, bytes.Equal(payload, back))
				require.Equal(t, head[:], r.HeadSum(), "%d bytes, %s, hashed aside %v", n, name, aside)
				require.NoError(t, r.Close())
			}
		}
	}
}
