package boltfmt

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"
)

// The walk reads every page into a buffer of its depth: a db whose trees are several
// levels deep (branch pages whose keys bound their children's), with nested buckets and
// values spread over overflow pages (of the pooled size and larger), passes; a page whose
// header names another page is found.
func TestCheckDeepTrees(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "db")
	db, err := bolt.Open(path, 0o600, nil)
	require.NoError(t, err)
	sizes := []int{16, 3000, 70 << 10, 2 << 20}
	require.NoError(t, db.Update(func(tx *bolt.Tx) error {
		top, err := tx.CreateBucket([]byte("top"))
		if err != nil {
			return err
		}
		for b := range 3 {
			nested, err := top.CreateBucket(fmt.Appendf(nil, "nested-%d", b))
			if err != nil {
				return err
			}
			for i := range 20000 {
				if err := nested.Put(fmt.Appendf(nil, "key-%06d", i), fmt.Appendf(nil, "value %d", i)); err != nil {
					return err
				}
			}
		}
		for i := range 40 {
			if err := top.Put(fmt.Appendf(nil, "big-%03d", i), make([]byte, sizes[i%len(sizes)])); err != nil {
				return err
			}
		}
		return nil
	}))
	require.NoError(t, db.Close())

	check := func() error {
		f, err := os.Open(path)
		require.NoError(t, err)
		defer f.Close()
		st, err := f.Stat()
		require.NoError(t, err)
		return Check(f, st.Size(), 5)
	}
	require.NoError(t, check())

	// The root bucket's page: its header names page 1 instead.
	raw, err := os.ReadFile(path)
	require.NoError(t, err)
	m := ParseMeta(raw)
	if m1 := ParseMeta(raw[m.PageSize:]); m1.Validate() == nil && m1.TxID > m.TxID {
		m = m1
	}
	order.PutUint64(raw[int(m.Root)*int(m.PageSize):], 1)
	require.NoError(t, os.WriteFile(path, raw, 0o600))
	require.ErrorContains(t, check(), "header names page 1")
}
