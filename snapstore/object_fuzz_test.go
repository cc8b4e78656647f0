package snapstore

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"testing"

	"filippo.io/age"

	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// fuzzIdentity encrypts and decrypts the objects of FuzzObjectReader's encrypted inputs.
var fuzzIdentity = func() *age.X25519Identity {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		panic(err)
	}
	return id
}()

// buildObject makes the object a Writer stores for payload: zstd frames (newEncoder, the
// Writer's own), the trailer, and age around both when encrypted.
func buildObject(t testing.TB, payload []byte, encrypted bool) []byte {
	t.Helper()
	var obj bytes.Buffer
	sink := io.Writer(&obj)
	var sealer io.WriteCloser
	if encrypted {
		var err error
		if sealer, err = age.Encrypt(&obj, fuzzIdentity.Recipient()); err != nil {
			t.Fatal(err)
		}
		sink = sealer
	}
	enc, err := newEncoder(sink)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := enc.Write(payload); err != nil {
		t.Fatal(err)
	}
	if err := enc.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := sink.Write(trailer{length: uint64(len(payload)), sum: sha256.Sum256(payload)}.marshal()); err != nil {
		t.Fatal(err)
	}
	if sealer != nil {
		if err := sealer.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return obj.Bytes()
}

// readPayload reads obj as Store.Open reads an object: through the same pipeline, to the end.
func readPayload(obj []byte, encrypted bool) ([]byte, error) {
	r, err := newPayloadReader("delta/obj", "mem://fuzz", io.NopCloser(bytes.NewReader(obj)), encrypted,
		[]age.Identity{fuzzIdentity}, nil)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

// mutate applies the edits that muts encodes, 4 bytes each: the kind (flip, cut, insert,
// delete), a position (u16, modulo the length) and a byte.
func mutate(obj, muts []byte) []byte {
	out := bytes.Clone(obj)
	for ; len(muts) >= 4; muts = muts[4:] {
		if len(out) == 0 {
			break
		}
		pos := int(binary.LittleEndian.Uint16(muts[1:])) % len(out)
		switch muts[0] % 4 {
		case 0:
			out[pos] ^= muts[3]
		case 1:
			out = out[:pos]
		case 2:
			out = append(out[:pos], append([]byte{muts[3]}, out[pos:]...)...)
		case 3:
			out = append(out[:pos], out[pos+1:]...)
		}
	}
	return out
}

// FuzzObjectReader reads objects through the store's reading pipeline ([age] -> trailer
// split -> zstd -> sha256 against the trailer).
//
// With muts empty, data is an object as stored (plain): no input panics, every error wraps
// ErrCorrupt, and an object that reads to its end ends with a trailer that, parsed
// independently here, records the length and SHA-256 of what was read; a trailer that
// parses marshals back to the same bytes.
//
// With muts, data is a payload: it is written as the Writer writes it (encrypted or not),
// the object is edited as muts says, and read back: it reads to its end only with exactly
// the payload written. Any edit that changes what it holds is caught (as corrupt; for an
// encrypted object whose recipient stanza was hit, as ErrNoIdentity).
func FuzzObjectReader(f *testing.F) {
	from, to, items := sampleDelta()
	delta := encodeDelta(f, from, to, items)
	// Objects as a store holds them, written by the Writer.
	s, err := Open(f.Context(), "mem://fuzz", Options{})
	if err != nil {
		f.Fatal(err)
	}
	defer s.Close()
	for i, payload := range [][]byte{{}, []byte("a"), delta, compressible(3000)} {
		w, err := s.Create(f.Context(), catalog.Snapshot{Kind: catalog.KindDelta, From: 1, Revision: int64(i + 1), Time: testTime})
		if err != nil {
			f.Fatal(err)
		}
		if _, err := w.Write(payload); err != nil {
			f.Fatal(err)
		}
		snap, err := w.Commit()
		if err != nil {
			f.Fatal(err)
		}
		obj, err := s.bucket.ReadAll(f.Context(), snap.Key)
		if err != nil {
			f.Fatal(err)
		}
		if !bytes.Equal(obj, buildObject(f, payload, false)) {
			f.Fatalf("buildObject does not write what the Writer writes for a %d-byte payload", len(payload))
		}
		f.Add(obj, []byte{}, false)
	}
	f.Add(delta, []byte{0, 10, 0, 0x40}, false)
	f.Add(delta, []byte{1, 0xff, 0xff, 0}, true)
	f.Add([]byte("a"), []byte{2, 3, 0, 'x', 3, 1, 0, 0}, false)
	f.Add(compressible(500), []byte{0, 0, 1, 1}, true)
	f.Fuzz(func(t *testing.T, data, muts []byte, encrypted bool) {
		if len(muts) == 0 {
			got, err := readPayload(data, false)
			last := data[max(0, len(data)-trailerSize):]
			if tr, perr := parseTrailer(last); perr == nil && !bytes.Equal(tr.marshal(), last) {
				t.Fatalf("trailer %x parses and marshals to %x", last, tr.marshal())
			}
			if err != nil {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("error without ErrCorrupt: %v", err)
				}
				return
			}
			le := binary.LittleEndian
			sum := sha256.Sum256(got)
			if len(last) != trailerSize || le.Uint32(last) != 0x184D2A5E || le.Uint32(last[4:]) != 48 ||
				string(last[8:12]) != "ETBR" || le.Uint32(last[12:]) != 1 || le.Uint64(last[16:]) != uint64(len(got)) ||
				!bytes.Equal(last[24:], sum[:]) {
				t.Fatalf("read %d bytes (sha256 %x) from an object that ends with %x", len(got), sum, last)
			}
			return
		}
		obj := mutate(buildObject(t, data, encrypted), muts)
		got, err := readPayload(obj, encrypted)
		if err == nil && !bytes.Equal(got, data) {
			t.Fatalf("an edited object read to its end with %d bytes that are not the %d written", len(got), len(data))
		}
		// A damaged recipient stanza cannot be told from another recipient's.
		if err != nil && !errors.Is(err, ErrCorrupt) && !(encrypted && errors.Is(err, ErrNoIdentity)) {
			t.Fatalf("error without ErrCorrupt: %v", err)
		}
	})
}

// TestObjectReaderBoundsWindow: a zstd frame that claims a window or a content size of 4 GiB
// is refused as corrupt before anything of that size is allocated (readers refuse windows
// above 64 MiB): a length in a damaged object never becomes an allocation.
func TestObjectReaderBoundsWindow(t *testing.T) {
	payload := []byte("x")
	tr := trailer{length: 1, sum: sha256.Sum256(payload)}.marshal()
	for name, frame := range map[string][]byte{
		// Single segment, a 4-byte content size of 4 GiB - 1: the window is the content size.
		"content size": {0x28, 0xb5, 0x2f, 0xfd, 0xa0, 0xff, 0xff, 0xff, 0xff, 0x09, 0x00, 0x00, 'x'},
		// A window descriptor of 2^(10+22) = 4 GiB.
		"window": {0x28, 0xb5, 0x2f, 0xfd, 0x00, 22 << 3, 0x09, 0x00, 0x00, 'x'},
	} {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, err := readPayload(append(frame, tr...), false)
		runtime.ReadMemStats(&after)
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: got %v, want an error wrapping ErrCorrupt", name, err)
		}
		if n := after.TotalAlloc - before.TotalAlloc; n > 16<<20 {
			t.Errorf("%s: reading allocated %d bytes", name, n)
		}
	}
}
