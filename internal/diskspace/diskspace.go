// Package diskspace tells the errors of a full file system and of a read-only one from
// others, and says how much room a file system has left: what etcdbr's messages about its
// local directories (a file store's directory, a spool dir, the data dir) name, so that the
// message says which directory, why, and what to do.
package diskspace

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
)

// Full reports whether err is a file system's "no space left on device" (ENOSPC) or a
// disk quota's (EDQUOT). Errors that kept only the text (some libraries format the cause
// with %v) are recognised by it.
func Full(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return true
	}
	msg := err.Error()
	return strings.Contains(msg, syscall.ENOSPC.Error()) || strings.Contains(msg, syscall.EDQUOT.Error())
}

// ReadOnly reports whether err is a read-only file system's refusal (EROFS), by its error
// number or its text.
func ReadOnly(err error) bool {
	if err == nil {
		return false
	}
	return errors.Is(err, syscall.EROFS) || strings.Contains(err.Error(), syscall.EROFS.Error())
}

// Bytes formats a size in the units people read (KiB, MiB, GiB), e.g. "64 MiB".
func Bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}
