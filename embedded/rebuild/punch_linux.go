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
