package snapstore

import (
	"context"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// assertNothingStored checks that no object is listed or exists, and for a
// file store (dir != "") that no file at all is left in its directory.
func assertNothingStored(t *testing.T, s *Store, dir string, key string) {
	t.Helper()
	ctx := context.Background()
	for _, kind := range []catalog.Kind{catalog.KindFull, catalog.KindDelta} {
		got, err := s.List(ctx, kind)
		require.NoError(t, err)
		assert.Empty(t, got, kind)
	}
	ok, err := s.bucket.Exists(ctx, key)
	require.NoError(t, err)
	assert.False(t, ok, "%s exists", key)
	if dir != "" {
		assert.Empty(t, filesIn(t, dir))
	}
}

// filesIn lists the regular files under dir.
func filesIn(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	require.NoError(t, filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, path)
		}
		return err
	}))
	return files
}

// storesWithDir is stores, also passing the directory of the file store.
func storesWithDir(t *testing.T, f func(t *testing.T, s *Store, dir string)) {
	t.Run("file", func(t *testing.T) {
		s, dir := openFileStore(t, Options{})
		f(t, s, dir)
	})
	t.Run("mem", func(t *testing.T) {
		f(t, openMemStore(t, Options{}), "")
	})
}

func TestAbort(t *testing.T) {
	storesWithDir(t, func(t *testing.T, s *Store, dir string) {
		snap := catalog.Snapshot{Kind: catalog.KindFull, Revision: 7, Time: testTime}
		w, err := s.Create(context.Background(), snap)
		require.NoError(t, err)
		_, err = w.Write(randomBytes(3<<20, 1))
		require.NoError(t, err)

		// While the upload runs, nothing is listed; a file store has a
		// temporary file next to the final name.
		for _, kind := range []catalog.Kind{catalog.KindFull, catalog.KindDelta} {
			got, err := s.List(context.Background(), kind)
			require.NoError(t, err)
			assert.Empty(t, got)
		}
		if dir != "" {
			files := filesIn(t, dir)
			require.Len(t, files, 1)
			assert.True(t, strings.HasPrefix(files[0], filepath.Join(dir, w.Key())+"."), files[0])
			assert.True(t, strings.HasSuffix(files[0], ".tmp"), files[0])
		}

		require.NoError(t, w.Abort())
		require.NoError(t, w.Abort(), "Abort twice")
		assertNothingStored(t, s, dir, w.Key())

		_, err = w.Write([]byte("x"))
		assert.Error(t, err)
		_, err = w.Commit()
		assert.Error(t, err)
		assertNothingStored(t, s, dir, w.Key())
	})
}

func TestAbortBeforeWrite(t *testing.T) {
	storesWithDir(t, func(t *testing.T, s *Store, dir string) {
		w, err := s.Create(context.Background(), catalog.Snapshot{Kind: catalog.KindDelta, From: 1, Revision: 2, Time: testTime})
		require.NoError(t, err)
		require.NoError(t, w.Abort())
		assertNothingStored(t, s, dir, w.Key())
	})
}

func TestCancelDuringWrite(t *testing.T) {
	storesWithDir(t, func(t *testing.T, s *Store, dir string) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		w, err := s.Create(ctx, catalog.Snapshot{Kind: catalog.KindFull, Revision: 7, Time: testTime})
		require.NoError(t, err)
		defer w.Abort()
		_, err = w.Write(randomBytes(2<<20, 2))
		require.NoError(t, err)

		cancel()
		_, err = w.Write(randomBytes(1<<20, 3))
		require.Error(t, err)
		assert.ErrorIs(t, err, context.Canceled)
		assert.Contains(t, err.Error(), w.Key())
		_, err = w.Commit()
		assert.ErrorIs(t, err, context.Canceled)
		require.NoError(t, w.Abort())
		assertNothingStored(t, s, dir, w.Key())
	})
}

func TestCancelBeforeCommit(t *testing.T) {
	storesWithDir(t, func(t *testing.T, s *Store, dir string) {
		ctx, cancel := context.WithCancel(context.Background())
		w, err := s.Create(ctx, catalog.Snapshot{Kind: catalog.KindFull, Revision: 7, Time: testTime})
		require.NoError(t, err)
		defer w.Abort()
		_, err = w.Write(compressible(1 << 20))
		require.NoError(t, err)
		cancel()
		_, err = w.Commit()
		assert.ErrorIs(t, err, context.Canceled)
		assertNothingStored(t, s, dir, w.Key())
	})
}

func TestCancelAfterCommit(t *testing.T) {
	storesWithDir(t, func(t *testing.T, s *Store, dir string) {
		ctx, cancel := context.WithCancel(context.Background())
		w, err := s.Create(ctx, catalog.Snapshot{Kind: catalog.KindFull, Revision: 7, Time: testTime})
		require.NoError(t, err)
		_, err = w.Write([]byte("kept"))
		require.NoError(t, err)
		snap, err := w.Commit()
		require.NoError(t, err)
		cancel()
		require.NoError(t, w.Abort())
		back, err := readObject(s, snap)
		require.NoError(t, err)
		assert.Equal(t, "kept", string(back))
	})
}
