package datadir

import "fmt"

// Depth is how deeply InspectWith checks a data dir.
type Depth int

const (
	// DepthAuto runs the quick check when a clean-stop marker matches the data
	// dir, and the full check otherwise (or when the quick check fails).
	DepthAuto Depth = iota
	// DepthQuick trusts a matching clean-stop marker: layout, marker, bbolt's
	// meta pages and the revision. Without a matching marker the verdict is
	// StateUnknown.
	DepthQuick
	// DepthFull reads everything: every reachable bbolt page, bbolt's
	// consistency check, every value, the whole WAL.
	DepthFull
)

// String returns "auto", "quick" or "full".
func (d Depth) String() string {
	switch d {
	case DepthAuto:
		return "auto"
	case DepthQuick:
		return "quick"
	case DepthFull:
		return "full"
	}
	return fmt.Sprintf("Depth(%d)", int(d))
}

// ParseDepth parses "auto", "quick" or "full" ("" is auto).
func ParseDepth(s string) (Depth, error) {
	switch s {
	case "", "auto":
		return DepthAuto, nil
	case "quick":
		return DepthQuick, nil
	case "full":
		return DepthFull, nil
	}
	return DepthAuto, fmt.Errorf("validation depth %q: want auto, quick or full", s)
}

// InspectOptions configure InspectWith.
type InspectOptions struct {
	// Depth is how deeply to check; the zero value is DepthAuto.
	Depth Depth
}
