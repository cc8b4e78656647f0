package datadir

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/etcdbr/etcdbr/embedded"
	"github.com/etcdbr/etcdbr/internal/embeddedtest"
)

func TestCleanStopMarker(t *testing.T) {
	t.Parallel()
	base, _, rev := embeddedtest.NewDataDirKeys(t, embedded.Start, 150)
	ctx := context.Background()
	fresh := func(t *testing.T, marker bool) string {
		dir := filepath.Join(t.TempDir(), "data")
		embeddedtest.CopyTree(t, base.Dir, dir)
		if marker {
			require.NoError(t, WriteCleanStopMarker(dir, ""))
		}
		return dir
	}

	t.Run("matching marker: quick and auto decide quickly", func(t *testing.T) {
		t.Parallel()
		dir := fresh(t, true)
		before := embeddedtest.TreeDigest(t, dir)
		for _, d := range []Depth{DepthAuto, DepthQuick} {
			v := InspectWith(ctx, dir, "", InspectOptions{Depth: d})
			require.Equal(t, StateValid, v.State, "%s: %s", d, v.Reason)
			assert.Equal(t, DepthQuick, v.Depth, d.String())
			assert.Equal(t, rev, v.Revision, d.String())
		}
		v := InspectWith(ctx, dir, "", InspectOptions{Depth: DepthFull})
		require.Equal(t, StateValid, v.State, v.Reason)
		assert.Equal(t, DepthFull, v.Depth)
		assert.Equal(t, before, embeddedtest.TreeDigest(t, dir), "validation changed the data dir")
	})

	t.Run("no marker: quick cannot tell, auto checks fully", func(t *testing.T) {
		t.Parallel()
		dir := fresh(t, false)
		v := InspectWith(ctx, dir, "", InspectOptions{Depth: DepthQuick})
		require.Equal(t, StateUnknown, v.State, v.Reason)
		assert.Contains(t, v.Reason, "no clean-stop marker")
		v = InspectWith(ctx, dir, "", InspectOptions{})
		require.Equal(t, StateValid, v.State, v.Reason)
		assert.Equal(t, DepthFull, v.Depth)
		assert.Equal(t, rev, v.Revision)
	})

	t.Run("removed marker", func(t *testing.T) {
		t.Parallel()
		dir := fresh(t, true)
		require.NoError(t, RemoveCleanStopMarker(dir))
		require.NoError(t, RemoveCleanStopMarker(dir), "removing a missing marker is fine")
		_, err := os.Stat(filepath.Join(dir, CleanStopMarkerName))
		require.ErrorIs(t, err, os.ErrNotExist)
		v := InspectWith(ctx, dir, "", InspectOptions{Depth: DepthQuick})
		require.Equal(t, StateUnknown, v.State, v.Reason)
	})

	t.Run("page zeroed after the clean stop, mtime put back", func(t *testing.T) {
		t.Parallel()
		dir := fresh(t, true)
		db := filepath.Join(dir, "member", "snap", "db")
		st, err := os.Stat(db)
		require.NoError(t, err)
		leaves, pageSize := boltPages(t, db, "leaf")
		require.NotEmpty(t, leaves)
		patchFile(t, db, int64(leaves[len(leaves)/2]*pageSize), make([]byte, pageSize))
		require.NoError(t, os.Chtimes(db, st.ModTime(), st.ModTime()))

		v := InspectWith(ctx, dir, "", InspectOptions{Depth: DepthQuick})
		require.Equal(t, StateUnknown, v.State, v.Reason)
		assert.Contains(t, v.Reason, "snap/db was changed")
		v = InspectWith(ctx, dir, "", InspectOptions{})
		require.Equal(t, StateCorrupt, v.State, v.Reason)
		assert.Equal(t, DepthFull, v.Depth)
		assert.Contains(t, v.Reason, db)
	})

	t.Run("WAL file appended after the clean stop", func(t *testing.T) {
		t.Parallel()
		dir := fresh(t, true)
		require.NoError(t, os.WriteFile(filepath.Join(dir, "member", "wal", "0000000000000001-0000000000000999.wal"), []byte("x"), 0o600))
		v := InspectWith(ctx, dir, "", InspectOptions{Depth: DepthQuick})
		require.Equal(t, StateUnknown, v.State, v.Reason)
		assert.Contains(t, v.Reason, "appeared since the clean stop")
		// auto falls back to the full check, which decides on its own (etcd
		// cuts a one-byte last file off as a torn tail: valid).
		v = InspectWith(ctx, dir, "", InspectOptions{})
		assert.Equal(t, DepthFull, v.Depth, v.Reason)
		assert.Equal(t, InspectWith(ctx, dir, "", InspectOptions{Depth: DepthFull}), v)
	})

	t.Run("marker from another data dir", func(t *testing.T) {
		t.Parallel()
		dir := fresh(t, false)
		other := fresh(t, true)
		marker, err := os.ReadFile(filepath.Join(other, CleanStopMarkerName))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, CleanStopMarkerName), marker, 0o600))
		v := InspectWith(ctx, dir, "", InspectOptions{Depth: DepthQuick})
		require.Equal(t, StateUnknown, v.State, v.Reason)
		assert.Contains(t, v.Reason, "does not match")
	})

	t.Run("garbage marker", func(t *testing.T) {
		t.Parallel()
		dir := fresh(t, false)
		require.NoError(t, os.WriteFile(filepath.Join(dir, CleanStopMarkerName), []byte("{not json"), 0o600))
		v := InspectWith(ctx, dir, "", InspectOptions{Depth: DepthQuick})
		require.Equal(t, StateUnknown, v.State, v.Reason)
		assert.Contains(t, v.Reason, "unreadable")
		assert.Equal(t, StateValid, InspectWith(ctx, dir, "", InspectOptions{}).State)
	})

	t.Run("separate WAL dir", func(t *testing.T) {
		t.Parallel()
		dir := fresh(t, false)
		walDir := dir + "-wal"
		require.NoError(t, os.Rename(filepath.Join(dir, "member", "wal"), walDir))
		require.NoError(t, WriteCleanStopMarker(dir, walDir))
		v := InspectWith(ctx, dir, walDir, InspectOptions{Depth: DepthQuick})
		require.Equal(t, StateValid, v.State, v.Reason)
		v = InspectWith(ctx, dir, "", InspectOptions{Depth: DepthQuick})
		require.NotEqual(t, StateValid, v.State, "the marker lists the WAL files of the other dir")
	})
}

