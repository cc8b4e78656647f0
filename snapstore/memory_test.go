package snapstore

import (
	"context"
	"crypto/sha256"
	"io"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// generator yields n bytes made on the fly: 64 KiB blocks alternating
// between pseudo-random and compressible data, like a db with mixed values.
type generator struct {
	left  int64
	block []byte
	off   int
	i     int
	rng   io.Reader
	text  []byte
}

func newGenerator(n int64) *generator {
	return &generator{left: n, rng: newRandom(42), text: compressible(64 << 10)}
}

func (g *generator) Read(p []byte) (int, error) {
	if g.left == 0 {
		return 0, io.EOF
	}
	if g.off == len(g.block) {
		g.i++
		if g.i%2 == 0 {
			g.block = g.text
		} else {
			g.block = make([]byte, 64<<10)
			_, _ = g.rng.Read(g.block)
		}
		g.off = 0
	}
	n := copy(p, g.block[g.off:])
	n = int(min(int64(n), g.left))
	g.off += n
	g.left -= int64(n)
	return n, nil
}

// memSampler records the peak heap while it runs.
type memSampler struct {
	stop             chan struct{}
	wg               sync.WaitGroup
	peakHeap, maxSys uint64
}

func startMemSampler() *memSampler {
	m := &memSampler{stop: make(chan struct{})}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			m.peakHeap = max(m.peakHeap, ms.HeapInuse)
			m.maxSys = max(m.maxSys, ms.Sys)
			select {
			case <-m.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return m
}

func (m *memSampler) done() (peakHeap, maxSys uint64) {
	close(m.stop)
	m.wg.Wait()
	return m.peakHeap, m.maxSys
}

// TestStreamingMemory writes and reads 512 MiB through a file store and
// checks that the heap stays bounded.
func TestStreamingMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("streams 512 MiB")
	}
	const size = 512 << 20
	const limit = 100 << 20
	s, _ := openFileStore(t, Options{})
	ctx := context.Background()

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	sampler := startMemSampler()

	w, err := s.Create(ctx, catalog.Snapshot{Kind: catalog.KindFull, Revision: 1, Time: testTime})
	require.NoError(t, err)
	defer w.Abort()
	written := sha256.New()
	n, err := io.Copy(w, io.TeeReader(newGenerator(size), written))
	require.NoError(t, err)
	require.EqualValues(t, size, n)
	snap, err := w.Commit()
	require.NoError(t, err)
	t.Logf("stored %d MiB as %d MiB", size>>20, snap.Size>>20)

	r, err := s.Open(ctx, snap)
	require.NoError(t, err)
	read := sha256.New()
	n, err = io.Copy(read, r)
	require.NoError(t, err)
	require.NoError(t, r.Close())
	require.EqualValues(t, size, n)
	assert.Equal(t, written.Sum(nil), read.Sum(nil))

	peakHeap, maxSys := sampler.done()
	t.Logf("peak HeapInuse %d MiB, Sys %d -> %d MiB", peakHeap>>20, before.Sys>>20, maxSys>>20)
	assert.Less(t, peakHeap, uint64(limit), "peak HeapInuse")
	assert.Less(t, maxSys-before.Sys, uint64(limit), "growth of Sys")
}

// heapAfterGC returns HeapInuse after collecting garbage, letting finalizers
// run between collections.
func heapAfterGC() uint64 {
	var ms runtime.MemStats
	for range 3 {
		runtime.GC()
		time.Sleep(5 * time.Millisecond)
	}
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// TestNothingRetained checks that writers and readers are garbage once
// done: gocloud's blob.Writer has a finalizer, and a reference cycle through
// it is never collected.
func TestNothingRetained(t *testing.T) {
	before := heapAfterGC()
	func() {
		s, err := Open(context.Background(), "mem://", Options{})
		require.NoError(t, err)
		defer s.Close()
		payload := randomBytes(1<<20, 8)
		for i := range 20 {
			snap := writeObject(t, s, catalog.Snapshot{Kind: catalog.KindFull, Revision: int64(i + 1), Time: testTime}, payload)
			_, err := readObject(s, snap)
			require.NoError(t, err)
			w, err := s.Create(context.Background(), catalog.Snapshot{Kind: catalog.KindDelta, From: 1, Revision: int64(i + 1), Time: testTime})
			require.NoError(t, err)
			_, err = w.Write(payload)
			require.NoError(t, err)
			require.NoError(t, w.Abort())
		}
	}()
	after := heapAfterGC()
	t.Logf("HeapInuse %d MiB before, %d MiB after", before>>20, after>>20)
	assert.Less(t, int64(after)-int64(before), int64(16<<20))
}
