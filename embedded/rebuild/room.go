package rebuild

import (
	"errors"
	"fmt"
	"path/filepath"

	"go.etcd.io/etcd/server/v3/storage/wal"

	"github.com/etcdbr/etcdbr/internal/diskspace"
)

// ErrNoRoom is wrapped by the errors of a restore that stopped because the file system of
// the data dir (or of the WAL dir) has no room for the restored data dir. Nothing was
// moved aside or deleted: the data dir is as it was, the staging dir is removed.
var ErrNoRoom = errors.New("no room for the restored data dir")

// roomNeeds is how much a restore writes into each staging dir, at least.
type roomNeeds struct {
	dir  string // where it is measured: the staging dir
	need int64
	what string // what the bytes are, for the message
}

// needs estimates from below what the staged data dir takes: a copy of the snapshot's db
// (etcdutl's restore copies it), what the deltas add to it (at least their stored size), and
// the first WAL file, which etcdutl's restore preallocates (wal.SegmentSizeBytes) in the WAL
// dir's staging dir when the WAL lives apart, else in the data dir's.
func (p restoreDirs) needs(dbSize, deltaBytes int64) []roomNeeds {
	data := roomNeeds{dir: p.stage, need: dbSize + deltaBytes,
		what: fmt.Sprintf("the db (%s) and what the deltas add to it (%s stored)", diskspace.Bytes(dbSize), diskspace.Bytes(deltaBytes))}
	walFile := fmt.Sprintf("a WAL file of %s that etcd preallocates", diskspace.Bytes(wal.SegmentSizeBytes))
	if p.walDir == "" {
		data.need += wal.SegmentSizeBytes
		data.what += " and " + walFile
		return []roomNeeds{data}
	}
	return []roomNeeds{data, {dir: p.walStage, need: wal.SegmentSizeBytes, what: walFile}}
}

// checkRoom checks that the file system of every staging dir (created, empty) has room for
// what the restore writes there (needs). A file system whose free space cannot be read is
// not checked: the restore tries, and a write that finds no room fails as noRoom says.
func (p restoreDirs) checkRoom(dbSize, deltaBytes int64) error {
	for _, n := range p.needs(dbSize, deltaBytes) {
		if err := CheckRoom(filepath.Dir(n.dir), n.need, n.what); err != nil {
			return fmt.Errorf("restore data dir %q: %w", p.dataDir, err)
		}
	}
	return nil
}

// CheckRoom returns, when the file system of dir has less than need bytes free, the error
// of a restore that does not fit there (wrapping ErrNoRoom; what says what the bytes are),
// and nil when it fits or its free space cannot be read.
func CheckRoom(dir string, need int64, what string) error {
	free, err := diskspace.Available(dir)
	if err != nil || free >= need {
		return nil
	}
	return fmt.Errorf("%w: the file system of %s has %s free, and the restore needs at least %s there (%s): make room "+
		"there (or give the data dir a larger file system) and restore again; the data dir is untouched and nothing was "+
		"moved aside", ErrNoRoom, dir, diskspace.Bytes(free), diskspace.Bytes(need), what)
}

// noRoom turns an error of a restore that ran out of room (ENOSPC while it built the staged
// data dir: the estimate of checkRoom was short) into one that says where and what to do,
// wrapping ErrNoRoom; other errors are returned as they are.
func (p restoreDirs) noRoom(err error) error {
	if !diskspace.Full(err) {
		return err
	}
	return fmt.Errorf("%w: %w: the file system of %s is full: make room there (or give the data dir a larger file system) "+
		"and restore again; the staging dir is removed, the data dir is untouched and nothing was moved aside",
		err, ErrNoRoom, filepath.Dir(p.stage))
}
