package supervisor

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/etcdbr/etcdbr/embedded/datadir"
	"github.com/etcdbr/etcdbr/snapstore"
)

// TestSurveyRestoreFrom: with --restore-from, the start-up surveys (and would restore from)
// that store while the member's own store holds no full snapshot, keeping the own store's
// cluster; once the own store has a full snapshot, it is the own store's alone; and a
// --restore-from that cannot be read is the survey's failure, never an empty member.
func TestSurveyRestoreFrom(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := buildOfflineFixture(t)
	open := func(t *testing.T, url string) *snapstore.Store {
		s, err := snapstore.Open(ctx, url, snapstore.Options{})
		require.NoError(t, err)
		t.Cleanup(func() { s.Close() })
		return s
	}
	config := func(t *testing.T) (Config, datadir.Verdict) {
		off, url := f.config(t)
		cfg := Config{Etcd: off.Etcd, Store: open(t, "file://"+filepath.Join(t.TempDir(), "own")), RestoreFrom: open(t, url)}
		v := datadir.InspectWith(ctx, cfg.Etcd.Dir, cfg.Etcd.WalDir, datadir.InspectOptions{Depth: datadir.DepthFull})
		require.Equal(t, datadir.StateMissing, v.State)
		return cfg, v
	}

	t.Run("own store empty", func(t *testing.T) {
		t.Parallel()
		cfg, v := config(t)
		sv, src, err := surveyStart(ctx, cfg, v, nil)
		require.NoError(t, err)
		require.NoError(t, sv.StoreErr)
		assert.Same(t, cfg.RestoreFrom, src)
		assert.Equal(t, f.want.Revision, sv.Facts.StoreNewest)
		assert.Empty(t, sv.Facts.StoreCluster, "the own store's cluster: none yet")
		assert.Zero(t, sv.NewestFull, "the own store's newest full snapshot")
		d, _ := DecideStart(sv.Facts)
		assert.Equal(t, DecideRestore, d)
	})

	t.Run("own store of another cluster", func(t *testing.T) {
		t.Parallel()
		cfg, v := config(t)
		require.NoError(t, cfg.Store.ClaimClusterID(ctx, "1234"))
		sv, _, err := surveyStart(ctx, cfg, v, nil)
		require.NoError(t, err)
		assert.Equal(t, "1234", sv.Facts.StoreCluster, "the own store's cluster gates the restore")
		d, reason := DecideStart(sv.Facts)
		assert.Equal(t, DecideStop, d, reason)
	})

	t.Run("own store with a full snapshot", func(t *testing.T) {
		t.Parallel()
		cfg, v := config(t)
		sel, err := snapstore.SelectBackupCopies(ctx, cfg.RestoreFrom, cfg.Store, time.Time{})
		require.NoError(t, err)
		_, err = snapstore.CopyBackups(ctx, cfg.RestoreFrom, cfg.Store, sel, nil, nil)
		require.NoError(t, err)
		sv, src, err := surveyStart(ctx, cfg, v, nil)
		require.NoError(t, err)
		assert.Same(t, cfg.Store, src)
		assert.Equal(t, f.want.Revision, sv.NewestFull)
	})

	t.Run("restore-from unreadable", func(t *testing.T) {
		t.Parallel()
		cfg, v := config(t)
		root := strings.TrimPrefix(cfg.RestoreFrom.URL(), "file://")
		require.NoError(t, os.RemoveAll(root))
		require.NoError(t, os.WriteFile(root, nil, 0o600))
		sv, _, err := surveyStart(ctx, cfg, v, nil)
		require.NoError(t, err)
		require.Error(t, sv.StoreErr)
		assert.Contains(t, sv.StoreErr.Error(), "--restore-from")
	})
}
