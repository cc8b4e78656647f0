package snapstore

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestAliveRecord: a liveness record reads back as written, with the store's modification
// time; each rewrite is told apart from the one before (Same); a store without one, or a
// foreign store, has none; a record that is not etcdbr's is an error that names it.
func TestAliveRecord(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, url := range []string{"mem://x/", "file://" + t.TempDir()} {
		t.Run(url[:3], func(t *testing.T) {
			s, err := Open(ctx, url, Options{})
			require.NoError(t, err)
			defer s.Close()

			_, ok, err := s.Alive(ctx, "cdf818194e3a8c32")
			require.NoError(t, err)
			assert.False(t, ok, "a new store holds no liveness record")

			before := time.Now().Add(-time.Second)
			rec := AliveRecord{ClusterID: "cdf818194e3a8c32", Member: "m1", Written: time.Now().UTC(),
				TakeoverAfter: Duration(10 * time.Minute), Refresh: Duration(time.Minute)}
			require.NoError(t, s.WriteAlive(ctx, rec))
			got, ok, err := s.Alive(ctx, "cdf818194e3a8c32")
			require.NoError(t, err)
			require.True(t, ok)
			assert.Equal(t, 1, got.Version)
			assert.Equal(t, "m1", got.Member)
			assert.True(t, got.Written.Equal(rec.Written), "written %v, want %v", got.Written, rec.Written)
			assert.Equal(t, 10*time.Minute, time.Duration(got.TakeoverAfter))
			assert.Equal(t, time.Minute, time.Duration(got.Refresh))
			assert.True(t, got.ModTime.After(before), "the store's modification time %v", got.ModTime)
			again, _, err := s.Alive(ctx, "cdf818194e3a8c32")
			require.NoError(t, err)
			assert.True(t, got.Same(again), "two reads of one write are the same")

			rec.Written = rec.Written.Add(time.Millisecond)
			require.NoError(t, s.WriteAlive(ctx, rec))
			third, _, err := s.Alive(ctx, "cdf818194e3a8c32")
			require.NoError(t, err)
			assert.False(t, got.Same(third), "a rewrite is told apart")

			_, ok, err = s.Alive(ctx, "1111111111111111")
			require.NoError(t, err)
			assert.False(t, ok, "another cluster's record is its own")
			require.Error(t, s.WriteAlive(ctx, AliveRecord{ClusterID: "../x"}))
			_, _, err = s.Alive(ctx, "")
			require.Error(t, err)
		})
	}
}

func TestAliveRecordNotEtcdbrs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "alive"), 0o700))
	for name, content := range map[string]string{
		"a.json": "not json",
		"b.json": `{"version": 2, "cluster_id": "b"}`,
		"c.json": `{"version": 1, "cluster_id": "x"}`,
		"d.json": `{"version": 1, "cluster_id": "d", "takeover_after": 600}`,
	} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, "alive", name), []byte(content), 0o600))
	}
	s, err := Open(ctx, "file://"+dir, Options{})
	require.NoError(t, err)
	defer s.Close()
	for _, id := range []string{"a", "b", "c", "d"} {
		_, _, err := s.Alive(ctx, id)
		require.Error(t, err, id)
		assert.Contains(t, err.Error(), "alive/"+id+".json")
	}
}
