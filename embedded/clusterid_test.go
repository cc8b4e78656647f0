package embedded

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/etcdbr/etcdbr/embedded/datadir"
	"github.com/etcdbr/etcdbr/embedded/rebuild"
	"github.com/etcdbr/etcdbr/internal/embeddedtest"
)

// TestClusterIDFor compares the computed cluster ID with what etcd itself and a
// restore (etcdutl's, through BuildDataDir) create from the same configuration.
func TestClusterIDFor(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	// etcd's own new cluster.
	src := embeddedtest.NewConfig(t)
	want, err := ClusterIDFor(src)
	require.NoError(t, err)
	e := embeddedtest.MustStart(t, Start, src)
	assert.Equal(t, e.Server().Cluster().ID().String(), want, "the ID etcd gives a new cluster")
	embeddedtest.FillKeys(t, e.Client(), 5)
	snap := embeddedtest.WriteSnapshotFile(t, src)
	e.Close()
	id, err := datadir.ReadIDs(src.Dir, "")
	require.NoError(t, err)
	assert.Equal(t, want, id.ClusterID, "the ID in the data dir's WAL")

	restoredID := func(t *testing.T, cfg *embed.Config) string {
		t.Helper()
		_, err := rebuild.BuildDataDir(ctx, snap, cfg, rebuild.RestoreOptions{}, embeddedtest.Logger(t))
		require.NoError(t, err)
		id, err := datadir.ReadIDs(cfg.Dir, cfg.WalDir)
		require.NoError(t, err)
		return id.ClusterID
	}

	t.Run("restore with the same initial cluster and token", func(t *testing.T) {
		t.Parallel()
		cfg := embeddedtest.NewConfig(t)
		cfg.AdvertisePeerUrls, cfg.InitialCluster = src.AdvertisePeerUrls, src.InitialCluster
		got, err := ClusterIDFor(cfg)
		require.NoError(t, err)
		assert.Equal(t, want, got)
		assert.Equal(t, want, restoredID(t, cfg))
	})

	t.Run("another peer URL", func(t *testing.T) {
		t.Parallel()
		cfg := embeddedtest.NewConfig(t)
		got, err := ClusterIDFor(cfg)
		require.NoError(t, err)
		assert.NotEqual(t, want, got)
		assert.Equal(t, got, restoredID(t, cfg))
	})

	t.Run("another token", func(t *testing.T) {
		t.Parallel()
		cfg := embeddedtest.NewConfig(t)
		cfg.AdvertisePeerUrls, cfg.InitialCluster = src.AdvertisePeerUrls, src.InitialCluster
		cfg.InitialClusterToken = "another-token"
		got, err := ClusterIDFor(cfg)
		require.NoError(t, err)
		assert.NotEqual(t, want, got)
		assert.Equal(t, got, restoredID(t, cfg))
	})

	t.Run("a member of three", func(t *testing.T) {
		t.Parallel()
		cfg := embeddedtest.NewConfig(t)
		cfg.InitialClusterToken = "three"
		b, c := embeddedtest.FreeURL(t, "http"), embeddedtest.FreeURL(t, "http")
		cfg.InitialCluster = fmt.Sprintf("%s,b=%s,c=%s", cfg.InitialCluster, b.String(), c.String())
		got, err := ClusterIDFor(cfg)
		require.NoError(t, err)
		assert.Equal(t, got, restoredID(t, cfg))
	})

	t.Run("discovery", func(t *testing.T) {
		t.Parallel()
		cfg := embeddedtest.NewConfig(t)
		cfg.Durl = "https://discovery.example/abc"
		_, err := ClusterIDFor(cfg)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "--initial-cluster")
	})
}
