package snapstore

import (
	"bytes"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TailHolder passes everything but the last 32 bytes, however the payload is read into it,
// and counts what was written.
func TestTailHolderReads(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, 31, 32, 33, 64, 4096, 8192 + 32, 100_000} {
		payload := make([]byte, n)
		for i := range payload {
			payload[i] = byte(rng.IntN(256))
		}
		for name, wrap := range map[string]func(io.Reader) io.Reader{
			"whole": func(r io.Reader) io.Reader { return r }, "one byte": iotest.OneByteReader, "half": iotest.HalfReader,
		} {
			var out bytes.Buffer
			d := &TailHolder{W: &out, Keep: sha256.Size}
			_, err := io.Copy(d, wrap(bytes.NewReader(payload)))
			require.NoError(t, err)
			keep := max(n-sha256.Size, 0)
			assert.True(t, bytes.Equal(payload[:keep], out.Bytes()), "%d bytes, %s: written", n, name)
			assert.True(t, bytes.Equal(payload[keep:], d.Tail()), "%d bytes, %s: held back", n, name)
			assert.Equal(t, int64(n), d.Written())
		}
	}
}

// TailHolder passes on everything but the last bytes, however the stream is cut into
// writes, and what it passed on hashes as the bytes before the tail.
func TestTailHolderWrites(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, size := range []int{0, 1, 31, 32, 33, 64, 1000, 100_000} {
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(rng.IntN(256))
		}
		for _, maxWrite := range []int{1, 7, 32, 33, 4096, size + 1} {
			var out bytes.Buffer
			h := sha256.New()
			tw := &TailHolder{W: io.MultiWriter(&out, h), Keep: sha256.Size}
			for rest := data; len(rest) > 0; {
				n := min(len(rest), 1+rng.IntN(maxWrite))
				w, err := tw.Write(rest[:n])
				require.NoError(t, err)
				require.Equal(t, n, w)
				rest = rest[n:]
			}
			cut := max(0, size-sha256.Size)
			require.True(t, bytes.Equal(data[:cut], out.Bytes()), "size %d, writes up to %d: %d bytes out", size, maxWrite, out.Len())
			require.True(t, bytes.Equal(data[cut:], tw.Tail()), "size %d, writes up to %d: tail %x", size, maxWrite, tw.Tail())
			sum := sha256.Sum256(data[:cut])
			require.Equal(t, sum[:], h.Sum(nil), "size %d, writes up to %d", size, maxWrite)
		}
	}
}
