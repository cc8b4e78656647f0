package foreign

import (
	"errors"
	"strconv"
	"strings"
	"time"
)

// ErrMalformed is wrapped by the errors about content of another tool that does not follow
// its format; ErrChecksum by those about content that fails the checksum the tool recorded.
var (
	ErrMalformed = errors.New("malformed")
	ErrChecksum  = errors.New("checksum mismatch")
)

// EBRKind is the kind of an etcd-backup-restore snapshot, as its names spell it.
type EBRKind string

// The kinds of etcd-backup-restore snapshots.
const (
	// EBRFull is a full snapshot ("Full-"): the db etcd's Maintenance API streams, followed by
	// its SHA-256.
	EBRFull EBRKind = "Full"
	// EBRDelta is a delta snapshot ("Incr-"): a JSON array of watch events followed by the
	// SHA-256 of the JSON text.
	EBRDelta EBRKind = "Incr"
)

// EBRObject is what the key of an etcd-backup-restore snapshot says.
//
// etcd-backup-restore keeps its snapshots under <store prefix>/v2/ (its layout since v0.9),
// and earlier under <store prefix>/v1/Backup-<unix time>/ (one directory per full snapshot
// and its deltas); it lists both. A name is
//
//	<kind>-<start revision>-<last revision>-<unix time><compression suffix>[.final]
//
// with the revisions zero-padded to 8 digits (wider when they are larger), the compression
// suffix "" (none), ".gz", ".zlib" or ".Z" (lzw), and ".final" on the full snapshot taken
// when it stopped.
type EBRObject struct {
	// Key is the object's key under the store's base (the prefix that holds v1/ and v2/).
	Key string
	// Layout is "v1" or "v2".
	Layout string
	Kind   EBRKind
	// Start and Last are the revisions in the name. A full snapshot's Start is 0 and its Last
	// is the revision etcd reported just before the snapshot was taken: a lower bound of the
	// revision inside. A delta holds the events of revisions Start..Last.
	Start, Last int64
	// Created is the time in the name (whole seconds, UTC): when the object was made, after
	// what it holds was read.
	Created     time.Time
	Compression Compression
	Final       bool
}

// ParseEBRKey parses the key of an etcd-backup-restore snapshot relative to the store's base
// ("v2/Full-00000000-00001234-1700000000.gz", "v1/Backup-1700000000/Incr-...").
// It reports false for every other key, including the chunk objects some of its providers
// upload parts of a snapshot as (a key one level deeper), which its own restore skips too.
func ParseEBRKey(key string) (EBRObject, bool) {
	parts := strings.Split(key, "/")
	o := EBRObject{Key: key}
	var name string
	switch {
	case len(parts) == 2 && parts[0] == "v2":
		o.Layout, name = "v2", parts[1]
	case len(parts) == 3 && parts[0] == "v1" && validBackupDir(parts[1]):
		o.Layout, name = "v1", parts[2]
	default:
		return EBRObject{}, false
	}
	if !o.parseName(name) {
		return EBRObject{}, false
	}
	return o, true
}

// validBackupDir reports whether dir is a v1 backup directory, Backup-<unix time>.
func validBackupDir(dir string) bool {
	t, ok := strings.CutPrefix(dir, "Backup-")
	return ok && digits(t)
}

// parseName parses "<kind>-<start>-<last>-<unix><suffix>[.final]".
func (o *EBRObject) parseName(name string) bool {
	name, o.Final = strings.CutSuffix(name, ".final")
	fields := strings.Split(name, "-")
	if len(fields) != 4 {
		return false
	}
	switch EBRKind(fields[0]) {
	case EBRFull, EBRDelta:
		o.Kind = EBRKind(fields[0])
	default:
		return false
	}
	unix, rest, _ := strings.Cut(fields[3], ".")
	if rest != "" {
		rest = "." + rest
	}
	o.Compression = -1
	for _, c := range []Compression{None, Gzip, Zlib, LZW} {
		if rest == c.suffix() {
			o.Compression = c
		}
	}
	if o.Compression < 0 || (o.Final && o.Kind != EBRFull) {
		return false
	}
	start, ok1 := parseDecimal(fields[1])
	last, ok2 := parseDecimal(fields[2])
	secs, ok3 := parseDecimal(unix)
	o.Start, o.Last = start, last
	if !ok1 || !ok2 || !ok3 || o.Last < 1 || o.Start > o.Last {
		return false
	}
	if o.Kind == EBRDelta && o.Start < 1 {
		return false
	}
	o.Created = time.Unix(secs, 0).UTC()
	return true
}

// parseDecimal parses a non-negative decimal number of digits only.
func parseDecimal(s string) (int64, bool) {
	if !digits(s) {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}

// digits reports whether s is one or more ASCII digits.
func digits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// LayoutDirs are the directories directly under an etcd-backup-restore store's base.
var LayoutDirs = []string{"v1/", "v2/"}
