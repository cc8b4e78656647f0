package snapstore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/etcdbr/etcdbr/internal/fsync"
)

// errRecordExists is wrapped by writeRecord's error when a conditional write found its key
// written already.
var errRecordExists = errors.New("the record exists")

// createLocal writes data as key in a file store's directory, only if key does not exist
// (mode 0600): into a temporary file beside it (<key>.<digits>.tmp, named as uploads name
// theirs, so that garbage collection sweeps one a crash left), synced, then hard-linked to
// its name. The link fails when the name exists, atomically and across processes, so of
// two writers at once exactly one succeeds; fileblob's IfNotExist looks for the name and
// then renames over it, and both of two writers at once may pass the look.
func (s *Store) createLocal(key string, data []byte) (err error) {
	final := filepath.Join(s.localDir, filepath.FromSlash(key))
	dir := filepath.Dir(final)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %q: %w", key, err)
	}
	f, err := os.CreateTemp(dir, filepath.Base(final)+".*.tmp") // a name of its own; digits for the *
	if err != nil {
		return fmt.Errorf("create %q: %w", key, err)
	}
	tmp := f.Name()
	defer func() {
		if rerr := os.Remove(tmp); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) && err == nil {
			err = fmt.Errorf("create %q: remove the temporary file: %w", key, rerr)
		}
	}()
	if err := fsync.WriteClose(f, data); err != nil {
		return fmt.Errorf("create %q: %w", key, err)
	}
	if err := os.Link(tmp, final); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("create %q: %w", key, errRecordExists)
		}
		return fmt.Errorf("create %q: %w", key, err)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("create %q: %w", key, err)
	}
	return nil
}
