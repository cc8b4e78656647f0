package supervisor

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"syscall"
	"testing"
)

// A compaction whose scratch dir's file system is full or read-only says which spool dir
// and what to do; the store's own errors (which name no scratch dir) pass unchanged.
func TestSpoolFault(t *testing.T) {
	scratch := "/spool/etcdbr-compact-12-abc"
	full := fmt.Errorf("fetch full/x into %q: %w", scratch+"/db", &fs.PathError{Op: "write", Path: scratch + "/db", Err: syscall.ENOSPC})
	err := spoolFault(full, "/spool", scratch)
	for _, want := range []string{"no space left on device", "spool dir /spool is full", "make room there", "--compact-spool-dir"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("spool full: %v, want it to say %q", err, want)
		}
	}
	if !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("spool full: %v does not wrap ENOSPC", err)
	}
	ro := &fs.PathError{Op: "mkdirtemp", Path: "/spool/etcdbr-compact-12-x", Err: syscall.EROFS}
	if err := spoolFault(ro, "/spool", "/spool"); !strings.Contains(err.Error(), "read-only file system; nothing was added") {
		t.Errorf("spool read-only: %v", err)
	}
	store := errors.New(`upload "full/x" to "file:///store": no space left on device (the file system of the store's directory /store is full ...)`)
	if got := spoolFault(store, "/spool", scratch); got != store {
		t.Errorf("a store error changed: %v", got)
	}
}
