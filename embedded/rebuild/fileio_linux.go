package rebuild

import (
	"os"
	"syscall"
)

// punchHole frees the blocks of f's bytes [off, off+n) (the file keeps its size; they read
// as zeros after): their pages leave the page cache unwritten if they are not written back
// yet. A file system without the call is not an error: the bytes stay until f is removed.
func punchHole(f *os.File, off, n int64) error {
	const punchHole, keepSize = 0x02, 0x01 // FALLOC_FL_PUNCH_HOLE, FALLOC_FL_KEEP_SIZE
	err := syscall.Fallocate(int(f.Fd()), punchHole|keepSize, off, n)
	if err == syscall.EOPNOTSUPP || err == syscall.ENOSYS {
		return nil
	}
	return err
}

// startWriteBack starts writing f's dirty pages back to its disk, and returns without
// waiting for them (sync_file_range's SYNC_FILE_RANGE_WRITE): a later fsync finds them
// written or on their way.
func startWriteBack(f *os.File) error {
	const write = 0x2 // SYNC_FILE_RANGE_WRITE
	err := syscall.SyncFileRange(int(f.Fd()), 0, 0, write)
	if err == syscall.ENOSYS || err == syscall.EOPNOTSUPP {
		return nil
	}
	return err
}
