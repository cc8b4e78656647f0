package datadir

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"go.uber.org/zap"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/client/pkg/v3/fileutil"
	"go.etcd.io/etcd/server/v3/etcdserver/api/snap"
	"go.etcd.io/etcd/server/v3/storage/wal"
	"go.etcd.io/etcd/server/v3/storage/wal/walpb"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

// walState is what etcd would recover from the WAL at start.
type walState struct {
	snapshot  walpb.Snapshot // the raft snapshot etcd starts from ({0,0}: none)
	snapFile  string         // its .snap file, "" for none
	hardState raftpb.HardState
	lastIndex uint64 // index of the last entry; the snapshot's index when there is none
	tornFile  string // WAL file whose torn tail etcd would cut off, "" for none
	tornAt    int64  // offset of the cut
	// firstSnap is the index of the first raft snapshot record above index 0
	// in the WAL read (0: none), and requestsBefore whether an entry carrying a
	// request precedes it. A snapshot record with no request before it was not
	// made by this member from its own log (etcdutl snapshot restore, or a
	// snapshot from the leader): the data up to it is only in the db.
	firstSnap      uint64
	requestsBefore bool
	// raising counts the entries of the log read, after the index the db has
	// applied (readWALAsEtcd's applied), that can raise the mvcc revision when
	// etcd applies them at start (see entryCanRaiseRevision): an upper bound of
	// how far the replay moves the revision.
	raising int64
}

// walFile is one WAL segment selected for reading.
type walFile struct {
	path string
	f    *os.File
	size int64
}

// readWALAsEtcd reads the WAL the way etcd 3.6 does at start, without changing
// anything: it picks the newest raft snapshot that the WAL confirms and whose
// .snap file reads (as snap.Snapshotter.LoadNewestAvailable), opens the WAL
// files from that snapshot on, reads every record as wal.WAL.ReadAll does in
// write mode and, where etcd would repair a torn tail (io.ErrUnexpectedEOF in the
// last file), reads again as if the tail had been cut off. Any error is what
// would stop etcd. applied is the index up to which the db has applied the log
// (its consistent index; 0 for a db etcd rebuilds): the entries after it are
// the ones etcd applies at start, counted in walState.raising.
func readWALAsEtcd(walDir, snapDir string, applied uint64) (walState, error) {
	nop := zap.NewNop()
	walSnaps, err := wal.ValidSnapshotEntries(nop, walDir)
	if errors.Is(err, fs.ErrPermission) {
		return walState{}, fmt.Errorf("cannot read the WAL in %q: %w", walDir, err)
	}
	if err != nil {
		return walState{}, fmt.Errorf("WAL in %q is damaged: %w", walDir, err)
	}
	var ws walState
	ws.snapshot, ws.snapFile, err = newestSnapshot(nop, snapDir, walSnaps)
	if err != nil {
		return walState{}, err
	}

	files, err := selectWALFiles(walDir, ws.snapshot.Index)
	if err != nil {
		return walState{}, err
	}
	defer func() {
		for _, wf := range files {
			wf.f.Close()
		}
	}()

	res, err := decodeWAL(files, -1, ws.snapshot, applied)
	if errors.Is(err, io.ErrUnexpectedEOF) {
		// etcd repairs the last file by cutting it at its first torn record,
		// then reads again; it gives up when that read fails too.
		last := files[len(files)-1]
		cut, rerr := tornOffset(last)
		if rerr != nil {
			return walState{}, fmt.Errorf("WAL file %q is damaged and etcd cannot repair it: %v (first error: %v)", last.path, rerr, err)
		}
		ws.tornFile, ws.tornAt = last.path, cut
		res, err = decodeWAL(files, cut, ws.snapshot, applied)
		if err != nil {
			return walState{}, fmt.Errorf("WAL in %q is damaged: %v (even after cutting the torn tail of %q at offset %d, as etcd would)", walDir, err, last.path, cut)
		}
	}
	if err != nil {
		return walState{}, fmt.Errorf("WAL in %q is damaged: %v", walDir, err)
	}
	ws.hardState, ws.lastIndex = res.hardState, res.lastIndex
	ws.firstSnap, ws.requestsBefore = res.firstSnap, res.requestsBefore
	ws.raising = res.raising

	// raft refuses to start from a hard state whose commit lies outside the log.
	if !raft.IsEmptyHardState(ws.hardState) &&
		(ws.hardState.Commit < ws.snapshot.Index || ws.hardState.Commit > ws.lastIndex) {
		return walState{}, fmt.Errorf("WAL in %q is inconsistent: its hard state commits index %d, outside its log [%d, %d] (raft would panic)",
			walDir, ws.hardState.Commit, ws.snapshot.Index, ws.lastIndex)
	}
	return ws, nil
}

