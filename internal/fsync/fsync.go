// Package fsync makes files and directories durable. Two packages write into data dirs through
// it: embedded/datadir (its markers) and embedded/rebuild (the staged data dir, the swap, the
// restore marker through datadir); snapstore writes a file store's exclusive records with
// it. It is not part of datadir, whose API says what a data dir holds, nor of rebuild, which
// datadir cannot import (rebuild imports datadir).
package fsync

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Tree fsyncs every regular file and directory under root, root included.
func Tree(root string) error {
	return filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && !d.Type().IsRegular() {
			return nil
		}
		return Path(path)
	})
}

// Path fsyncs one file or directory.
func Path(path string) error {
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

// WriteFile writes data to the file at path (created with mode 0600, or truncated) and fsyncs
// it before closing it. The directory is not synced: the caller syncs it (Path) once the
// file's name is final.
func WriteFile(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	return WriteClose(f, data)
}

// WriteClose writes data to f, an open file, fsyncs it and closes it (on an error too), as
// WriteFile does to the file it opens: for a file the caller created itself (a temporary
// file of a name of its own).
func WriteClose(f *os.File, data []byte) error {
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
