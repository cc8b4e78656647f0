package snapstore

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// syncDir fsyncs a directory, so that a rename in it survives a crash.
// Filesystems that cannot sync directories are tolerated.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, errors.ErrUnsupported) {
		return fmt.Errorf("sync directory %q: %w", dir, err)
	}
	return nil
}
