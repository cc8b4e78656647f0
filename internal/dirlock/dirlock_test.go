//go:build unix

package dirlock

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// tryLock tries to take the lock of dir without waiting, as another process would.
func tryLock(t *testing.T, dir string) (ok bool, release func()) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		f.Close()
		return false, nil
	}
	if err != nil {
		f.Close()
		t.Fatal(err)
	}
	return true, func() { f.Close() }
}

// While one holder has the lock nobody else gets it; once released, the next one does.
func TestLockExcludes(t *testing.T) {
	dir := t.TempDir()
	unlock, err := Lock(dir)
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := tryLock(t, dir); ok {
		t.Fatal("another holder took the lock while Lock held it")
	}
	unlock()
	ok, release := tryLock(t, dir)
	if !ok {
		t.Fatal("the lock is still held after unlock")
	}
	release()
	if _, err := Lock(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("Lock of a dir that does not exist succeeded")
	}
}
