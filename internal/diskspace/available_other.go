//go:build !(linux || darwin || freebsd)

package diskspace

import (
	"errors"
	"fmt"
)

// Available is unknown on this system: it returns an error wrapping errors.ErrUnsupported.
func Available(path string) (int64, error) {
	return 0, fmt.Errorf("free space of %q: %w", path, errors.ErrUnsupported)
}
