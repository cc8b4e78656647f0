package snapstore

import (
	"io"
	"runtime"

	"github.com/klauspost/compress/zstd"
)

// Compression settings. They bound memory: the encoder holds one window
// and at most encoderConcurrency blocks in flight; the decoder refuses frames
// that ask for a window above maxDecodeWindow.
const (
	encoderLevel       = zstd.SpeedFastest
	encoderWindow      = 4 << 20
	maxDecodeWindow    = 64 << 20
	encoderConcurrency = 2 // compress one block while the next one fills
)

// newEncoder returns a streaming zstd encoder writing to w. Every frame
// carries a content checksum, and an empty payload still produces a frame,
// so that every object starts with a regular zstd frame.
func newEncoder(w io.Writer) (*zstd.Encoder, error) {
	return zstd.NewWriter(w,
		zstd.WithEncoderLevel(encoderLevel),
		zstd.WithWindowSize(encoderWindow),
		zstd.WithEncoderConcurrency(min(encoderConcurrency, runtime.GOMAXPROCS(0))),
		zstd.WithEncoderCRC(true),
		zstd.WithZeroFrames(true),
	)
}

// newDecoder returns a streaming zstd decoder reading r, which verifies frame
// checksums. It decodes synchronously, on the goroutine that reads from it
// (as fast as the asynchronous mode here, and it never reads r behind the
// caller's back, so closing the object needs no coordination).
func newDecoder(r io.Reader) (*zstd.Decoder, error) {
	return zstd.NewReader(r,
		zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderMaxWindow(maxDecodeWindow),
	)
}
