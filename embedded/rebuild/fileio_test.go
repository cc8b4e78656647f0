//go:build linux

package rebuild

import (
	"bytes"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

// punchHole frees the range's blocks, which then read as zeros; the bytes around it and the
// file's size stay.
func TestPunchHole(t *testing.T) {
	path := filepath.Join(t.TempDir(), "spool")
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	require.NoError(t, os.WriteFile(path, data, 0o600))
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	require.NoError(t, err)
	defer f.Close()
	require.NoError(t, f.Sync())
	blocks := func() int64 {
		var st syscall.Stat_t
		require.NoError(t, syscall.Fstat(int(f.Fd()), &st))
		return st.Blocks
	}
	before := blocks()
	require.NoError(t, punchHole(f, 0, 512<<10+100))
	after := blocks()
	got, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Len(t, got, len(data))
	require.Equal(t, make([]byte, 512<<10+100), got[:512<<10+100])
	require.Equal(t, data[512<<10+100:], got[512<<10+100:])
	// tmpfs and ext4 both free the whole blocks inside the range.
	require.Less(t, after, before, "blocks %d -> %d", before, after)
}
