package snapstore

import (
	"context"
	"os"
	"path/filepath"
	"testing"

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
