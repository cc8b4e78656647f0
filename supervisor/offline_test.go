package supervisor

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/etcdbr/etcdbr/backup"
	"github.com/etcdbr/etcdbr/embedded"
	"github.com/etcdbr/etcdbr/embedded/datadir"
	"github.com/etcdbr/etcdbr/internal/embeddedtest"
	"github.com/etcdbr/etcdbr/internal/etcdtest"
	"github.com/etcdbr/etcdbr/internal/progress"
	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// offlineFixture is a file store with one full snapshot of a member, claimed for the
// member's cluster.
type offlineFixture struct {
	dir     string // the store's directory
	cluster string // the member's cluster ID, which the store records
	want    etcdtest.Dump
}

func buildOfflineFixture(t *testing.T) offlineFixture {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e, err := embedded.Start(ctx, embeddedtest.NewConfig(t), nil)
	require.NoError(t, err)
	defer e.Close()
	f := offlineFixture{dir: filepath.Join(t.TempDir(), "store"), cluster: clusterID(e)}
	store, err := snapstore.Open(ctx, "file://"+f.dir, snapstore.Options{})
	require.NoError(t, err)
	defer store.Close()
	_, err = etcdtest.Workload{Seed: 5, Keys: 100}.Run(ctx, e.Client())
	require.NoError(t, err)
	require.NoError(t, store.ClaimClusterID(ctx, f.cluster))
	_, err = backup.FullFromBackend(ctx, e.Server().Backend(), store)
	require.NoError(t, err)
	f.want, err = etcdtest.Take(ctx, e.Client(), 0)
	require.NoError(t, err)
	return f
}

// config is an offline restore from a copy of the fixture's store into a new member's data
// dir (another cluster ID than the store's: other peer URLs); it returns the copy's URL too.
func (f offlineFixture) config(t *testing.T) (OfflineRestoreConfig, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "store")
	require.NoError(t, os.CopyFS(dir, os.DirFS(f.dir)))
	url := "file://" + dir
	return OfflineRestoreConfig{
		Etcd: embeddedtest.NewConfig(t),
		OpenStore: func(ctx context.Context) (*snapstore.Store, error) {
			return snapstore.Open(ctx, url, snapstore.Options{MustExist: true})
		},
		Unbacked: 1000,
	}, url
}

// storeCluster is the cluster the store at url records.
func storeCluster(t *testing.T, url string) string {
	t.Helper()
	s, err := snapstore.Open(context.Background(), url, snapstore.Options{})
	require.NoError(t, err)
	defer s.Close()
	id, _, err := s.ClusterID(context.Background())
	require.NoError(t, err)
	return id
}

// restoredData starts etcd on cfg's restored data dir and dumps it.
func restoredData(t *testing.T, cfg *embed.Config) etcdtest.Dump {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e, err := embedded.Start(ctx, cfg, nil)
	require.NoError(t, err)
	defer e.Close()
	d, err := etcdtest.Take(ctx, e.Client(), 0)
	require.NoError(t, err)
	return d
}

// TestRestoreOffline: etcdbr restore's gating and outcomes. A restore that creates another
// cluster than the store records is refused before anything is written, unless the store is
// to follow it (Force) or to stay as it is (Keep); a data dir that is not empty is refused;
// the restored data starts a new history past the store's newest plus Unbacked, or, Exact,
// is the store's revision exactly.
func TestRestoreOffline(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := buildOfflineFixture(t)

	t.Run("another cluster is refused", func(t *testing.T) {
		t.Parallel()
		cfg, url := f.config(t)
		_, err := RestoreOffline(ctx, cfg)
		require.ErrorIs(t, err, snapstore.ErrClusterMismatch)
		assert.Contains(t, err.Error(), "--keep-store-cluster")
		_, serr := os.Stat(cfg.Etcd.Dir)
		assert.ErrorIs(t, serr, os.ErrNotExist, "nothing written")
		assert.Equal(t, f.cluster, storeCluster(t, url))
	})

	t.Run("force: the store follows", func(t *testing.T) {
		t.Parallel()
		cfg, url := f.config(t)
		cfg.Force = true
		watched := false
		cfg.WatchProgress = func(p *progress.Progress) func() {
			watched = true
			return func() {}
		}
		res, err := RestoreOffline(ctx, cfg)
		require.NoError(t, err)
		assert.True(t, watched, "the progress is shown")
		assert.Equal(t, f.want.Revision, res.Revision)
		id, err := datadir.ReadIDs(cfg.Etcd.Dir, cfg.Etcd.WalDir)
		require.NoError(t, err)
		assert.True(t, res.Followed)
		assert.Equal(t, id.ClusterID, res.Cluster)
		assert.Equal(t, f.cluster, res.PreviousCluster)
		assert.NotEqual(t, f.cluster, id.ClusterID)
		assert.Equal(t, id.ClusterID, storeCluster(t, url))

		got := restoredData(t, cfg.Etcd)
		assert.Equal(t, f.want.Revision+cfg.Unbacked+catalog.BumpMargin, got.Revision, "a new history past the store's newest plus Unbacked")
		assert.Equal(t, got.Revision, res.DataRevision)
		got.Revision = f.want.Revision
		assert.Empty(t, etcdtest.Diff(f.want, got, 10))
	})

	t.Run("keep: the store's record stays", func(t *testing.T) {
		t.Parallel()
		cfg, url := f.config(t)
		cfg.Keep, cfg.Exact = true, true
		res, err := RestoreOffline(ctx, cfg)
		require.NoError(t, err)
		assert.False(t, res.Followed)
		assert.Zero(t, res.Bump, "exact: no new history")
		assert.Equal(t, f.cluster, storeCluster(t, url))
		assert.Empty(t, etcdtest.Diff(f.want, restoredData(t, cfg.Etcd), 10))
		m, ok, err := datadir.ReadRestoredMarker(cfg.Etcd.Dir)
		require.NoError(t, err)
		require.True(t, ok)
		assert.True(t, m.Exact)
		assert.Equal(t, TriggerOffline, m.Trigger)
	})

	t.Run("not empty", func(t *testing.T) {
		t.Parallel()
		cfg, _ := f.config(t)
		cfg.Force = true
		require.NoError(t, os.MkdirAll(cfg.Etcd.Dir, 0o700))
		require.NoError(t, os.WriteFile(filepath.Join(cfg.Etcd.Dir, "something"), nil, 0o600))
		cfg.OpenStore = func(context.Context) (*snapstore.Store, error) {
			t.Error("the store was opened for a data dir that is not empty")
			return nil, context.Canceled
		}
		_, err := RestoreOffline(ctx, cfg)
		require.ErrorIs(t, err, ErrDataDirNotEmpty)
		assert.Contains(t, err.Error(), "move it away first")
	})
}
