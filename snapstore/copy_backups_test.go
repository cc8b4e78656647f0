package snapstore

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/etcdbr/etcdbr/internal/progress"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// A copy of a whole store copies what the destination lacks, reports a corrupt object and
// goes on with the rest; run again, it copies only what failed before.
func TestCopyBackups(t *testing.T) {
	ctx := context.Background()
	src, srcDir := openFileStore(t, Options{})
	full, d1, d2 := writeChain(t, src)
	dst, _ := openFileStore(t, Options{})

	path := filepath.Join(srcDir, filepath.FromSlash(d1.Key))
	good, err := os.ReadFile(path)
	require.NoError(t, err)
	bad := append([]byte(nil), good...)
	bad[len(bad)/3] ^= 1
	require.NoError(t, os.WriteFile(path, bad, 0o600))

	sel, err := SelectBackupCopies(ctx, src, dst, time.Time{})
	require.NoError(t, err)
	require.Equal(t, []catalog.Snapshot{full, d1, d2}, sel.ToCopy)
	assert.Empty(t, sel.Skipped)
	p := progress.New("copy")
	var seen []string
	done, err := CopyBackups(ctx, src, dst, sel, p, func(o CopiedObject) { seen = append(seen, o.Snapshot.Key) })
	require.ErrorIs(t, err, ErrCorrupt)
	assert.Contains(t, err.Error(), "1 of 3 objects were not copied")
	assert.Contains(t, err.Error(), d1.Key)
	assert.Equal(t, []string{full.Key, d1.Key, d2.Key}, seen, "every object is reported, in order")
	require.Len(t, done, 3)
	assert.NoError(t, done[0].Err)
	assert.ErrorIs(t, done[1].Err, ErrCorrupt)
	assert.NoError(t, done[2].Err)
	assert.Equal(t, full.Size+d1.Size+d2.Size, p.Load().BytesTotal)

	require.NoError(t, os.WriteFile(path, good, 0o600))
	sel, err = SelectBackupCopies(ctx, src, dst, time.Time{})
	require.NoError(t, err)
	assert.Equal(t, []catalog.Snapshot{d1}, sel.ToCopy, "the second run copies what failed")
	assert.Equal(t, []catalog.Snapshot{full, d2}, sel.Skipped)
	_, err = CopyBackups(ctx, src, dst, sel, nil, nil)
	require.NoError(t, err)
	l, err := dst.ListBackups(ctx)
	require.NoError(t, err)
	assert.Equal(t, []catalog.Snapshot{full}, l.Fulls)
	assert.Equal(t, []catalog.Snapshot{d1, d2}, l.Deltas)
}

// An interrupted copy stops at once with ctx's error.
func TestCopyBackupsInterrupted(t *testing.T) {
	src, _ := openFileStore(t, Options{})
	writeChain(t, src)
	dst, _ := openFileStore(t, Options{})
	sel, err := SelectBackupCopies(context.Background(), src, dst, time.Time{})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	done, err := CopyBackups(ctx, src, dst, sel, nil, func(CopiedObject) { t.Error("no object is reported after the interruption") })
	require.ErrorIs(t, err, context.Canceled)
	assert.Contains(t, err.Error(), "copy interrupted after 0 objects")
	assert.Empty(t, done)
}
