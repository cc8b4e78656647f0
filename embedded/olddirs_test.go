package embedded

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
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
		p := asideDir(dir, now.Add(at))
		require.NoError(t, os.Mkdir(p, 0o700), "dir %d", i)
		made = append(made, p)
	}
	// made: T, T-1, T+1h, T-2, T+2h: by age T, T-1, T-2, T+1h, T+2h.
	require.NoError(t, os.Mkdir(dir+".etcdbr-old-notatime", 0o700))
	require.NoError(t, os.WriteFile(dir+".etcdbr-old-20260101T000000Z-file", nil, 0o600))

	olds, err := OldDataDirs(dir)
	require.NoError(t, err)
	assert.Equal(t, []string{made[0], made[1], made[3], made[2], made[4]}, olds)

	removed, err := PruneOldDataDirs(dir, "", 2, testLogger(t))
	require.NoError(t, err)
	assert.Equal(t, []string{made[0], made[1], made[3]}, removed)
	olds, err = OldDataDirs(dir)
	require.NoError(t, err)
	assert.Equal(t, []string{made[2], made[4]}, olds)

	removed, err = PruneOldDataDirs(dir, "", 0, testLogger(t))
	require.NoError(t, err)
	assert.Equal(t, []string{made[2]}, removed, "the newest old copy always stays")
	assert.DirExists(t, made[4])
	assert.DirExists(t, dir)
	assert.DirExists(t, dir+".etcdbr-old-notatime", "not a name etcdbr made")
}

// TestRecoverKeepsOldDataDir: a restore over an existing data dir interrupted before the
// swap leaves the old dir as it was.
func TestRecoverKeepsOldDataDir(t *testing.T) {
	t.Parallel()
	base, _ := newDataDir(t, 20)
	dir := filepath.Join(t.TempDir(), "data")
	copyTree(t, base.Dir, dir)
	before := treeDigest(t, dir)

	// A complete staging dir beside an existing data dir: the swap never started.
	stage := StagingDir(dir)
	copyTree(t, base.Dir, filepath.Join(stage, "data"))
	require.NoError(t, os.WriteFile(filepath.Join(stage, completeMarker), nil, 0o600))
	did, err := RecoverInterruptedRestore(dir, "", testLogger(t))
	require.NoError(t, err)
	assert.Contains(t, did, "removed "+stage)
	assert.NotContains(t, did, "finished")
	assert.NoDirExists(t, stage)
	assert.Equal(t, before, treeDigest(t, dir))

	// An incomplete staging dir and no data dir: removed, nothing moved in.
	copyTree(t, base.Dir, filepath.Join(stage, "data"))
	require.NoError(t, os.Rename(dir, dir+".etcdbr-old-20260101T000000Z"))
	_, err = RecoverInterruptedRestore(dir, "", testLogger(t))
	require.NoError(t, err)
	assert.NoDirExists(t, stage)
	assert.NoDirExists(t, dir)
	assert.Equal(t, before, treeDigest(t, dir+".etcdbr-old-20260101T000000Z"))

	did, err = RecoverInterruptedRestore(dir, "", testLogger(t))
	require.NoError(t, err)
	assert.Empty(t, did, "nothing to do")
}

// TestBuildDataDirDiskFull restores a snapshot larger than the free space of the
// filesystem of the data dir (a 20 MiB tmpfs): the error says the disk is full, and the
// old data dir is untouched, with no staging dir left.
func TestBuildDataDirDiskFull(t *testing.T) {
	t.Parallel()
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount a 20 MiB tmpfs (the test runs as root): %v: %s", err, out)
	}
	t.Cleanup(func() { _ = syscall.Unmount(mnt, syscall.MNT_DETACH) })

	src := embeddedtest.NewConfig(t)
	se := mustStart(t, src)
	big := strings.Repeat("x", 1<<20)
	for i := range 30 {
		_, err := se.Client().Put(context.Background(), fmt.Sprintf("big-%02d", i), big)
		require.NoError(t, err)
	}
	snap := writeSnapshotFile(t, src)
	se.Close()

	old, _ := newDataDir(t, 20)
	cfg := embeddedtest.NewConfig(t)
	cfg.Dir = filepath.Join(mnt, "data")
	copyTree(t, old.Dir, cfg.Dir)
	before := treeDigest(t, cfg.Dir)

	_, err := BuildDataDir(context.Background(), snap, cfg, RestoreOptions{}, testLogger(t))
	require.Error(t, err)
	assert.ErrorIs(t, err, syscall.ENOSPC, "%v", err)
	assert.Contains(t, err.Error(), "no space left on device")
	assert.Equal(t, before, treeDigest(t, cfg.Dir), "the old data dir was changed")
	assert.NoDirExists(t, StagingDir(cfg.Dir))
	olds, err := OldDataDirs(cfg.Dir)
	require.NoError(t, err)
	assert.Empty(t, olds)
}
