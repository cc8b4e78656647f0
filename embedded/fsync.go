package embedded

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// syncTree fsyncs every regular file and directory under root, root included.
func syncTree(root string) error {
	return filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && !d.Type().IsRegular() {
			return nil
		}
		return syncPath(path)
	})
}

// syncPath fsyncs one file or directory.
func syncPath(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open %q to fsync it: %w", path, err)
	}
	serr := f.Sync()
	cerr := f.Close()
	if serr != nil {
		return fmt.Errorf("fsync %q: %w", path, serr)
	}
	if cerr != nil {
		return fmt.Errorf("close %q: %w", path, cerr)
	}
	return nil
}
