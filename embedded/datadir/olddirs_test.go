package datadir

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/etcdbr/etcdbr/internal/embeddedtest"
)

func TestPruneOldDataDirs(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	require.NoError(t, os.Mkdir(dir, 0o700))
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	var made []string
	for i, at := range []time.Duration{0, 0, time.Hour, 0, 2 * time.Hour} {
		p := AsideDir(dir, now.Add(at))
		require.NoError(t, os.Mkdir(p, 0o700), "dir %d", i)
		made = append(made, p)
	}
	// made: T, T-1, T+1h, T-2, T+2h: by age T, T-1, T-2, T+1h, T+2h.
	require.NoError(t, os.Mkdir(dir+".etcdbr-old-notatime", 0o700))
	require.NoError(t, os.WriteFile(dir+".etcdbr-old-20260101T000000Z-file", nil, 0o600))

	olds, err := OldDataDirs(dir)
	require.NoError(t, err)
	assert.Equal(t, []string{made[0], made[1], made[3], made[2], made[4]}, olds)

	removed, err := PruneOldDataDirs(dir, "", 2, embeddedtest.Logger(t))
	require.NoError(t, err)
	assert.Equal(t, []string{made[0], made[1], made[3]}, removed)
	olds, err = OldDataDirs(dir)
	require.NoError(t, err)
	assert.Equal(t, []string{made[2], made[4]}, olds)

	removed, err = PruneOldDataDirs(dir, "", 0, embeddedtest.Logger(t))
	require.NoError(t, err)
	assert.Equal(t, []string{made[2]}, removed, "the newest old copy always stays")
	assert.DirExists(t, made[4])
	assert.DirExists(t, dir)
	assert.DirExists(t, dir+".etcdbr-old-notatime", "not a name etcdbr made")
}
