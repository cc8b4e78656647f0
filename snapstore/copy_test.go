package snapstore

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/etcdbr/etcdbr/internal/progress"
)

// testCopy copies a mixed chain from a file store to a store of the kind:
// byte for byte (encrypted objects too, without their key), then
// re-encrypted to a new key; a corrupt source object is not copied.
func testCopy(t *testing.T, kind storeKind) {
	ctx := context.Background()
	id, err := age.GenerateX25519Identity()
	require.NoError(t, err)
	src, srcDir := openFileStore(t, Options{Identities: []age.Identity{id}})
	full, d1, _ := writeChain(t, src)
	src.opts.Recipients = []age.Recipient{id.Recipient()}
	d3 := writeObject(t, src, Snapshot{Kind: KindDelta, From: 31, Revision: 40, Time: testTime.Add(3 * time.Second)}, deltaPayload(t, 31, 40))
	src.opts.Recipients = nil
	fulls, err := src.List(ctx, KindFull)
	require.NoError(t, err)
	deltas, err := src.List(ctx, KindDelta)
	require.NoError(t, err)

	t.Run("byte for byte", func(t *testing.T) {
		dst := newTestStore(t, kind).open(t, Options{}) // no identity: d3 stays sealed
		toCopy, skipped := SelectCopies(fulls, deltas, nil, nil, time.Time{})
		assert.Empty(t, skipped)
		require.Len(t, toCopy, 4)
		p := progress.New("copy")
		var size int64
		for _, snap := range toCopy {
			size += snap.Size
			res, err := CopyWithProgress(ctx, src, dst, snap, p)
			assert.Equal(t, size, p.Load().Bytes, "the bytes read of %s, and of those before it", snap.Key)
			require.NoError(t, err, snap.Key)
			assert.Equal(t, snap, res.Copy)
			assert.False(t, res.Reencrypted)
			assert.Equal(t, !snap.Encrypted, res.PayloadVerified, snap.Key)
			raw, err := src.bucket.ReadAll(ctx, snap.Key)
			require.NoError(t, err)
			copied, err := dst.bucket.ReadAll(ctx, snap.Key)
			require.NoError(t, err)
			assert.True(t, bytes.Equal(raw, copied), "%s differs", snap.Key)
		}
		dstFulls, err := dst.List(ctx, KindFull)
		require.NoError(t, err)
		dstDeltas, err := dst.List(ctx, KindDelta)
		require.NoError(t, err)
		assert.Equal(t, fulls, dstFulls)
		assert.Equal(t, deltas, dstDeltas)
		toCopy, skipped = SelectCopies(fulls, deltas, dstFulls, dstDeltas, time.Time{})
		assert.Empty(t, toCopy, "a second copy copies nothing")
		assert.Len(t, skipped, 4)

		// A corrupt source object is not copied.
		path := filepath.Join(srcDir, filepath.FromSlash(d1.Key))
		b, err := os.ReadFile(path)
		require.NoError(t, err)
		b[len(b)/3] ^= 1
		require.NoError(t, os.WriteFile(path, b, 0o600))
		dst2 := newTestStore(t, kind).open(t, Options{})
		_, err = Copy(ctx, src, dst2, d1)
		require.ErrorIs(t, err, ErrCorrupt)
		assert.Contains(t, err.Error(), d1.Key)
		list, err := dst2.List(ctx, KindDelta)
		require.NoError(t, err)
		assert.Empty(t, list, "the bad copy was deleted")
		fixed := b
		fixed[len(b)/3] ^= 1
		require.NoError(t, os.WriteFile(path, fixed, 0o600))
	})

	t.Run("re-encrypted", func(t *testing.T) {
		next, err := age.GenerateX25519Identity()
		require.NoError(t, err)
		dst := newTestStore(t, kind).open(t, Options{Recipients: []age.Recipient{next.Recipient()}, Identities: []age.Identity{next}})
		p := progress.New("copy")
		for _, snap := range []Snapshot{full, d3} {
			p.Reset("copy")
			res, err := CopyWithProgress(ctx, src, dst, snap, p)
			assert.Equal(t, snap.Size, p.Load().Bytes, "the stored bytes read of %s", snap.Key)
			require.NoError(t, err, snap.Key)
			assert.True(t, res.Reencrypted)
			assert.True(t, res.PayloadVerified)
			assert.True(t, res.Copy.Encrypted)
			assert.Equal(t, snap.Name(true), res.Copy.Key)
			want, err := readObject(src, snap)
			require.NoError(t, err)
			got, err := readObject(dst, res.Copy)
			require.NoError(t, err)
			assert.True(t, bytes.Equal(want, got), "%s differs", snap.Key)
		}
		// Without an identity for the new key, the copies could not be verified.
		blind := newTestStore(t, kind).open(t, Options{Recipients: []age.Recipient{next.Recipient()}})
		_, err = Copy(ctx, src, blind, full)
		assert.ErrorContains(t, err, "needs an identity")
	})
}

func TestSelectCopies(t *testing.T) {
	at := func(min int) time.Time { return testTime.Add(time.Duration(min) * time.Minute) }
	full := func(rev int64, min int) Snapshot {
		return Snapshot{Kind: KindFull, Revision: rev, Time: at(min), Key: FullName(rev, at(min), false)}
	}
	delta := func(from, to int64, min int, enc bool) Snapshot {
		return Snapshot{Kind: KindDelta, From: from, Revision: to, Time: at(min), Encrypted: enc, Key: DeltaName(from, to, at(min), enc)}
	}
	fulls := []Snapshot{full(10, 0), full(100, 60), full(200, 120)}
	deltas := []Snapshot{delta(11, 50, 30, false), delta(51, 100, 59, false), delta(101, 150, 90, false), delta(151, 210, 125, false)}
	keys := func(snaps []Snapshot) []string {
		var out []string
		for _, s := range snaps {
			out = append(out, s.Key)
		}
		return out
	}

	all, skipped := SelectCopies(fulls, deltas, nil, nil, time.Time{})
	assert.Empty(t, skipped)
	// Revision order, a full snapshot before a delta that ends at its revision.
	assert.Equal(t, keys([]Snapshot{fulls[0], deltas[0], fulls[1], deltas[1], deltas[2], fulls[2], deltas[3]}), keys(all))

	// Since 1:30: the full snapshot of 1:00 and everything after it.
	got, _ := SelectCopies(fulls, deltas, nil, nil, at(90))
	assert.Equal(t, keys([]Snapshot{fulls[1], deltas[2], fulls[2], deltas[3]}), keys(got))
	// Since before the oldest full snapshot: everything from it.
	got, _ = SelectCopies(fulls, deltas, nil, nil, at(-10))
	assert.Equal(t, keys(all), keys(got))

	// What the destination has (also encrypted there) is skipped.
	got, skipped = SelectCopies(fulls, deltas, []Snapshot{fulls[2]}, []Snapshot{delta(151, 210, 125, true)}, at(90))
	assert.Equal(t, keys([]Snapshot{fulls[1], deltas[2]}), keys(got))
	assert.Equal(t, keys([]Snapshot{fulls[2], deltas[3]}), keys(skipped))
}