// newestSnapshot picks the snapshot etcd starts from: the newest .snap file that
// reads and that the WAL lists as committed. etcd renames the ones that fail to
// read to *.broken and moves on; so does this (without renaming). A snap dir
// that does not exist holds none (etcd creates it empty).
func newestSnapshot(lg *zap.Logger, snapDir string, walSnaps []walpb.Snapshot) (walpb.Snapshot, string, error) {
	entries, err := os.ReadDir(snapDir)
	if errors.Is(err, fs.ErrNotExist) {
		return walpb.Snapshot{}, "", nil
	}
	if err != nil {
		return walpb.Snapshot{}, "", fmt.Errorf("cannot read snap dir %q: %w", snapDir, err)
	}
	var names []string
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".snap") && !strings.HasPrefix(e.Name(), "db.tmp") {
			names = append(names, e.Name())
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(names)))
	for _, name := range names {
		path := filepath.Join(snapDir, name)
		s, err := snap.Read(lg, path)
		if err != nil {
			continue
		}
		for i := len(walSnaps) - 1; i >= 0; i-- {
			if s.Metadata.Term == walSnaps[i].Term && s.Metadata.Index == walSnaps[i].Index {
				return walpb.Snapshot{Index: s.Metadata.Index, Term: s.Metadata.Term}, path, nil
			}
		}
	}
	return walpb.Snapshot{}, "", nil
}

// selectWALFiles opens, read-only, the WAL files etcd reads from the snapshot
// at index on: the last file whose first index is at or below it and every file
// after it, whose sequence numbers must be continuous.
func selectWALFiles(walDir string, index uint64) ([]walFile, error) {
	entries, err := os.ReadDir(walDir)
	if err != nil {
		return nil, fmt.Errorf("cannot read WAL dir %q: %w", walDir, err)
	}
	type named struct {
		name       string
		seq, index uint64
	}
	var names []named
	for _, e := range entries {
		var seq, idx uint64
		if !strings.HasSuffix(e.Name(), ".wal") {
			continue
		}
		if _, err := fmt.Sscanf(e.Name(), "%016x-%016x.wal", &seq, &idx); err != nil {
			continue
		}
		names = append(names, named{e.Name(), seq, idx})
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("WAL dir %q holds no WAL files", walDir)
	}
	sort.Slice(names, func(i, j int) bool { return names[i].name < names[j].name })
	start := -1
	for i := len(names) - 1; i >= 0; i-- {
		if index >= names[i].index {
			start = i
			break
		}
	}
	if start < 0 {
		return nil, fmt.Errorf("WAL in %q has no file that covers the snapshot at index %d (first file starts at %d)", walDir, index, names[0].index)
	}
	for i := start + 1; i < len(names); i++ {
		if names[i].seq != names[i-1].seq+1 {
			return nil, fmt.Errorf("WAL in %q is missing a file: %q follows %q", walDir, names[i].name, names[i-1].name)
		}
	}
	var files []walFile
	for _, n := range names[start:] {
		path := filepath.Join(walDir, n.name)
		f, err := os.Open(path)
		if err == nil {
			var st fs.FileInfo
			if st, err = f.Stat(); err == nil {
				files = append(files, walFile{path: path, f: f, size: st.Size()})
				continue
			}
			f.Close()
		}
		for _, wf := range files {
			wf.f.Close()
		}
		return nil, fmt.Errorf("cannot read WAL file %q: %w", path, err)
	}
	return files, nil
}

// walRead is the result of decoding the WAL.
type walRead struct {
	hardState      raftpb.HardState
	lastIndex      uint64
	firstSnap      uint64 // see walState
	requestsBefore bool
	raising        int64 // see walState
}

