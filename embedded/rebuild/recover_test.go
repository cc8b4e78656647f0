package rebuild

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/etcdbr/etcdbr/embedded"
	"github.com/etcdbr/etcdbr/internal/embeddedtest"
)

// TestRecoverKeepsOldDataDir: a restore over an existing data dir interrupted before the
// swap leaves the old dir as it was.
func TestRecoverKeepsOldDataDir(t *testing.T) {
	t.Parallel()
	base, _ := embeddedtest.NewDataDir(t, embedded.Start, 20)
	dir := filepath.Join(t.TempDir(), "data")
	embeddedtest.CopyTree(t, base.Dir, dir)
	before := embeddedtest.TreeDigest(t, dir)

	// A complete staging dir beside an existing data dir: the swap never started.
	stage := StagingDir(dir)
	embeddedtest.CopyTree(t, base.Dir, filepath.Join(stage, "data"))
	require.NoError(t, os.WriteFile(filepath.Join(stage, completeMarker), nil, 0o600))
	did, err := RecoverInterruptedRestore(dir, "", embeddedtest.Logger(t))
	require.NoError(t, err)
	assert.Contains(t, did, "removed "+stage)
	assert.NotContains(t, did, "finished")
	assert.NoDirExists(t, stage)
	assert.Equal(t, before, embeddedtest.TreeDigest(t, dir))

	// An incomplete staging dir and no data dir: removed, nothing moved in.
	embeddedtest.CopyTree(t, base.Dir, filepath.Join(stage, "data"))
	require.NoError(t, os.Rename(dir, dir+".etcdbr-old-20260101T000000Z"))
	_, err = RecoverInterruptedRestore(dir, "", embeddedtest.Logger(t))
	require.NoError(t, err)
	assert.NoDirExists(t, stage)
	assert.NoDirExists(t, dir)
	assert.Equal(t, before, embeddedtest.TreeDigest(t, dir+".etcdbr-old-20260101T000000Z"))

	did, err = RecoverInterruptedRestore(dir, "", embeddedtest.Logger(t))
	require.NoError(t, err)
	assert.Empty(t, did, "nothing to do")
}
