package snapstore

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"testing/iotest"

	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

func TestCorruption(t *testing.T) {
	payload := append(randomBytes(300<<10, 7), compressible(300<<10)...)
	otherZstd := func() []byte {
		var buf bytes.Buffer
		enc, err := newEncoder(&buf)
		require.NoError(t, err)
		_, err = enc.Write([]byte("a different payload"))
		require.NoError(t, err)
		require.NoError(t, enc.Close())
		return buf.Bytes()
	}()

	tests := []struct {
		name   string
		mangle func(obj []byte) []byte
	}{
		{"flip a byte in the data", func(b []byte) []byte { b[len(b)/2] ^= 0x01; return b }},
		{"flip a byte in the first frame header", func(b []byte) []byte { b[5] ^= 0x40; return b }},
		{"flip the last data byte", func(b []byte) []byte { b[len(b)-trailerSize-1] ^= 0x80; return b }},
		{"truncate 1 byte", func(b []byte) []byte { return b[:len(b)-1] }},
		{"drop the trailer", func(b []byte) []byte { return b[:len(b)-trailerSize] }},
		{"truncate to half", func(b []byte) []byte { return b[:len(b)/2] }},
		{"truncate to 10 bytes", func(b []byte) []byte { return b[:10] }},
		{"empty object", func(b []byte) []byte { return b[:0] }},
		{"trailer only", func(b []byte) []byte { return b[len(b)-trailerSize:] }},
		{"junk after the trailer", func(b []byte) []byte { return append(b, "junk"...) }},
		{"wrong magic", func(b []byte) []byte { b[len(b)-trailerSize] ^= 0x01; return b }},
		{"wrong frame length", func(b []byte) []byte { b[len(b)-trailerSize+4]++; return b }},
		{"wrong tag", func(b []byte) []byte { b[len(b)-trailerSize+trailerOffTag] = 'X'; return b }},
		{"wrong version", func(b []byte) []byte { b[len(b)-trailerSize+trailerOffVer] = 2; return b }},
		{"wrong length", func(b []byte) []byte {
			off := len(b) - trailerSize + trailerOffLength
			binary.LittleEndian.PutUint64(b[off:], binary.LittleEndian.Uint64(b[off:])+1)
			return b
		}},
		{"wrong sha256", func(b []byte) []byte { b[len(b)-1] ^= 0x01; return b }},
		{"trailer of another payload", func(b []byte) []byte {
			other := trailer{length: uint64(len(payload)), sum: sha256.Sum256([]byte("other"))}
			return append(b[:len(b)-trailerSize], other.marshal()...)
		}},
		{"data of another payload", func(b []byte) []byte {
			return append(bytes.Clone(otherZstd), b[len(b)-trailerSize:]...)
		}},
		{"extra frame before the trailer", func(b []byte) []byte {
			out := bytes.Clone(b[:len(b)-trailerSize])
			out = append(out, otherZstd...)
			return append(out, b[len(b)-trailerSize:]...)
		}},
	}
	s, dir := openFileStore(t, Options{})
	snap := writeObject(t, s, catalog.Snapshot{Kind: catalog.KindFull, Revision: 42, Time: testTime}, payload)
	path := filepath.Join(dir, filepath.FromSlash(snap.Key))
	original, err := os.ReadFile(path)
	require.NoError(t, err)

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.NoError(t, os.WriteFile(path, tt.mangle(bytes.Clone(original)), 0o600))
			t.Cleanup(func() { require.NoError(t, os.WriteFile(path, original, 0o600)) })

			got, err := readObject(s, snap)
			require.Error(t, err, "read %d bytes without an error", len(got))
			assert.ErrorIs(t, err, ErrCorrupt)
			assert.Contains(t, err.Error(), snap.Key)
			t.Log(err)

			// Small reads see the same.
			r, err := s.Open(t.Context(), snap)
			require.NoError(t, err)
			defer r.Close()
			_, err = io.Copy(io.Discard, iotest.OneByteReader(r))
			assert.ErrorIs(t, err, ErrCorrupt)
			// The error is sticky.
			_, again := r.Read(make([]byte, 10))
			assert.Equal(t, err, again)

			// Hashing aside sees the same.
			aside, err := s.OpenReader(t.Context(), snap)
			require.NoError(t, err)
			defer aside.Close()
			aside.HashAside()
			_, err = io.Copy(io.Discard, aside)
			assert.ErrorIs(t, err, ErrCorrupt)
		})
	}

	back, err := readObject(s, snap)
	require.NoError(t, err)
	assert.Equal(t, payload, back)
}

// TestStoreErrorIsNotCorruption checks that a failing store is reported as
// it is, not as a corrupt object.
func TestStoreErrorIsNotCorruption(t *testing.T) {
	s, dir := openFileStore(t, Options{})
	snap := writeObject(t, s, catalog.Snapshot{Kind: catalog.KindFull, Revision: 42, Time: testTime}, randomBytes(1<<20, 3))
	obj, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(snap.Key)))
	require.NoError(t, err)

	errNetwork := errors.New("connection reset by peer")
	for _, cut := range []int{0, 100, len(obj) / 2, len(obj) - trailerSize, len(obj) - 1} {
		body := io.NopCloser(io.MultiReader(bytes.NewReader(obj[:cut]), iotest.ErrReader(errNetwork)))
		r, err := newPayloadReader(snap.Key, "mem://", body, false, nil, nil)
		require.NoError(t, err)
		_, err = io.Copy(io.Discard, r)
		require.Error(t, err, "cut at %d", cut)
		assert.ErrorIs(t, err, errNetwork, "cut at %d", cut)
		assert.NotErrorIs(t, err, ErrCorrupt, "cut at %d", cut)
		require.NoError(t, r.Close())
	}
}

func TestTrailerSplitter(t *testing.T) {
	for _, n := range []int{0, 1, trailerSize - 1, trailerSize, trailerSize + 1, splitBufSize - 1, splitBufSize, splitBufSize + 1, 3*splitBufSize + 17} {
		data := randomBytes(n, uint64(n))
		for name, wrap := range map[string]func(io.Reader) io.Reader{
			"plain":    func(r io.Reader) io.Reader { return r },
			"one byte": iotest.OneByteReader,
			"half":     iotest.HalfReader,
			"data+EOF": iotest.DataErrReader,
		} {
			split := &trailerSplitter{src: wrap(bytes.NewReader(data)), buf: make([]byte, splitBufSize)}
			got, err := io.ReadAll(split)
			require.NoError(t, err)
			keep := max(n-trailerSize, 0)
			assert.Equal(t, data[:keep], got, "%d bytes, %s", n, name)
			assert.Equal(t, data[keep:], split.trailer(), "%d bytes, %s", n, name)
		}
	}
}

func TestTrailerRoundTrip(t *testing.T) {
	want := trailer{length: 1<<40 + 3, sum: sha256.Sum256([]byte("x"))}
	b := want.marshal()
	require.Len(t, b, trailerSize)
	got, err := parseTrailer(b)
	require.NoError(t, err)
	assert.Equal(t, want, got)

	// It is a zstd skippable frame that a decoder skips.
	h := zstd.Header{}
	require.NoError(t, h.Decode(b))
	assert.True(t, h.Skippable)
	assert.Equal(t, uint32(trailerFrameLen), h.SkippableSize)
}