// decodeWAL decodes the records of files from the start of the first one, as
// wal.WAL.ReadAll does for a WAL opened for writing (every record must decode
// up to the end). With lastLimit >= 0 the last file is read as if truncated to
// that many bytes. The entries after index applied that can raise the revision
// are counted in raising.
func decodeWAL(files []walFile, lastLimit int64, start walpb.Snapshot, applied uint64) (walRead, error) {
	readers := make([]fileutil.FileReader, len(files))
	for i, wf := range files {
		size := wf.size
		if i == len(files)-1 && lastLimit >= 0 {
			size = min(size, lastLimit)
		}
		readers[i] = newSectionFile(wf, size)
	}
	dec := wal.NewDecoder(readers...)

	var (
		res      walRead
		metadata []byte
		match    bool
		n        uint64 // entries after the snapshot, as ReadAll's slice length
		rec      walpb.Record
		err      error
		// raises[i]: whether entry from+1+i can raise the revision, for the
		// entries of the log after from (a later entry at a lower index drops
		// the flags of the entries it truncates).
		from   = max(applied, start.Index)
		raises []bool
	)
	for err = dec.Decode(&rec); err == nil; err = dec.Decode(&rec) {
		switch rec.Type {
		case wal.EntryType:
			var e raftpb.Entry
			if uerr := e.Unmarshal(rec.Data); uerr != nil {
				return walRead{}, fmt.Errorf("undecodable entry record: %v", uerr)
			}
			if res.firstSnap == 0 && e.Type == raftpb.EntryNormal && len(e.Data) > 0 {
				res.requestsBefore = true
			}
			if e.Index > start.Index {
				offset := e.Index - start.Index - 1
				if offset > n {
					return walRead{}, fmt.Errorf("entry %d follows entry %d: %d entries are missing", e.Index, start.Index+n, offset-n)
				}
				n = offset + 1
				if e.Index > from {
					// The check above keeps e.Index at most one past the log's
					// end, so the entries it truncates are the flags it cuts.
					raises = append(raises[:e.Index-from-1], entryCanRaiseRevision(e))
				} else {
					raises = raises[:0] // the log now ends at or before from
				}
			}
		case wal.StateType:
			var st raftpb.HardState
			if uerr := st.Unmarshal(rec.Data); uerr != nil {
				return walRead{}, fmt.Errorf("undecodable hard state record: %v", uerr)
			}
			res.hardState = st
		case wal.MetadataType:
			if metadata != nil && !bytes.Equal(metadata, rec.Data) {
				return walRead{}, wal.ErrMetadataConflict
			}
			metadata = rec.Data
		case wal.CrcType:
			crc := dec.LastCRC()
			if crc != 0 && rec.Validate(crc) != nil {
				return walRead{}, wal.ErrCRCMismatch
			}
			dec.UpdateCRC(rec.Crc)
		case wal.SnapshotType:
			var s walpb.Snapshot
			if uerr := s.Unmarshal(rec.Data); uerr != nil {
				return walRead{}, fmt.Errorf("undecodable snapshot record: %v", uerr)
			}
			if s.Index > 0 && res.firstSnap == 0 {
				res.firstSnap = s.Index
			}
			if s.Index == start.Index {
				if s.Term != start.Term {
					return walRead{}, wal.ErrSnapshotMismatch
				}
				match = true
			}
		default:
			return walRead{}, fmt.Errorf("unexpected record type %d", rec.Type)
		}
	}
	if !errors.Is(err, io.EOF) {
		return walRead{}, err
	}
	if !match {
		return walRead{}, fmt.Errorf("%v: no record of the snapshot at index %d, term %d", wal.ErrSnapshotNotFound, start.Index, start.Term)
	}
	// Entries are kept only up to the last one written; a later entry at a lower
	// index truncates the log (raft overwriting an uncommitted tail).
	res.lastIndex = start.Index + n
	for _, r := range raises {
		if r {
			res.raising++
		}
	}
	return res, nil
}

// tornOffset finds where etcd's wal.Repair would cut the last WAL file: the
// offset of its first torn record. It fails where Repair fails: when the file
// has no torn record or has other damage.
func tornOffset(wf walFile) (int64, error) {
	dec := wal.NewDecoder(newSectionFile(wf, wf.size))
	var rec walpb.Record
	for {
		off := dec.LastOffset()
		err := dec.Decode(&rec)
		switch {
		case err == nil:
			if rec.Type == wal.CrcType {
				crc := dec.LastCRC()
				if crc != 0 && rec.Validate(crc) != nil {
					return 0, wal.ErrCRCMismatch
				}
				dec.UpdateCRC(rec.Crc)
			}
		case errors.Is(err, io.EOF):
			return 0, errors.New("the last file reads to its end: the damage is in an earlier file")
		case errors.Is(err, io.ErrUnexpectedEOF):
			return off, nil
		default:
			return 0, err
		}
	}
}

// sectionFile reads a WAL file from its start, optionally only its first size
// bytes, and reports that size (the decoder bounds records by it).
type sectionFile struct {
	*io.SectionReader
	info fs.FileInfo
}

func newSectionFile(wf walFile, size int64) sectionFile {
	return sectionFile{
		SectionReader: io.NewSectionReader(wf.f, 0, size),
		info:          sizedFileInfo{name: filepath.Base(wf.path), size: size},
	}
}

func (s sectionFile) FileInfo() (fs.FileInfo, error) { return s.info, nil }

