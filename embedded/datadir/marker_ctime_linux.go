//go:build linux

package datadir

import (
	"io/fs"
	"syscall"
)

// changeTime is the inode change time of a file in nanoseconds: no tool sets it
// back, so a file rewritten with its old mtime still shows.
func changeTime(st fs.FileInfo) int64 {
	if s, ok := st.Sys().(*syscall.Stat_t); ok {
		return s.Ctim.Sec*1e9 + s.Ctim.Nsec
	}
	return 0
}
