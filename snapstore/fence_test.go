package snapstore

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

var errNotLeader = errors.New("not the leader any more")

// A fence that refuses leaves nothing in the store, whatever the store; one that lets the
// commit go on is called once the payload is complete and before the object is visible.
func TestCommitFenced(t *testing.T) {
	storesWithDir(t, func(t *testing.T, s *Store, dir string) {
		ctx := context.Background()
		snap := catalog.Snapshot{Kind: catalog.KindDelta, From: 5, Revision: 9, Time: testTime}

		w, err := s.Create(ctx, snap)
		require.NoError(t, err)
		defer w.Abort()
		_, err = w.Write(compressible(1 << 20))
		require.NoError(t, err)
		calls := 0
		_, err = w.CommitFenced(func(context.Context) error { calls++; return errNotLeader }, time.Minute)
		require.ErrorIs(t, err, errNotLeader)
		assert.Contains(t, err.Error(), w.Key())
		assert.Equal(t, 1, calls)
		assertNothingStored(t, s, dir, w.Key())
		_, err = w.Commit()
		assert.Error(t, err, "a fenced writer cannot be committed afterwards")
		assertNothingStored(t, s, dir, w.Key())

		payload := compressible(1 << 20)
		w, err = s.Create(ctx, snap)
		require.NoError(t, err)
		defer w.Abort()
		_, err = w.Write(payload)
		require.NoError(t, err)
		var listedDuringCheck []catalog.Snapshot
		done, err := w.CommitFenced(func(ctx context.Context) error {
			listedDuringCheck, err = s.List(ctx, catalog.KindDelta)
			return err
		}, time.Minute)
		require.NoError(t, err)
		assert.Empty(t, listedDuringCheck, "the object was visible before the fence passed")
		back, err := readObject(s, done)
		require.NoError(t, err)
		assert.True(t, bytes.Equal(payload, back))
	})
}

// A commit whose fence took its whole window is cancelled: nothing becomes visible.
func TestCommitFencedLate(t *testing.T) {
	storesWithDir(t, func(t *testing.T, s *Store, dir string) {
		const within = 20 * time.Millisecond
		w, err := s.Create(context.Background(), catalog.Snapshot{Kind: catalog.KindDelta, From: 5, Revision: 9, Time: testTime})
		require.NoError(t, err)
		defer w.Abort()
		_, err = w.Write(compressible(1 << 10))
		require.NoError(t, err)
		_, err = w.CommitFenced(func(context.Context) error {
			<-time.After(2 * within) // a leadership check as slow as the window
			return nil
		}, within)
		require.ErrorIs(t, err, ErrCommitLate)
		assertNothingStored(t, s, dir, w.Key())
	})
}

// On S3 a refused fence leaves neither an object nor a multipart upload open, for an
// object of one part (a single PUT at commit) and for a multipart one.
func TestCommitFencedS3(t *testing.T) {
	backend, storeURL := fakeS3(t)
	ctx := context.Background()
	s, err := Open(ctx, storeURL("backups/fenced"), Options{})
	require.NoError(t, err)
	defer s.Close()
	for i, size := range []int{1 << 10, 20 << 20} {
		w, err := s.Create(ctx, catalog.Snapshot{Kind: catalog.KindDelta, From: 5, Revision: int64(9 + i), Time: testTime})
		require.NoError(t, err)
		_, err = io.Copy(w, bytes.NewReader(randomBytes(size, uint64(20+i))))
		require.NoError(t, err)
		_, err = w.CommitFenced(func(context.Context) error { return errNotLeader }, time.Minute)
		require.ErrorIs(t, err, errNotLeader)
		require.NoError(t, w.Abort())
		assert.Empty(t, objectKeys(t, backend), "size %d", size)
		assert.Empty(t, openUploads(t, s), "multipart uploads left open (size %d)", size)
	}
}
