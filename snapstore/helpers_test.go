package snapstore

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// testTime is the time the tests' objects are taken at: in the past, with milliseconds.
var testTime = time.Date(2026, 11, 25, 15, 45, 0, 123_000_000, time.UTC)

// openFileStore opens a file store in a fresh temporary directory.
func openFileStore(t *testing.T, opts Options) (*Store, string) {
	t.Helper()
	dir := t.TempDir()
	s, err := Open(context.Background(), "file://"+dir, opts)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return s, dir
}

// openMemStore opens a fresh in-memory store.
func openMemStore(t *testing.T, opts Options) *Store {
	t.Helper()
	s, err := Open(context.Background(), "mem://some/prefix", opts)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// writeObject stores payload as snap and returns the committed Snapshot.
func writeObject(t *testing.T, s *Store, snap catalog.Snapshot, payload []byte) catalog.Snapshot {
	t.Helper()
	w, err := s.Create(context.Background(), snap)
	require.NoError(t, err)
	defer w.Abort()
	_, err = io.Copy(w, bytes.NewReader(payload))
	require.NoError(t, err)
	got, err := w.Commit()
	require.NoError(t, err)
	return got
}

// readObject reads snap's payload to the end.
func readObject(s *Store, snap catalog.Snapshot) ([]byte, error) {
	r, err := s.Open(context.Background(), snap)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

// randomBytes returns n deterministic pseudo-random bytes.
func randomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	newRandom(seed).Read(b)
	return b
}

func newRandom(seed uint64) *rand.ChaCha8 {
	var s [32]byte
	s[0] = byte(seed)
	s[1] = byte(seed >> 8)
	return rand.NewChaCha8(s)
}

// compressible returns n bytes that compress well, like a bbolt db.
func compressible(n int) []byte {
	b := make([]byte, 0, n)
	for i := 0; len(b) < n; i++ {
		b = append(b, []byte("/registry/pods/default/pod-")...)
		b = append(b, byte('0'+i%10), byte('0'+i/10%10), ' ')
	}
	return b[:n]
}
