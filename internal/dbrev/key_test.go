package dbrev

import (
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/server/v3/storage/mvcc"
)

// ParseKey reads the keys etcd's mvcc store writes (mvcc.RevToBytes, with the tombstone mark
// of a delete) and refuses anything else.
func TestParseKey(t *testing.T) {
	t.Parallel()
	put := mvcc.RevToBytes(mvcc.Revision{Main: 1234, Sub: 5}, mvcc.NewRevBytes())
	main, tomb, err := ParseKey(put)
	require.NoError(t, err)
	require.Equal(t, int64(1234), main)
	require.False(t, tomb)

	main, tomb, err = ParseKey(slices.Concat(put, []byte{TombstoneMark}))
	require.NoError(t, err)
	require.Equal(t, int64(1234), main)
	require.True(t, tomb)

	for _, bad := range [][]byte{nil, put[:16], slices.Concat(put, []byte{'x'}), slices.Concat(put, []byte{TombstoneMark, 0}), {0, 0, 0, 0, 0, 0, 0, 1, '-', 0, 0, 0, 0, 0, 0, 0, 0}} {
		_, _, err := ParseKey(bad)
		require.ErrorContains(t, err, "malformed revision key", "%x", bad)
	}
}
