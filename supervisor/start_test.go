package supervisor

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/etcdbr/etcdbr/embedded"
	"github.com/etcdbr/etcdbr/embedded/datadir"
	"github.com/etcdbr/etcdbr/snapstore"
)

// TestSurveyStart: what etcdbr run decides with and etcdbr validate shows, for a missing data
// dir, a data dir restored from the store (a new history it holds no full snapshot of yet), an
// exact copy of the store's data (refused), and a store that cannot be read.
func TestSurveyStart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := buildOfflineFixture(t)
	inspect := func(t *testing.T, cfg OfflineRestoreConfig) datadir.Verdict {
		return datadir.InspectWith(ctx, cfg.Etcd.Dir, cfg.Etcd.WalDir, datadir.InspectOptions{Depth: datadir.DepthFull})
	}
	open := func(t *testing.T, cfg OfflineRestoreConfig) *snapstore.Store {
		s, err := cfg.OpenStore(ctx)
		require.NoError(t, err)
		t.Cleanup(func() { s.Close() })
		return s
	}

	t.Run("missing", func(t *testing.T) {
		t.Parallel()
		cfg, _ := f.config(t)
		v := inspect(t, cfg)
		require.Equal(t, datadir.StateMissing, v.State)
		sv, err := SurveyStart(ctx, cfg.Etcd, open(t, cfg), v, nil)
		require.NoError(t, err)
		require.NoError(t, sv.StoreErr)
		want, err := embedded.ClusterIDFor(cfg.Etcd)
		require.NoError(t, err)
		assert.Equal(t, StartFacts{Verdict: v, StoreNewest: f.want.Revision, StoreCluster: f.cluster, NewCluster: want, Members: 1}, sv.Facts)
		assert.Equal(t, f.want.Revision, sv.NewestFull)
		assert.Nil(t, sv.Restored)
		d, _ := DecideStart(sv.Facts)
		assert.Equal(t, DecideStop, d, "another cluster than the store's, without --force-restore")
	})

	t.Run("restored", func(t *testing.T) {
		t.Parallel()
		cfg, _ := f.config(t)
		cfg.Force = true
		res, err := RestoreOffline(ctx, cfg)
		require.NoError(t, err)
		v := inspect(t, cfg)
		require.Equal(t, datadir.StateValid, v.State, v.Reason)
		sv, err := SurveyStart(ctx, cfg.Etcd, open(t, cfg), v, nil)
		require.NoError(t, err)
		assert.Equal(t, res.Cluster, sv.Facts.DirCluster)
		assert.Equal(t, res.Cluster, sv.Facts.StoreCluster, "the store followed the restore")
		require.NotNil(t, sv.Restored)
		assert.True(t, sv.Restored.NewHistory())
		assert.Less(t, sv.NewestFull, sv.Restored.DataRevision, "no full snapshot of the new history yet")
		d, _ := DecideStart(sv.Facts)
		assert.Equal(t, DecideKeep, d)
	})

	t.Run("exact copy", func(t *testing.T) {
		t.Parallel()
		cfg, _ := f.config(t)
		cfg.Keep, cfg.Exact = true, true
		_, err := RestoreOffline(ctx, cfg)
		require.NoError(t, err)
		v := inspect(t, cfg)
		require.Equal(t, datadir.StateValid, v.State, v.Reason)
		sv, err := SurveyStart(ctx, cfg.Etcd, open(t, cfg), v, nil)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "is an exact copy")
		assert.Contains(t, err.Error(), "restored from this store")
		assert.Equal(t, f.cluster, sv.Facts.StoreCluster, "the survey so far, beside the refusal")
	})

	t.Run("store unreadable", func(t *testing.T) {
		t.Parallel()
		cfg, url := f.config(t)
		store := open(t, cfg)
		root := strings.TrimPrefix(url, "file://")
		require.NoError(t, os.RemoveAll(root))
		require.NoError(t, os.WriteFile(root, nil, 0o600))
		v := inspect(t, cfg)
		sv, err := SurveyStart(ctx, cfg.Etcd, store, v, nil)
		require.NoError(t, err)
		require.Error(t, sv.StoreErr)
		assert.Equal(t, StartFacts{Verdict: v, Members: 1}, sv.Facts)
	})
}
