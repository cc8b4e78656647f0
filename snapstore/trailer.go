package snapstore

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
)

// The trailer is a zstd skippable frame that ends every object's compressed
// stream (see docs/store-format.md):
//
//	magic 0x184D2A5E u32 LE | frame length 48 u32 LE |
//	"ETBR" | version u32 LE | payload length u64 LE | sha256(payload) [32]
const (
	trailerMagic     = 0x184D2A5E
	trailerTag       = "ETBR"
	trailerVersion   = 1
	trailerFrameLen  = 48
	trailerSize      = 8 + trailerFrameLen
	trailerOffTag    = 8
	trailerOffVer    = trailerOffTag + 4
	trailerOffLength = trailerOffVer + 4
	trailerOffSum    = trailerOffLength + 8
)

// trailer is the decoded content of the trailer frame.
type trailer struct {
	length uint64
	sum    [sha256.Size]byte
}

// marshal returns the trailer frame.
func (t trailer) marshal() []byte {
	b := make([]byte, trailerSize)
	binary.LittleEndian.PutUint32(b[0:], trailerMagic)
	binary.LittleEndian.PutUint32(b[4:], trailerFrameLen)
	copy(b[trailerOffTag:], trailerTag)
	binary.LittleEndian.PutUint32(b[trailerOffVer:], trailerVersion)
	binary.LittleEndian.PutUint64(b[trailerOffLength:], t.length)
	copy(b[trailerOffSum:], t.sum[:])
	return b
}

// parseTrailer decodes a trailer frame. Its errors describe what is wrong;
// the caller adds the object key and ErrCorrupt.
func parseTrailer(b []byte) (trailer, error) {
	if len(b) != trailerSize {
		return trailer{}, fmt.Errorf("missing trailer: the object holds %d bytes, a trailer alone is %d", len(b), trailerSize)
	}
	if m := binary.LittleEndian.Uint32(b[0:]); m != trailerMagic {
		return trailer{}, fmt.Errorf("missing trailer: found magic %#08x, want %#08x", m, trailerMagic)
	}
	if n := binary.LittleEndian.Uint32(b[4:]); n != trailerFrameLen {
		return trailer{}, fmt.Errorf("bad trailer: frame length %d, want %d", n, trailerFrameLen)
	}
	if tag := b[trailerOffTag:trailerOffVer]; !bytes.Equal(tag, []byte(trailerTag)) {
		return trailer{}, fmt.Errorf("bad trailer: tag %q, want %q", tag, trailerTag)
	}
	if v := binary.LittleEndian.Uint32(b[trailerOffVer:]); v != trailerVersion {
		return trailer{}, fmt.Errorf("unsupported trailer version %d (this etcdbr reads version %d)", v, trailerVersion)
	}
	var t trailer
	t.length = binary.LittleEndian.Uint64(b[trailerOffLength:])
	copy(t.sum[:], b[trailerOffSum:])
	return t, nil
}
