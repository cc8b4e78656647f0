//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package datadir

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// dbInUse reports whether a process holds the bbolt lock of the db file at
// path (a running etcd holds it exclusively). A file that cannot exist is not
// in use.
func dbInUse(path string) (bool, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("open %q to check its lock: %w", path, err)
	}
	defer f.Close()
	// bbolt takes flock(2) locks: LOCK_EX for writers, LOCK_SH for readers.
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB)
	switch {
	case errors.Is(err, syscall.EWOULDBLOCK):
		return true, nil
	case err != nil:
		return false, fmt.Errorf("check the lock of %q: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_UN); err != nil {
		return false, fmt.Errorf("release the lock of %q: %w", path, err)
	}
	return false, nil
}
