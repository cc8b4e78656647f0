package supervisor

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/etcdbr/etcdbr/backup"
	"github.com/etcdbr/etcdbr/internal/etcdtest"
	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// storeObjects lists every backup object of the store (name and size).
func storeObjects(t *testing.T, store *snapstore.Store) []string {
	t.Helper()
	var out []string
	for _, kind := range []catalog.Kind{catalog.KindFull, catalog.KindDelta} {
		list, err := store.List(context.Background(), kind)
		require.NoError(t, err)
		for _, s := range list {
			out = append(out, fmt.Sprintf("%s %d", s.Key, s.Size))
		}
	}
	return out
}

// TestStoreGivenToAnotherCluster: the running member claimed its store; another etcdbr then
// records another cluster in it (a forced restore elsewhere). The next full snapshot reads
// the record, refuses, and the delta snapshots stop too: nothing more is uploaded, status,
// readiness and metrics say why, and a restore of the other cluster's store over the running
// member is refused with nothing changed.
func TestStoreGivenToAnotherCluster(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	l := startLive(t, nil)
	own := l.s.Status().Etcd.ClusterID
	require.NotEmpty(t, own)
	id, ok, err := l.store.ClusterID(ctx)
	require.NoError(t, err)
	require.True(t, ok, "the first backup claims the store")
	require.Equal(t, own, id)
	assert.Equal(t, own, l.s.Status().Backups.StoreCluster)

	// The deltas run: a write reaches the store.
	resp, err := l.cli.Put(ctx, "before", "1")
	require.NoError(t, err)
	flushed, err := l.s.FlushDeltas(ctx)
	require.NoError(t, err)
	require.GreaterOrEqual(t, flushed.Revision, resp.Header.Revision)

	const other = "1234567890abcdef"
	require.NoError(t, l.store.ReclaimClusterID(ctx, other, own))
	before := storeObjects(t, l.store)
	takerStops := strings.Count(l.log.String(), "delta snapshots stopped")

	_, err = l.s.TakeFull(ctx)
	require.ErrorIs(t, err, snapstore.ErrClusterMismatch)
	require.ErrorIs(t, err, backup.ErrSkipped)
	assert.Contains(t, err.Error(), other)
	assert.Contains(t, err.Error(), own)

	st := l.s.Status()
	assert.Equal(t, other, st.Backups.StoreCluster)
	assert.Contains(t, st.Backups.ClusterMismatch, other)
	require.NotNil(t, st.LastError)
	assert.Contains(t, st.LastError.Message, other)
	for _, c := range l.s.Readiness() {
		if c.Name == checkBackup {
			assert.False(t, c.OK)
			assert.Contains(t, c.Message, other)
		}
	}
	assert.Equal(t, 1.0, testutil.ToFloat64(l.s.metrics.clusterMismatch))

	// Writes after the refusal reach no delta: the delta taker stops (without a final
	// delta), and nothing takes deltas after it.
	for i := range 20 {
		_, err := l.cli.Put(ctx, fmt.Sprintf("after-%d", i), "2")
		require.NoError(t, err)
	}
	l.waitFor("the delta taker to stop", func() bool {
		return strings.Count(l.log.String(), "delta snapshots stopped") > takerStops
	})
	assert.Equal(t, before, storeObjects(t, l.store), "nothing uploaded into the other cluster's store")

	// A restore of the other cluster's backups over the running member is refused.
	want, err := etcdtest.Take(ctx, l.cli, 0)
	require.NoError(t, err)
	_, err = l.s.RequestRestore(ctx, catalog.Target{})
	require.ErrorIs(t, err, snapstore.ErrClusterMismatch)
	assert.Contains(t, err.Error(), other)
	assert.Contains(t, err.Error(), "nothing was changed")
	var answer struct {
		Error string `json:"error"`
	}
	code := l.call(http.MethodPost, "/v1/restore", "{}", &answer)
	assert.NotEqual(t, http.StatusOK, code)
	assert.NotEqual(t, http.StatusAccepted, code)
	assert.Contains(t, answer.Error, other)
	st = l.s.Status()
	assert.Nil(t, st.Restore, "no restore started")
	assert.Equal(t, StateServing, st.State)
	got, err := etcdtest.Take(ctx, l.cli, 0)
	require.NoError(t, err)
	assert.Empty(t, etcdtest.Diff(want, got, 10), "the member's data is untouched")

	require.NoError(t, l.stop())
	assert.Equal(t, before, storeObjects(t, l.store), "no final delta into the other cluster's store")
	rec, _, err := l.store.ClusterRecord(ctx)
	require.NoError(t, err)
	assert.Equal(t, other, rec.ClusterID)
	require.Len(t, rec.Previous, 1)
	assert.Equal(t, own, rec.Previous[0].ClusterID)
}

// TestStoreWithoutRecord: a store that records no cluster (written by an etcdbr that did not
// record it) is no error: a new member restores from it at start, and its first backup
// records its cluster.
func TestStoreWithoutRecord(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	s1, err := snapstore.Open(ctx, "file://"+dir, snapstore.Options{})
	require.NoError(t, err)
	defer s1.Close()
	l := startLive(t, func(c *Config) { c.Store = s1 })
	first := l.s.Status().Etcd.ClusterID
	for i := range 50 {
		_, err := l.cli.Put(ctx, fmt.Sprintf("k-%d", i), "v")
		require.NoError(t, err)
	}
	_, err = l.s.FlushDeltas(ctx)
	require.NoError(t, err)
	want, err := etcdtest.Take(ctx, l.cli, 0)
	require.NoError(t, err)
	require.NoError(t, l.stop())
	require.NoError(t, os.Remove(filepath.Join(dir, snapstore.ClusterIDKey)), "the first member recorded its cluster")

	// A new member (its own peer URLs: another cluster ID) on the store without a record.
	s2, err := snapstore.Open(ctx, "file://"+dir, snapstore.Options{})
	require.NoError(t, err)
	defer s2.Close()
	l2 := startLive(t, func(c *Config) { c.Store = s2 })
	got, err := etcdtest.Take(ctx, l2.cli, 0)
	require.NoError(t, err)
	require.Equal(t, want.Revision+catalog.DefaultUnbackedRevisions+catalog.BumpMargin, got.Revision,
		"a restore at start starts a new history past what the lost member may have served")
	got.Revision = want.Revision
	assert.Empty(t, etcdtest.Diff(want, got, 10), "restored from the store at start")
	second := l2.s.Status().Etcd.ClusterID
	assert.NotEqual(t, first, second)
	l2.waitFor("the store to record the new member's cluster", func() bool {
		id, ok, err := s2.ClusterID(ctx)
		return err == nil && ok && id == second
	})
	assert.Empty(t, l2.s.Status().Backups.ClusterMismatch)
	_, err = l2.s.TakeFull(ctx)
	require.NoError(t, err, "a full snapshot into the store it claimed")
}