// sizedFileInfo is the fs.FileInfo of a WAL file as the decoder sees it.
type sizedFileInfo struct {
	name string
	size int64
}

func (i sizedFileInfo) Name() string       { return i.name }
func (i sizedFileInfo) Size() int64        { return i.size }
func (i sizedFileInfo) Mode() fs.FileMode  { return 0o600 }
func (i sizedFileInfo) ModTime() time.Time { return time.Time{} }
func (i sizedFileInfo) IsDir() bool        { return false }
func (i sizedFileInfo) Sys() any           { return nil }

// checkDBAgainstWAL checks that the db and the WAL fit together as etcd needs.
func checkDBAgainstWAL(l memberLayout, idx dbIndex, ws walState) error {
	if ws.snapFile != "" && idx.consistentIndex < ws.snapshot.Index {
		return fmt.Errorf("db file %q has applied up to index %d, behind the raft snapshot %q at index %d "+
			"(etcd would look for a %016x.snap.db from a leader and panic without one)",
			l.db, idx.consistentIndex, ws.snapFile, ws.snapshot.Index, ws.snapshot.Index)
	}
	if idx.consistentIndex > ws.lastIndex {
		where := fmt.Sprintf("WAL in %q", l.walDir)
		if ws.tornFile != "" {
			where += fmt.Sprintf(" (after cutting the torn tail of %q at offset %d, as etcd would)", ws.tornFile, ws.tornAt)
		}
		return fmt.Errorf("db file %q has applied up to index %d but the %s ends at index %d: "+
			"entries the db already holds are lost from the WAL, and etcd would reuse their indexes for new writes and skip applying them",
			l.db, idx.consistentIndex, where, ws.lastIndex)
	}
	return nil
}

// entryCanRaiseRevision reports whether etcd 3.6 applying the raft entry e can
// raise the mvcc revision. A request is at most one write transaction, so it
// raises the revision by one or not at all. Yes for Put, DeleteRange, a Txn
// with a write among its operations (either branch, nested txns included), and
// LeaseRevoke (it deletes the keys attached to the lease in one transaction).
// No for conf changes, the empty entries a new leader appends, lease grants and
// checkpoints, compactions, alarms, auth and membership requests, read-only
// txns, and v2 requests (etcd 3.6 turns them into member attribute or cluster
// version updates, or refuses them). An entry it cannot decode, or a request of
// a kind it does not know, counts as yes: the count is an upper bound and must
// never be short.
func entryCanRaiseRevision(e raftpb.Entry) bool {
	if e.Type != raftpb.EntryNormal || len(e.Data) == 0 {
		return false
	}
	var r pb.InternalRaftRequest
	if err := r.Unmarshal(e.Data); err != nil {
		// etcd reads such an entry as a v2 request (pb.Request).
		var v2 pb.Request
		return v2.Unmarshal(e.Data) != nil
	}
	switch {
	case r.Put != nil, r.DeleteRange != nil, r.LeaseRevoke != nil:
		return true
	case r.Txn != nil:
		return txnCanWrite(r.Txn)
	case r.V2 != nil, r.Range != nil, r.Compaction != nil, r.LeaseGrant != nil, r.LeaseCheckpoint != nil, r.Alarm != nil,
		r.AuthEnable != nil, r.AuthDisable != nil, r.AuthStatus != nil, r.Authenticate != nil,
		r.AuthUserAdd != nil, r.AuthUserDelete != nil, r.AuthUserGet != nil, r.AuthUserChangePassword != nil,
		r.AuthUserGrantRole != nil, r.AuthUserRevokeRole != nil, r.AuthUserList != nil, r.AuthRoleList != nil,
		r.AuthRoleAdd != nil, r.AuthRoleDelete != nil, r.AuthRoleGet != nil, r.AuthRoleGrantPermission != nil,
		r.AuthRoleRevokePermission != nil,
		r.ClusterVersionSet != nil, r.ClusterMemberAttrSet != nil, r.DowngradeInfoSet != nil, r.DowngradeVersionTest != nil:
		return false
	}
	return true
}

// txnCanWrite reports whether a txn holds an operation that writes, in either
// branch (which one runs depends on the compares, unknown here).
func txnCanWrite(t *pb.TxnRequest) bool {
	for _, ops := range [][]*pb.RequestOp{t.Success, t.Failure} {
		for _, op := range ops {
			switch r := op.GetRequest().(type) {
			case *pb.RequestOp_RequestRange:
			case *pb.RequestOp_RequestTxn:
				if r.RequestTxn != nil && txnCanWrite(r.RequestTxn) {
					return true
				}
			default:
				// Put, DeleteRange, or an operation of a kind not known here.
				return true
			}
		}
	}
	return false
}
