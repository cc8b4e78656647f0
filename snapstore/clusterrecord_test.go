package snapstore

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestClusterID(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, url := range []string{"mem://x/", "file://" + t.TempDir()} {
		t.Run(url[:3], func(t *testing.T) {
			s, err := Open(ctx, url, Options{})
			require.NoError(t, err)
			defer s.Close()

			_, ok, err := s.ClusterID(ctx)
			require.NoError(t, err)
			assert.False(t, ok, "a new store records no cluster")

			require.NoError(t, s.ClaimClusterID(ctx, "cdf818194e3a8c32"))
			id, ok, err := s.ClusterID(ctx)
			require.NoError(t, err)
			require.True(t, ok)
			assert.Equal(t, "cdf818194e3a8c32", id)

			require.NoError(t, s.ClaimClusterID(ctx, "cdf818194e3a8c32"), "the same cluster again")
			err = s.ClaimClusterID(ctx, "1111111111111111")
			require.ErrorIs(t, err, ErrClusterMismatch)
			assert.Contains(t, err.Error(), "cdf818194e3a8c32")
			id, _, err = s.ClusterID(ctx)
			require.NoError(t, err)
			assert.Equal(t, "cdf818194e3a8c32", id, "another cluster's claim wrote nothing")

			require.Error(t, s.ClaimClusterID(ctx, ""))
		})
	}
}

func TestClusterIDUnreadable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, ClusterIDKey), []byte("not json"), 0o600))
	s, err := Open(ctx, "file://"+dir, Options{})
	require.NoError(t, err)
	defer s.Close()
	_, _, err = s.ClusterID(ctx)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "unreadable")
	require.Error(t, s.ClaimClusterID(ctx, "cdf818194e3a8c32"), "never overwrites what it cannot read")
}

func TestReclaimClusterID(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const a, b, c = "aaaaaaaaaaaaaaa1", "bbbbbbbbbbbbbbb2", "ccccccccccccccc3"
	for _, url := range []string{"mem://x/", "file://" + t.TempDir()} {
		t.Run(url[:3], func(t *testing.T) {
			s, err := Open(ctx, url, Options{})
			require.NoError(t, err)
			defer s.Close()

			// No record: the reclaim claims.
			require.NoError(t, s.ReclaimClusterID(ctx, a, c))
			rec, ok, err := s.ClusterRecord(ctx)
			require.NoError(t, err)
			require.True(t, ok)
			assert.Equal(t, a, rec.ClusterID)
			assert.Empty(t, rec.Previous)
			claimedAt := rec.Written

			// A record of a third cluster is never replaced.
			err = s.ReclaimClusterID(ctx, b, c)
			require.ErrorIs(t, err, ErrClusterMismatch)
			for _, id := range []string{a, b, c} {
				assert.Contains(t, err.Error(), id)
			}
			rec, _, err = s.ClusterRecord(ctx)
			require.NoError(t, err)
			assert.Equal(t, a, rec.ClusterID, "a refused reclaim wrote nothing")
			assert.Equal(t, claimedAt, rec.Written)

			// The record still names the old cluster: replaced, the old one kept.
			require.NoError(t, s.ReclaimClusterID(ctx, b, a))
			rec, _, err = s.ClusterRecord(ctx)
			require.NoError(t, err)
			assert.Equal(t, b, rec.ClusterID)
			require.Len(t, rec.Previous, 1)
			assert.Equal(t, a, rec.Previous[0].ClusterID)
			assert.True(t, rec.Previous[0].Written.Equal(claimedAt), "when the old cluster was recorded")
			assert.True(t, rec.Previous[0].Replaced.Equal(rec.Written), "replaced when the new one was written")
			assert.False(t, rec.Written.Before(claimedAt))

			// Again: already done, nothing changes.
			require.NoError(t, s.ReclaimClusterID(ctx, b, a))
			again, _, err := s.ClusterRecord(ctx)
			require.NoError(t, err)
			assert.Equal(t, rec.Written, again.Written)

			// The old cluster cannot claim the store back, the new one can.
			require.ErrorIs(t, s.ClaimClusterID(ctx, a), ErrClusterMismatch)
			require.NoError(t, s.ClaimClusterID(ctx, b))

			// A second hand-over keeps the history, newest first.
			require.NoError(t, s.ReclaimClusterID(ctx, c, b))
			rec, _, err = s.ClusterRecord(ctx)
			require.NoError(t, err)
			assert.Equal(t, c, rec.ClusterID)
			require.Len(t, rec.Previous, 2)
			assert.Equal(t, b, rec.Previous[0].ClusterID)
			assert.Equal(t, a, rec.Previous[1].ClusterID)

			require.Error(t, s.ReclaimClusterID(ctx, "", a))
			require.Error(t, s.ReclaimClusterID(ctx, a, ""))
		})
	}
}

// TestClusterRecordFormat: a record written before the history existed (version 1
// without "previous") is read, and reclaimed; the file stays version 1, which
// older etcdbr reads (it ignores "previous").
func TestClusterRecordFormat(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	old := `{
  "version": 1,
  "cluster_id": "cdf818194e3a8c32",
  "written": "2026-01-02T03:04:05Z"
}`
	require.NoError(t, os.WriteFile(filepath.Join(dir, ClusterIDKey), []byte(old), 0o600))
	s, err := Open(ctx, "file://"+dir, Options{})
	require.NoError(t, err)
	defer s.Close()
	id, ok, err := s.ClusterID(ctx)
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, "cdf818194e3a8c32", id)

	require.NoError(t, s.ReclaimClusterID(ctx, "1111111111111111", "cdf818194e3a8c32"))
	data, err := os.ReadFile(filepath.Join(dir, ClusterIDKey))
	require.NoError(t, err)
	var raw struct {
		Version   int    `json:"version"`
		ClusterID string `json:"cluster_id"`
		Previous  []struct {
			ClusterID string    `json:"cluster_id"`
			Written   time.Time `json:"written"`
			Replaced  time.Time `json:"replaced"`
		} `json:"previous"`
	}
	require.NoError(t, json.Unmarshal(data, &raw), string(data))
	assert.Equal(t, 1, raw.Version, "readers of version 1 read it")
	assert.Equal(t, "1111111111111111", raw.ClusterID)
	require.Len(t, raw.Previous, 1)
	assert.Equal(t, "cdf818194e3a8c32", raw.Previous[0].ClusterID)
	assert.Equal(t, time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), raw.Previous[0].Written.UTC())
	assert.False(t, raw.Previous[0].Replaced.IsZero())
	fi, err := os.Stat(filepath.Join(dir, ClusterIDKey))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())

	// A future, incompatible version is refused, not misread.
	require.NoError(t, os.WriteFile(filepath.Join(dir, ClusterIDKey), []byte(`{"version": 2, "cluster_id": "x"}`), 0o600))
	_, _, err = s.ClusterID(ctx)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "version 2")
	require.Error(t, s.ReclaimClusterID(ctx, "1111111111111111", "x"), "never overwrites what it cannot read")
}
