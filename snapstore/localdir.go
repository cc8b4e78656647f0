package snapstore

import (
	"fmt"

	"github.com/etcdbr/etcdbr/internal/diskspace"
)

// explainLocal adds to err, when it is a file store's directory refusing a write because its
// file system is read-only or full, which directory it is, what to do, and outcome (what
// the failed operation left, e.g. "nothing was written"). Other errors, and
// other stores' errors, are returned as they are. The cause stays in the chain (errors.Is
// finds syscall.EROFS or syscall.ENOSPC).
func (s *Store) explainLocal(err error, outcome string) error {
	if err == nil || s.localDir == "" {
		return err
	}
	switch {
	case diskspace.ReadOnly(err):
		return fmt.Errorf("%w (the store's directory %s is on a read-only file system: remount it read-write, "+
			"or give --store a writable directory; %s)", err, s.localDir, outcome)
	case diskspace.Full(err):
		return fmt.Errorf("%w (the file system of the store's directory %s is full: make room on it "+
			"(etcdbr gc deletes old backups), or give --store a directory with room; %s)", err, s.localDir, outcome)
	}
	return err
}

// nothingWritten is what a failed upload leaves: no object, and no temporary file.
const nothingWritten = "nothing was written"
