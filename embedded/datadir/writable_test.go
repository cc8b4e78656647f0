//go:build unix

package datadir

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCheckWritable(t *testing.T) {
	if dir := os.Getenv(writableChildEnv); dir != "" { // the unprivileged child
		err := CheckWritable(dir)
		require.Error(t, err, dir)
		fmt.Println(err)
		return
	}
	t.Parallel()
	root := t.TempDir()
	file := filepath.Join(root, "file")
	require.NoError(t, os.WriteFile(file, nil, 0o600))
	existing := filepath.Join(root, "existing")
	require.NoError(t, os.MkdirAll(filepath.Join(existing, "member", "snap"), 0o700))

	for _, dir := range []string{
		existing,
		filepath.Join(root, "new"), // created in its parent
		filepath.Join(root, "new", "nested", "dir"), // parents created too
	} {
		assert.NoError(t, CheckWritable(dir), dir)
	}
	entries, err := os.ReadDir(existing)
	require.NoError(t, err)
	assert.Len(t, entries, 1, "the probe file is removed")

	for _, dir := range []string{file, filepath.Join(file, "etcd")} {
		err := CheckWritable(dir)
		require.Error(t, err, dir)
		assert.Contains(t, err.Error(), fmt.Sprintf("data dir %q is not writable: ", dir))
		assert.Contains(t, err.Error(), "; fix the permissions or choose another --data-dir")
		assert.Contains(t, err.Error(), "not a directory")
	}

	t.Run("permissions", func(t *testing.T) {
		ro := filepath.Join(root, "read-only")
		require.NoError(t, os.Mkdir(ro, 0o500))
		for _, dir := range []string{ro, filepath.Join(ro, "etcd")} {
			msg := checkWritableUnprivileged(t, root, dir)
			assert.Contains(t, msg, fmt.Sprintf("data dir %q is not writable: ", dir))
			assert.Contains(t, msg, "permission denied")
		}
	})
}

// writableChildEnv names the dir a child process of TestCheckWritable checks.
const writableChildEnv = "ETCDBR_TEST_WRITABLE_DIR"

// checkWritableUnprivileged returns CheckWritable(dir)'s error message, checked as a user
// that file modes bind: this process, or, when it runs as root (which writes into any
// directory whatever its mode), a copy of the test binary running as nobody.
func checkWritableUnprivileged(t *testing.T, root, dir string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		err := CheckWritable(dir)
		require.Error(t, err)
		return err.Error()
	}
	return string(runAsNobody(t, root, "TestCheckWritable", writableChildEnv+"="+dir))
}
