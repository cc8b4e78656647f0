package supervisor

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// copyAhead copies everything, in order, across its buffers, and stops at the first error
// of either side; once it returned, the source is not read any more.
func TestCopyAhead(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{0, 1, fetchBufferSize - 1, fetchBufferSize, fetchBufferSize + 1, (fetchBuffers+2)*fetchBufferSize + 5} {
		payload := make([]byte, n)
		for i := range payload {
			payload[i] = byte(rng.IntN(256))
		}
		for name, wrap := range map[string]func(io.Reader) io.Reader{
			"whole": func(r io.Reader) io.Reader { return r }, "half": iotest.HalfReader, "data and EOF": iotest.DataErrReader,
		} {
			var out bytes.Buffer
			require.NoError(t, copyAhead(&out, wrap(bytes.NewReader(payload))), "%d bytes, %s", n, name)
			assert.True(t, bytes.Equal(payload, out.Bytes()), "%d bytes, %s: copied", n, name)
		}
	}

	payload := bytes.Repeat([]byte("x"), 3*fetchBufferSize)
	readErr := errors.New("the store failed")
	var out bytes.Buffer
	src := io.MultiReader(bytes.NewReader(payload), iotest.ErrReader(readErr))
	require.ErrorIs(t, copyAhead(&out, src), readErr)
	assert.Equal(t, payload, out.Bytes(), "what was read before the error is written")

	writeErr := errors.New("disk full")
	var returned atomic.Bool
	var readsAfter atomic.Int64
	endless := readerFunc(func(p []byte) (int, error) {
		if returned.Load() {
			readsAfter.Add(1)
		}
		return len(p), nil
	})
	err := copyAhead(&failingWriter{left: fetchBufferSize + 10, err: writeErr}, endless)
	returned.Store(true)
	require.ErrorIs(t, err, writeErr)
	assert.Zero(t, readsAfter.Load(), "the source was read after copyAhead returned")
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// failingWriter accepts left bytes, then fails with err.
type failingWriter struct {
	left int
	err  error
}

func (w *failingWriter) Write(p []byte) (int, error) {
	if len(p) > w.left {
		n := w.left
		w.left = 0
		return n, w.err
	}
	w.left -= len(p)
	return len(p), nil
}

func TestFetch(t *testing.T) {
	ctx := context.Background()
	store, err := snapstore.Open(ctx, "mem://fetch", snapstore.Options{})
	require.NoError(t, err)
	defer store.Close()
	db := bytes.Repeat([]byte("a bbolt db is whole pages......."), 4096/32*3) // 3 pages
	sum := sha256.Sum256(db)
	put := func(rev int64, payload []byte) catalog.Snapshot {
		w, err := store.Create(ctx, catalog.Snapshot{Kind: catalog.KindFull, Revision: rev, Time: time.Now()})
		require.NoError(t, err)
		_, err = w.Write(payload)
		require.NoError(t, err)
		s, err := w.Commit()
		require.NoError(t, err)
		return s
	}
	good := put(1, append(bytes.Clone(db), sum[:]...))
	wrongSum := put(2, append(bytes.Clone(db), bytes.Repeat([]byte{7}, 32)...))
	noSum := put(3, db)
	path := filepath.Join(t.TempDir(), "db")

	require.NoError(t, fetch(ctx, store, good, path, false, nil))
	got, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, db, got, "the sha256 is cut off")

	err = fetch(ctx, store, wrongSum, path, false, nil)
	require.ErrorIs(t, err, snapstore.ErrCorrupt)
	assert.Contains(t, err.Error(), wrongSum.Key)
	assert.NoFileExists(t, path)
	require.NoError(t, fetch(ctx, store, wrongSum, path, true, nil), "skipHash does not check it")

	err = fetch(ctx, store, noSum, path, false, nil)
	require.Error(t, err)
	assert.NotErrorIs(t, err, snapstore.ErrCorrupt)
	assert.Contains(t, err.Error(), "--skip-hash-check")
	require.NoError(t, fetch(ctx, store, noSum, path, true, nil))
	got, err = os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, db, got, "without a sha256 the whole db is kept")
}
