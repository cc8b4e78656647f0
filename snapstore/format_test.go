package snapstore

import (
	"bytes"
	"crypto/sha256"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// TestObjectFormat checks stored objects against docs/store-format.md
// without using the package's reader.
func TestObjectFormat(t *testing.T) {
	s, dir := openFileStore(t, Options{})
	for name, payload := range map[string][]byte{
		"empty":  {},
		"small":  []byte("hello"),
		"random": randomBytes(2<<20+5, 9),
		"text":   compressible(2 << 20),
	} {
		t.Run(name, func(t *testing.T) {
			snap := writeObject(t, s, catalog.Snapshot{Kind: catalog.KindFull, Revision: int64(len(payload) + 1), Time: testTime}, payload)
			path := filepath.Join(dir, filepath.FromSlash(snap.Key))
			obj, err := os.ReadFile(path)
			require.NoError(t, err)
			assert.Equal(t, int64(len(obj)), snap.Size)

			// The object ends in the trailer frame.
			tr := obj[len(obj)-trailerSize:]
			want := trailer{length: uint64(len(payload)), sum: sha256.Sum256(payload)}
			assert.Equal(t, want.marshal(), tr)

			// A plain zstd decoder skips the trailer and yields the payload.
			dec, err := zstd.NewReader(bytes.NewReader(obj))
			require.NoError(t, err)
			defer dec.Close()
			got, err := io.ReadAll(dec)
			require.NoError(t, err)
			assert.True(t, bytes.Equal(payload, got), "klauspost decoder output differs")

			// So does the zstd command, when installed.
			zstdCLI, err := exec.LookPath("zstd")
			if err != nil {
				t.Log("zstd command not found; skipping the CLI check")
				return
			}
			out, err := exec.Command(zstdCLI, "-d", "-c", "-q", path).Output()
			require.NoError(t, err, "zstd -d %s", path)
			assert.True(t, bytes.Equal(payload, out), "zstd -d output differs")
			// And its integrity test accepts the object.
			require.NoError(t, exec.Command(zstdCLI, "-t", "-q", path).Run())
		})
	}
}

// Writer.Sum is the SHA-256 of the payload written so far; asking for it changes nothing of
// what is written, and the committed trailer records the whole payload's.
func TestWriterSum(t *testing.T) {
	s, _ := openFileStore(t, Options{})
	payload := randomBytes(3<<20+7, 4)
	w, err := s.Create(t.Context(), catalog.Snapshot{Kind: catalog.KindFull, Revision: 42, Time: testTime})
	require.NoError(t, err)
	empty := sha256.Sum256(nil)
	assert.Equal(t, empty[:], w.Sum())
	for _, cut := range []int{1 << 20, 3 << 20, len(payload)} {
		done := int(w.length)
		_, err := w.Write(payload[done:cut])
		require.NoError(t, err)
		want := sha256.Sum256(payload[:cut])
		assert.Equal(t, want[:], w.Sum(), "after %d bytes", cut)
	}
	snap, err := w.Commit()
	require.NoError(t, err)
	got, err := readObject(s, snap) // verifies the trailer's length and SHA-256
	require.NoError(t, err)
	assert.True(t, bytes.Equal(payload, got), "the payload read back")
}
