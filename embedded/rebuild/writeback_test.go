package rebuild

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// writeBack leaves what is written as it is, takes any number of pokes without blocking,
// and stop returns once its goroutine ended; a file it cannot open gives a nil writeBack
// that does nothing.
func TestWriteBack(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	f, err := os.Create(path)
	require.NoError(t, err)
	defer f.Close()
	w := newWriteBack(path)
	require.NotNil(t, w)
	data := bytes.Repeat([]byte("etcdbr"), 1<<16)
	for range 20 {
		_, err := f.Write(data)
		require.NoError(t, err)
		w.kick()
	}
	w.stop()
	require.NoError(t, f.Sync())
	got, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, bytes.Repeat(data, 20), got)

	none := newWriteBack(filepath.Join(t.TempDir(), "missing"))
	require.Nil(t, none)
	none.kick()
	none.stop()
}
