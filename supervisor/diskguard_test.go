package supervisor

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"go.etcd.io/etcd/server/v3/storage/wal"
)

// The data dir counts as full below etcd's WAL file size, which etcd keeps in a variable.
func TestDataDirReserveIsAWALFile(t *testing.T) {
	if dataDirReserve != wal.SegmentSizeBytes {
		t.Fatalf("dataDirReserve is %d, etcd's WAL files are %d bytes", dataDirReserve, wal.SegmentSizeBytes)
	}
}

// A start of etcd that fails on a full or read-only file system says which directory and
// what to do; other failures with room to spare pass unchanged.
func TestStartDiskFault(t *testing.T) {
	dir := t.TempDir()
	full := fmt.Errorf("start etcd: %w", &fs.PathError{Op: "write", Path: dir + "/member/snap/db", Err: syscall.ENOSPC})
	if err := startDiskFault(full, dir, ""); !strings.Contains(err.Error(), "the file system of the data dir ("+dir+") has ") ||
		!strings.Contains(err.Error(), "make room there") || !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("full: %v", err)
	}
	ro := fmt.Errorf("start etcd: %w", syscall.EROFS)
	if err := startDiskFault(ro, dir, ""); !strings.Contains(err.Error(), "remount it read-write") {
		t.Errorf("read-only: %v", err)
	}
	// A data dir etcd has not created yet: its parent's file system is read.
	if err := startDiskFault(full, filepath.Join(dir, "new"), ""); !strings.Contains(err.Error(), "("+dir+") has ") {
		t.Errorf("full, no data dir yet: %v", err)
	}
	other := errors.New("start etcd: listen tcp 127.0.0.1:2379: address already in use")
	if err := startDiskFault(other, dir, ""); err != other {
		t.Errorf("another failure changed: %v", err)
	}
}
