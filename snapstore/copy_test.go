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
	"github.com/etcdbr/etcdbr/snapstore/catalog"
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
	d3 := writeObject(t, src, catalog.Snapshot{Kind: catalog.KindDelta, From: 31, Revision: 40, Time: testTime.Add(3 * time.Second)}, deltaPayload(t, 31, 40))
	src.opts.Recipients = nil
	fulls, err := src.List(ctx, catalog.KindFull)
	require.NoError(t, err)
	deltas, err := src.List(ctx, catalog.KindDelta)
	require.NoError(t, err)

	t.Run("byte for byte", func(t *testing.T) {
		dst := newTestStore(t, kind).open(t, Options{}) // no identity: d3 stays sealed
		toCopy, skipped := catalog.SelectCopies(fulls, deltas, nil, nil, time.Time{})
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
		dstFulls, err := dst.List(ctx, catalog.KindFull)
		require.NoError(t, err)
		dstDeltas, err := dst.List(ctx, catalog.KindDelta)
		require.NoError(t, err)
		assert.Equal(t, fulls, dstFulls)
		assert.Equal(t, deltas, dstDeltas)
		toCopy, skipped = catalog.SelectCopies(fulls, deltas, dstFulls, dstDeltas, time.Time{})
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
		list, err := dst2.List(ctx, catalog.KindDelta)
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
		for _, snap := range []catalog.Snapshot{full, d3} {
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
