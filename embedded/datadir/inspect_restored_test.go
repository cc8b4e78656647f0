package datadir_test

// An external test: it builds its data dir with embedded/rebuild, which imports datadir.

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/etcdbr/etcdbr/embedded"
	"github.com/etcdbr/etcdbr/embedded/datadir"
	"github.com/etcdbr/etcdbr/embedded/rebuild"
	"github.com/etcdbr/etcdbr/internal/embeddedtest"
)

// TestInspectRestoredWithoutSnapDir: a data dir made by a snapshot restore (as
// etcdbr's restores make them) holds its data in the db alone; its WAL starts
// with the restore's raft snapshot. Without the snap dir etcd would replay
// that WAL into an empty db and serve a keyspace without the restored data, so
// the verdict is corrupt, not valid.
func TestInspectRestoredWithoutSnapDir(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	src := embeddedtest.NewConfig(t)
	se := embeddedtest.MustStart(t, embedded.Start, src)
	embeddedtest.FillKeys(t, se.Client(), 40)
	snapFile := embeddedtest.WriteSnapshotFile(t, src)
	se.Close()

	cfg := embeddedtest.NewConfig(t)
	_, err := rebuild.BuildDataDir(ctx, snapFile, cfg, rebuild.RestoreOptions{}, embeddedtest.Logger(t))
	require.NoError(t, err)
	e := embeddedtest.MustStart(t, embedded.Start, cfg)
	_, err = e.Client().Put(ctx, "after-restore", "v")
	require.NoError(t, err)
	want, wantRev := embeddedtest.AllKeys(t, e.Client())
	e.Close()
	v := datadir.InspectWith(ctx, cfg.Dir, "", datadir.InspectOptions{Depth: datadir.DepthFull})
	require.Equal(t, datadir.StateValid, v.State, v.Reason)
	require.Equal(t, wantRev, v.Revision)

	dir := filepath.Join(t.TempDir(), "data")
	embeddedtest.CopyTree(t, cfg.Dir, dir)
	require.NoError(t, os.RemoveAll(filepath.Join(dir, "member", "snap")))
	for _, d := range []datadir.Depth{datadir.DepthFull, datadir.DepthAuto} {
		v := datadir.InspectWith(ctx, dir, "", datadir.InspectOptions{Depth: d})
		require.Equal(t, datadir.StateCorrupt, v.State, "%s: %s", d, v.Reason)
		assert.Contains(t, v.Reason, filepath.Join(dir, "member", "snap", "db"))
		assert.Contains(t, v.Reason, "raft snapshot at index")
	}

	// What etcd makes of it: it starts, and the restored keys are gone.
	c2 := embeddedtest.NewConfig(t)
	c2.Dir = dir
	e2 := embeddedtest.MustStart(t, embedded.Start, c2)
	got, gotRev := embeddedtest.AllKeys(t, e2.Client())
	t.Logf("etcd on the restored dir without its snap dir: %d keys at revision %d (the dir held %d keys at revision %d)", len(got), gotRev, len(want), wantRev)
	assert.Less(t, len(got), len(want), "etcd served the restored keys without their db")
	assert.NotContains(t, got, "key-001")
	assert.Less(t, gotRev, wantRev)
}
