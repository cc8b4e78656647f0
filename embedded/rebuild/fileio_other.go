//go:build !linux

package rebuild

import "os"

// punchHole does nothing where Go has no fallocate: the bytes stay until f is removed.
func punchHole(*os.File, int64, int64) error { return nil }

// startWriteBack does nothing where Go has no sync_file_range: the later fsync writes all.
func startWriteBack(*os.File) error { return nil }
