package catalog

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Kind is the kind of a backup object.
type Kind string

// The kinds of backup objects.
const (
	// KindFull is a full snapshot: the bbolt db etcd's Maintenance API sends.
	KindFull Kind = "full"
	// KindDelta is a delta snapshot: the events of a revision range.
	KindDelta Kind = "delta"
)

// Snapshot describes one backup object. Everything in it is parsed from the
// object's name, except Size, which comes from the listing.
type Snapshot struct {
	// Kind is KindFull or KindDelta.
	Kind Kind
	// From is the first revision covered: for a delta its <from>; for a full
	// snapshot 0 (it covers everything up to Revision).
	From int64
	// Revision is the last revision covered: for a full snapshot the revision
	// inside it, for a delta its <to>.
	Revision int64
	// Time is when the snapshot was taken, in UTC with millisecond precision.
	Time time.Time
	// Encrypted reports whether the object is encrypted with age (its name
	// ends in .age).
	Encrypted bool
	// Key is the object key relative to the store prefix, e.g.
	// "full/00000000000000012345-20261125T154500.123Z.db.zst".
	Key string
	// Size is the object's size in bytes as stored, or 0 when not known.
	Size int64
	// RevisionAtLeast marks a full snapshot whose Revision is only a lower bound of the
	// revision inside: one of another tool that names a snapshot by the revision it read just
	// before taking it (etcd-backup-restore). The revision inside is known once the snapshot
	// is read; etcdbr's own names are exact.
	RevisionAtLeast bool
}

// Listing is what a store holds: its full snapshots and deltas, each sorted by
// CompareSnapshots (snapstore's Store.ListBackups), and, for garbage collection, its
// restore locks (Store.ListForGC).
type Listing struct {
	Fulls, Deltas []Snapshot
	Locks         []RestoreLock
	// Damaged are the listed objects the store records as damaged, by key (snapstore's
	// Store.DamagedIn; nil: none). Garbage collection keeps them and counts none of them as
	// a backup.
	Damaged map[string]Damage
}

const (
	revDigits  = 20
	timeLayout = "20060102T150405.000Z"
	fullDir    = string(KindFull) + "/"
	deltaDir   = string(KindDelta) + "/"
	fullExt    = ".db.zst"
	deltaExt   = ".delta.zst"
	ageExt     = ".age"
)

// FullName returns the key of a full snapshot of revision rev taken at t:
// full/<rev>-<time>.db.zst, with .age appended when encrypted. rev must be
// at least 1 and t must lie in the years 0000-9999 (snapstore's Store.Create checks
// both); ParseName rejects what FullName makes of anything else.
func FullName(rev int64, t time.Time, encrypted bool) string {
	return fullDir + formatRev(rev) + "-" + formatTime(t) + fullExt + ageSuffix(encrypted)
}

// DeltaName returns the key of a delta covering the revisions from..to
// (inclusive) taken at t: delta/<from>-<to>-<time>.delta.zst, with .age
// appended when encrypted. It requires 1 <= from <= to like FullName requires
// a valid revision.
func DeltaName(from, to int64, t time.Time, encrypted bool) string {
	return deltaDir + formatRev(from) + "-" + formatRev(to) + "-" + formatTime(t) + deltaExt + ageSuffix(encrypted)
}

// ParseName parses an object key (relative to the store prefix) made by
// FullName or DeltaName. It reports false for every other key: temporary
// files of uploads in progress, metadata sidecars, other tools' files, names
// with the wrong field widths or non-canonical fields. The returned
// Snapshot's Size is 0.
func ParseName(key string) (Snapshot, bool) {
	name, encrypted := strings.CutSuffix(key, ageExt)
	snap := Snapshot{Encrypted: encrypted, Key: key}
	var ok bool
	switch {
	case strings.HasPrefix(name, fullDir):
		snap.Kind = KindFull
		ok = parseFull(strings.TrimPrefix(name, fullDir), &snap)
	case strings.HasPrefix(name, deltaDir):
		snap.Kind = KindDelta
		ok = parseDelta(strings.TrimPrefix(name, deltaDir), &snap)
	}
	if !ok {
		return Snapshot{}, false
	}
	return snap, true
}