func TestInspectCannotTell(t *testing.T) {
	t.Parallel()
	cfg := embeddedtest.NewConfig(t)
	e := embeddedtest.MustStart(t, embedded.Start, cfg)
	embeddedtest.FillKeys(t, e.Client(), 10)

	// A running etcd holds the db: unknown, never corrupt, at every depth.
	for _, d := range []Depth{DepthAuto, DepthQuick, DepthFull} {
		v := InspectWith(context.Background(), cfg.Dir, "", InspectOptions{Depth: d})
		require.Equal(t, StateUnknown, v.State, "%s: %s", d, v.Reason)
	}
	v := InspectWith(context.Background(), cfg.Dir, "", InspectOptions{Depth: DepthFull})
	assert.Contains(t, v.Reason, "locked by another process")
	require.Error(t, WriteCleanStopMarker(cfg.Dir, ""), "no marker while etcd holds the db")

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	e.Close()
	v = InspectWith(ctx, cfg.Dir, "", InspectOptions{Depth: DepthFull})
	require.Equal(t, StateUnknown, v.State, v.Reason)
	assert.Contains(t, v.Reason, "cut short")

	// The old three-state Inspect reports "could not tell" as corrupt.
	dctx, dcancel := context.WithTimeout(context.Background(), time.Minute)
	defer dcancel()
	assert.Equal(t, StateValid, Inspect(dctx, cfg.Dir, "").State)
}

func TestReadIDs(t *testing.T) {
	t.Parallel()
	cfg := embeddedtest.NewConfig(t)
	e := embeddedtest.MustStart(t, embedded.Start, cfg)
	wantCluster := e.Server().Cluster().ID().String()
	wantMember := e.Server().MemberID().String()
	e.Close()

	id, err := ReadIDs(cfg.Dir, "")
	require.NoError(t, err)
	assert.Equal(t, IDs{ClusterID: wantCluster, MemberID: wantMember}, id)

	require.NoError(t, WriteCleanStopMarker(cfg.Dir, ""))
	m, why, err := readMarker(cfg.Dir)
	require.NoError(t, err)
	require.Empty(t, why)
	assert.Equal(t, wantCluster, m.ClusterID)

	_, err = ReadIDs(filepath.Join(t.TempDir(), "none"), "")
	require.Error(t, err)
}
