package snapstore

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

func TestEncryption(t *testing.T) {
	ctx := context.Background()
	id, err := age.GenerateX25519Identity()
	require.NoError(t, err)
	other, err := age.GenerateX25519Identity()
	require.NoError(t, err)

	dir := t.TempDir()
	open := func(opts Options) *Store {
		s, err := Open(ctx, "file://"+dir, opts)
		require.NoError(t, err)
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	writer := open(Options{Recipients: []age.Recipient{id.Recipient(), other.Recipient()}})
	payload := append(compressible(1<<20), randomBytes(1<<20, 5)...)
	snap := writeObject(t, writer, catalog.Snapshot{Kind: catalog.KindDelta, From: 10, Revision: 20, Time: testTime}, payload)
	assert.True(t, snap.Encrypted)
	assert.True(t, strings.HasSuffix(snap.Key, ".delta.zst.age"), snap.Key)
	assert.Equal(t, catalog.DeltaName(10, 20, testTime, true), snap.Key)

	listed, err := writer.List(ctx, catalog.KindDelta)
	require.NoError(t, err)
	require.Len(t, listed, 1)
	assert.Equal(t, snap, listed[0])

	t.Run("either identity decrypts", func(t *testing.T) {
		for _, ident := range []age.Identity{id, other} {
			back, err := readObject(open(Options{Identities: []age.Identity{ident}}), snap)
			require.NoError(t, err)
			assert.True(t, bytes.Equal(payload, back))
		}
	})
	t.Run("no identity", func(t *testing.T) {
		_, err := readObject(open(Options{}), snap)
		require.ErrorIs(t, err, ErrNoIdentity)
		assert.Contains(t, err.Error(), snap.Key)
		assert.NotErrorIs(t, err, ErrCorrupt)
	})
	t.Run("wrong identity", func(t *testing.T) {
		stranger, err := age.GenerateX25519Identity()
		require.NoError(t, err)
		_, err = readObject(open(Options{Identities: []age.Identity{stranger}}), snap)
		require.ErrorIs(t, err, ErrNoIdentity)
		assert.Contains(t, err.Error(), snap.Key)
	})
	t.Run("plain objects still read", func(t *testing.T) {
		plain := writeObject(t, open(Options{}), catalog.Snapshot{Kind: catalog.KindFull, Revision: 9, Time: testTime}, []byte("plain"))
		assert.False(t, plain.Encrypted)
		back, err := readObject(open(Options{Identities: []age.Identity{id}}), plain)
		require.NoError(t, err)
		assert.Equal(t, "plain", string(back))
	})
	t.Run("tampering", func(t *testing.T) {
		reader := open(Options{Identities: []age.Identity{id}})
		path := filepath.Join(dir, filepath.FromSlash(snap.Key))
		original, err := os.ReadFile(path)
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, os.WriteFile(path, original, 0o600)) })
		for name, mangle := range map[string]func([]byte) []byte{
			"flip in body":   func(b []byte) []byte { b[len(b)/2] ^= 1; return b },
			"flip last byte": func(b []byte) []byte { b[len(b)-1] ^= 1; return b },
			"truncate":       func(b []byte) []byte { return b[:len(b)-100] },
			"cut at a chunk boundary": func(b []byte) []byte {
				// Header, 16-byte nonce, then chunks of 64 KiB + 16-byte tag.
				header := bytes.Index(b, []byte("\n---"))
				header += bytes.IndexByte(b[header+1:], '\n') + 2
				return b[:header+16+2*(64<<10+16)]
			},
			"header mac": func(b []byte) []byte { i := bytes.Index(b, []byte("\n---")) + 10; b[i] ^= 1; return b },
		} {
			require.NoError(t, os.WriteFile(path, mangle(bytes.Clone(original)), 0o600))
			_, err := readObject(reader, snap)
			require.Error(t, err, name)
			assert.ErrorIs(t, err, ErrCorrupt, name)
			assert.Contains(t, err.Error(), snap.Key, name)
			t.Log(name, err)
		}
	})
}
