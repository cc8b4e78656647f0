package datadir_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/client/pkg/v3/types"

	"github.com/etcdbr/etcdbr/embedded"
	"github.com/etcdbr/etcdbr/embedded/datadir"
	"github.com/etcdbr/etcdbr/internal/embeddedtest"
)

// ReadMembers reads the members of a real data dir as etcd recorded them; MoveAside moves
// the data dir (and a WAL dir outside it) aside, keeping every byte, and leaves no data dir.
func TestReadMembersAndMoveAside(t *testing.T) {
	t.Parallel()
	cfg, _ := embeddedtest.NewDataDir(t, embedded.Start, 10)
	ms, err := datadir.ReadMembers(cfg.Dir)
	require.NoError(t, err)
	require.Len(t, ms, 1)
	assert.Equal(t, cfg.Name, ms[0].Name)
	assert.Equal(t, []string{cfg.AdvertisePeerUrls[0].String()}, ms[0].PeerURLs)
	assert.False(t, ms[0].IsLearner)
	ids, err := datadir.ReadIDs(cfg.Dir, "")
	require.NoError(t, err)
	assert.Equal(t, ids.MemberID, types.ID(ms[0].ID).String())

	_, err = datadir.ReadMembers(filepath.Join(t.TempDir(), "none"))
	assert.Error(t, err)

	before := embeddedtest.TreeDigest(t, cfg.Dir)
	wal := filepath.Join(filepath.Dir(cfg.Dir), "wal")
	require.NoError(t, os.Mkdir(wal, 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(wal, "x.wal"), []byte("wal"), 0o600))
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	aside, err := datadir.MoveAside(cfg.Dir, wal, now, nil)
	require.NoError(t, err)
	assert.Equal(t, cfg.Dir+".etcdbr-old-20250102T030405Z", aside)
	assert.Equal(t, before, embeddedtest.TreeDigest(t, aside))
	assert.NoDirExists(t, cfg.Dir)
	assert.NoDirExists(t, wal)
	assert.FileExists(t, filepath.Join(wal+".etcdbr-old-20250102T030405Z", "x.wal"))

	// Nothing to move: no error, nothing moved.
	aside, err = datadir.MoveAside(cfg.Dir, "", now, nil)
	require.NoError(t, err)
	assert.Empty(t, aside)
}
