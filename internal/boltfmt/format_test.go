package boltfmt

import (
	"bytes"
	"math/bits"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"
)

// A db written in this host's byte order validates; one whose meta pages are in the other order
// (as a db from a host of the other order would be) is refused as such, by Meta.Validate and by
// Check, before any other field of it is used.
func TestMetaByteOrder(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "db")
	db, err := bolt.Open(path, 0o600, nil)
	require.NoError(t, err)
	require.NoError(t, db.Close())
	raw, err := os.ReadFile(path)
	require.NoError(t, err)
	m := ParseMeta(raw)
	require.NoError(t, m.Validate())
	require.NoError(t, Check(bytes.NewReader(raw), int64(len(raw)), 5))

	swapped := bytes.Clone(raw)
	for _, at := range []int{0, int(m.PageSize)} {
		magic := swapped[at+PageHeaderSize:]
		order.PutUint32(magic, bits.ReverseBytes32(order.Uint32(magic)))
	}
	require.ErrorContains(t, ParseMeta(swapped).Validate(), "other byte order")
	require.ErrorContains(t, Check(bytes.NewReader(swapped), int64(len(swapped)), 5), "other byte order")

	order.PutUint32(swapped[PageHeaderSize:], 0x12345678)
	require.ErrorContains(t, ParseMeta(swapped).Validate(), "invalid magic")
}