// parseFull parses "<rev>-<time>.db.zst".
func parseFull(s string, snap *Snapshot) bool {
	body, ok := strings.CutSuffix(s, fullExt)
	if !ok || len(body) != revDigits+1+len(timeLayout) || body[revDigits] != '-' {
		return false
	}
	rev, ok := parseRev(body[:revDigits])
	if !ok || rev < 1 {
		return false
	}
	t, ok := parseTime(body[revDigits+1:])
	if !ok {
		return false
	}
	snap.Revision, snap.Time = rev, t
	return true
}

// parseDelta parses "<from>-<to>-<time>.delta.zst".
func parseDelta(s string, snap *Snapshot) bool {
	body, ok := strings.CutSuffix(s, deltaExt)
	if !ok || len(body) != 2*(revDigits+1)+len(timeLayout) ||
		body[revDigits] != '-' || body[2*revDigits+1] != '-' {
		return false
	}
	from, ok := parseRev(body[:revDigits])
	if !ok || from < 1 {
		return false
	}
	to, ok := parseRev(body[revDigits+1 : 2*revDigits+1])
	if !ok || to < from {
		return false
	}
	t, ok := parseTime(body[2*(revDigits+1):])
	if !ok {
		return false
	}
	snap.From, snap.Revision, snap.Time = from, to, t
	return true
}

func formatRev(rev int64) string {
	return fmt.Sprintf("%0*d", revDigits, rev)
}

func formatTime(t time.Time) string {
	return t.UTC().Format(timeLayout)
}

func ageSuffix(encrypted bool) string {
	if encrypted {
		return ageExt
	}
	return ""
}

// parseRev parses exactly revDigits decimal digits.
func parseRev(s string) (int64, bool) {
	if len(s) != revDigits {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	rev, err := strconv.ParseInt(s, 10, 64)
	return rev, err == nil
}

// parseTime parses a canonical timeLayout string other than the zero time.
func parseTime(s string) (time.Time, bool) {
	t, err := time.Parse(timeLayout, s)
	if err != nil || t.Format(timeLayout) != s || t.IsZero() {
		return time.Time{}, false // the zero time is "no time" to Validate: no name holds it
	}
	return t, true
}

// Validate checks that snap's Kind, From, Revision and Time can be written as
// a name that ParseName accepts.
func (snap Snapshot) Validate() error {
	switch snap.Kind {
	case KindFull:
		if snap.From != 0 {
			return fmt.Errorf("full snapshot with From %d: a full snapshot's From must be 0", snap.From)
		}
		if snap.Revision < 1 {
			return fmt.Errorf("full snapshot with revision %d: revisions start at 1", snap.Revision)
		}
	case KindDelta:
		if snap.From < 1 || snap.Revision < snap.From {
			return fmt.Errorf("delta with revisions %d..%d: need 1 <= from <= to", snap.From, snap.Revision)
		}
	default:
		return fmt.Errorf("unknown snapshot kind %q: use %q or %q", snap.Kind, KindFull, KindDelta)
	}
	if snap.Time.IsZero() {
		return fmt.Errorf("%s snapshot without a time", snap.Kind)
	}
	if y := snap.Time.UTC().Year(); y < 0 || y > 9999 {
		return fmt.Errorf("%s snapshot time %s is outside the years 0000-9999", snap.Kind, snap.Time)
	}
	return nil
}

// Name returns the key for snap's fields, encrypted or not.
func (snap Snapshot) Name(encrypted bool) string {
	if snap.Kind == KindDelta {
		return DeltaName(snap.From, snap.Revision, snap.Time, encrypted)
	}
	return FullName(snap.Revision, snap.Time, encrypted)
}

// CompareSnapshots orders by Revision, From, Time, Key: the order of a listing.
func CompareSnapshots(a, b Snapshot) int {
	switch {
	case a.Revision != b.Revision:
		return cmpInt(a.Revision, b.Revision)
	case a.From != b.From:
		return cmpInt(a.From, b.From)
	case !a.Time.Equal(b.Time):
		return a.Time.Compare(b.Time)
	default:
		return strings.Compare(a.Key, b.Key)
	}
}

func cmpInt(a, b int64) int {
	if a < b {
		return -1
	}
	return 1
}
