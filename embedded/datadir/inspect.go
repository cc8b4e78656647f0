package datadir

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
)

// State is the condition of an etcd data dir.
type State int

const (
	// StateMissing means there is no member data: no data dir, an empty one, or
	// one without a member directory (etcd would initialize a new member there).
	StateMissing State = iota
	// StateValid means etcd 3.6 would start from the data dir and serve the data
	// in it.
	StateValid
	// StateCorrupt means the data dir holds member data etcd would refuse, crash
	// on, or serve wrongly.
	StateCorrupt
	// StateUnknown means the inspection could not tell: a file could not be
	// read (permission denied), the db is locked by a running etcd, the
	// inspection was cut short, or a quick check was asked for without a
	// clean-stop marker that matches. Such a data dir must not be treated as
	// corrupt: it may hold good data.
	StateUnknown
)

// String returns "missing", "valid", "corrupt" or "unknown".
func (s State) String() string {
	switch s {
	case StateMissing:
		return "missing"
	case StateValid:
		return "valid"
	case StateCorrupt:
		return "corrupt"
	case StateUnknown:
		return "unknown"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Verdict is the result of Inspect.
type Verdict struct {
	State State
	// Reason says, for StateCorrupt, what is wrong and where (file and detail),
	// for StateUnknown what could not be read, and for StateMissing why the dir
	// counts as missing. For StateValid it is empty, except when the db is
	// missing and etcd would rebuild it at start by replaying a WAL that holds
	// the member's whole history: then it says so.
	Reason string
	// Revision is the etcd revision in the db when it could be read: the larger
	// of the newest revision in the key bucket and the finished and scheduled
	// compaction revisions. 0 otherwise, also for a valid dir whose db etcd
	// rebuilds from the WAL (the revision is known only after that replay).
	Revision int64
	// MaxRevision is an upper bound of the revision etcd serves once it has
	// started on the data dir: after a crash (SIGKILL, power loss) the db lags
	// the WAL, and etcd applies at start the entries after the db's consistent
	// index. It is Revision plus the number of those entries that can raise the
	// revision (each raises it by one at most: Put, DeleteRange, a Txn that
	// writes, LeaseRevoke; an entry that cannot be decoded counts too), read by
	// the full check's walk of the WAL. For a valid dir whose db etcd rebuilds
	// from the WAL it is 1 (the revision of an empty store) plus those entries
	// of the whole WAL. The quick check trusts the clean stop to have applied
	// the WAL: there it is Revision (a write that was in flight at the stop,
	// never acknowledged, may still be in the WAL and be applied at start). It
	// is never below Revision; compare a store's revision against it, not
	// Revision, to tell whether the store holds writes the data dir lacks.
	MaxRevision int64
	// Depth is how deeply the data dir was checked: DepthQuick when a matching
	// clean-stop marker let the quick check decide, DepthFull otherwise.
	Depth Depth
}

// memberLayout names the parts of a member data dir.
type memberLayout struct {
	dataDir, memberDir, snapDir, walDir, db string
	separateWAL                             bool
}

func newMemberLayout(dataDir, walDir string) memberLayout {
	member := filepath.Join(dataDir, "member")
	l := memberLayout{
		dataDir:   dataDir,
		memberDir: member,
		snapDir:   filepath.Join(member, "snap"),
		walDir:    walDir,
		db:        filepath.Join(member, "snap", "db"),
	}
	if walDir == "" {
		l.walDir = filepath.Join(member, "wal")
	} else {
		l.separateWAL = filepath.Clean(walDir) != filepath.Join(member, "wal")
	}
	return l
}

// Inspect is InspectWith at DepthFull, for callers that know only three
// states: a verdict of StateUnknown is reported as StateCorrupt (with the same
// reason). New callers should use InspectWith and treat StateUnknown as "stop
// and ask", never as corrupt.
func Inspect(ctx context.Context, dataDir, walDir string) Verdict {
	v := InspectWith(ctx, dataDir, walDir, InspectOptions{Depth: DepthFull})
	if v.State == StateUnknown {
		v.State = StateCorrupt
	}
	return v
}

// InspectWith reports whether etcd 3.6 would start correctly from the data dir
// dataDir (WAL in walDir; "" means <dataDir>/member/wal). It never modifies
// anything: the db is opened read-only by bbolt with a short lock timeout (a db
// locked by a running etcd is reported, not waited on), and the WAL is read, not
// repaired.
//
// The full check (DepthFull) checks the member layout; the db's page structure
// and bbolt's tx.Check; the buckets etcd needs and its storage version; every
// value in the key and lease buckets; the WAL as etcd reads it at start from the
// newest snapshot (a torn last record, which etcd cuts off itself, is fine; a
// CRC mismatch or any other damage is not); and that the WAL holds every entry
// the db has applied: etcd starts when the db's consistent index is beyond the
// WAL's last entry, but then reuses those indexes for new entries and skips
// applying them, so writes are lost. Damage that makes the readers panic or
// fault is caught and reported as StateCorrupt. Its walk of the WAL also
// bounds the revision etcd reaches by applying, at start, the entries the db
// lacks (Verdict.MaxRevision).
//
// The quick check (DepthQuick) trusts a clean-stop marker (WriteCleanStopMarker)
// whose record of the member's files still matches them: it checks the layout,
// the marker, that bbolt opens the db read-only (its meta pages) and that the
// db's revision is the marker's. DepthAuto (the zero value) runs the quick
// check when a matching marker is there and the full check otherwise, or when
// the quick check fails.
//
// A file that cannot be read (permissions), a db locked by another process,
// ctx ending, or DepthQuick without a matching marker give StateUnknown with
// the reason.
func InspectWith(ctx context.Context, dataDir, walDir string, opts InspectOptions) Verdict {
	l := newMemberLayout(dataDir, walDir)
	in := &inspection{layout: l, depth: opts.Depth}
	done := make(chan Verdict, 1)
	go func() {
		// Damaged bbolt and WAL files make their readers panic, and a db file
		// shorter than its mmap faults: turn both into a verdict.
		debug.SetPanicOnFault(true)
		defer func() {
			if r := recover(); r != nil {
				done <- Verdict{
					State:    StateCorrupt,
					Reason:   fmt.Sprintf("%s is damaged: reading it failed with: %v", in.current, r),
					Revision: in.revision,
					Depth:    in.checked,
				}
			}
		}()
		done <- in.run(ctx)
	}()
	select {
	case v := <-done:
		v.MaxRevision = max(v.MaxRevision, v.Revision)
		return v
	case <-ctx.Done():
		return Verdict{State: StateUnknown, Reason: fmt.Sprintf("inspection of data dir %q was cut short: %v", dataDir, ctx.Err())}
	}
}

// inspection is the state of one Inspect call, owned by its goroutine.
type inspection struct {
	layout   memberLayout
	depth    Depth  // what was asked for
	checked  Depth  // the check running now
	current  string // what is being read, for the reason of a panic
	revision int64
	// dbMissing: there is a WAL but no db (the snap dir, member dir or data
	// dir may be gone too). etcd 3.6 creates what is missing and, when no raft
	// snapshot is on disk, replays the whole WAL into a new db.
	dbMissing bool
}

func (in *inspection) run(ctx context.Context) Verdict {
	l := in.layout
	in.checked = DepthQuick
	if in.depth == DepthFull {
		in.checked = DepthFull
	}
	in.current = fmt.Sprintf("data dir %q", l.dataDir)
	if v, done := in.checkLayout(); done {
		return v
	}
	if err := ctx.Err(); err != nil {
		return in.unknown("inspection of data dir %q was cut short: %v", l.dataDir, err)
	}
	if in.dbMissing && in.depth == DepthQuick {
		// A clean-stop marker records the db: none can match.
		return in.unknown("db file %q is missing: quick validation cannot vouch for a data dir whose db etcd would have to rebuild; validate fully", l.db)
	}
	if in.depth != DepthFull && !in.dbMissing {
		v, ok := in.quick()
		if ok || in.depth == DepthQuick {
			return v
		}
		in.revision = 0
	}
	return in.full(ctx)
}

// full is the full check of a data dir whose layout is complete.
func (in *inspection) full(ctx context.Context) Verdict {
	l := in.layout
	in.checked = DepthFull
	if in.dbMissing {
		return in.rebuild()
	}
	in.current = fmt.Sprintf("db file %q", l.db)
	ci, err := in.checkDB()
	if err != nil {
		return in.fail(err)
	}
	if err := ctx.Err(); err != nil {
		return in.unknown("inspection of data dir %q was cut short: %v", l.dataDir, err)
	}

	in.current = fmt.Sprintf("WAL in %q", l.walDir)
	ws, err := readWALAsEtcd(l.walDir, l.snapDir, ci.consistentIndex)
	if err != nil {
		return in.fail(err)
	}
	if err := checkDBAgainstWAL(l, ci, ws); err != nil {
		return in.fail(err)
	}
	return Verdict{State: StateValid, Revision: in.revision, MaxRevision: in.revision + ws.raising, Depth: DepthFull}
}

// emptyStoreRevision is the revision of an mvcc store without a write.
const emptyStoreRevision = 1

// rebuild is the full check of a data dir with a WAL but no db. etcd 3.6
// starts on it: it creates the snap dir and an empty db, and with no raft
// snapshot to start from it replays the WAL from index 1 into that db. That
// serves the member's data only when the WAL holds its whole history: it must
// read from its first entry (no WAL file purged, no gap) and must not start
// from a raft snapshot whose data came from outside its log (etcdutl snapshot
// restore, which etcdbr's restores use, or a snapshot sent by the leader); that
// data was in the db alone. With a raft snapshot on disk etcd looks for its db
// and panics.
func (in *inspection) rebuild() Verdict {
	l := in.layout
	in.current = fmt.Sprintf("WAL in %q", l.walDir)
	ws, err := readWALAsEtcd(l.walDir, l.snapDir, 0)
	if err != nil {
		return in.fail(fmt.Errorf("db file %q is missing and etcd cannot rebuild it from the WAL: %w", l.db, err))
	}
	switch {
	case ws.snapFile != "":
		return in.corrupt("db file %q is missing and etcd would start from the raft snapshot %q at index %d, whose data only the db holds "+
			"(etcd panics: failed to recover v3 backend from snapshot)", l.db, ws.snapFile, ws.snapshot.Index)
	case ws.firstSnap > 0 && !ws.requestsBefore:
		return in.corrupt("db file %q is missing and the WAL in %q starts from a raft snapshot at index %d that it holds no history of "+
			"(a data dir made by a snapshot restore, or a member that got a snapshot from its leader): the data up to it was only in the db, "+
			"and etcd would replay the WAL without it and serve a keyspace that lacks it", l.db, l.walDir, ws.firstSnap)
	}
	return Verdict{
		State: StateValid,
		Reason: fmt.Sprintf("db file %q is missing: etcd 3.6 rebuilds it at start by replaying the WAL in %q, which holds the member's whole history "+
			"(entries 1 to %d); the revision is known only after that replay (at most %d)", l.db, l.walDir, ws.lastIndex, emptyStoreRevision+ws.raising),
		MaxRevision: emptyStoreRevision + ws.raising,
		Depth:       DepthFull,
	}
}

func (in *inspection) corrupt(format string, args ...any) Verdict {
	return Verdict{State: StateCorrupt, Reason: fmt.Sprintf(format, args...), Revision: in.revision, Depth: in.checked}
}

func (in *inspection) unknown(format string, args ...any) Verdict {
	return Verdict{State: StateUnknown, Reason: fmt.Sprintf(format, args...), Revision: in.revision, Depth: in.checked}
}

// fail turns the error of a check into a verdict: StateUnknown when it says
// that something could not be read (see cannotTell), StateCorrupt otherwise.
func (in *inspection) fail(err error) Verdict {
	if cannotTell(err) {
		return in.unknown("%v", err)
	}
	return in.corrupt("%v", err)
}

// errLocked is wrapped by the error of a db locked by another process.
var errLocked = errors.New("locked by another process")

// cannotTell reports whether err means that the data could not be read, as
// opposed to read and found wrong: permission denied, a lock held by another
// process, a context that ended.
func cannotTell(err error) bool {
	return errors.Is(err, fs.ErrPermission) || errors.Is(err, errLocked) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

func missing(format string, args ...any) Verdict {
	return Verdict{State: StateMissing, Reason: fmt.Sprintf(format, args...)}
}

// checkLayout decides Missing and the layout problems; done is false when the
// member files are there to be checked (a WAL without its db included: see
// rebuild).
func (in *inspection) checkLayout() (v Verdict, done bool) {
	l := in.layout
	entries, err := os.ReadDir(l.dataDir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if l.separateWAL && hasWALFiles(l.walDir) {
			// etcd creates the data dir and replays the WAL into a new db.
			return in.walWithoutDB()
		}
		return missing("data dir %q does not exist", l.dataDir), true
	case err != nil:
		return in.fail(fmt.Errorf("cannot read data dir %q: %w", l.dataDir, err)), true
	}

	var hasMember, hasProxy bool
	for _, e := range entries {
		switch e.Name() {
		case "member":
			hasMember = true
		case "proxy":
			hasProxy = true
		}
	}
	if !hasMember {
		switch {
		case hasProxy:
			return in.corrupt("data dir %q holds a v2 proxy directory, which etcd 3.6 refuses", l.dataDir), true
		case l.separateWAL && hasWALFiles(l.walDir):
			return in.walWithoutDB()
		case len(entries) == 0:
			return missing("data dir %q is empty", l.dataDir), true
		default:
			return missing("data dir %q has no member directory (etcd would initialize a new member there)", l.dataDir), true
		}
	}

	st, err := os.Stat(l.memberDir)
	if err != nil {
		return in.fail(fmt.Errorf("cannot read member dir %q: %w", l.memberDir, err)), true
	}
	if !st.IsDir() {
		return in.corrupt("member dir %q is not a directory", l.memberDir), true
	}
	memberEntries, err := os.ReadDir(l.memberDir)
	if err != nil {
		return in.fail(fmt.Errorf("cannot read member dir %q: %w", l.memberDir, err)), true
	}
	if len(memberEntries) == 0 && !(l.separateWAL && hasWALFiles(l.walDir)) {
		// etcd finds no WAL and starts a new member, as on an empty data dir.
		return missing("member dir %q is empty (etcd would initialize a new member there)", l.memberDir), true
	}

	if err := checkDir(l.walDir, "WAL dir"); err != nil {
		return in.fail(err), true
	}
	if !hasWALFiles(l.walDir) {
		return in.corrupt("WAL dir %q holds no WAL files (*.wal)", l.walDir), true
	}
	if _, err := os.Lstat(l.snapDir); errors.Is(err, fs.ErrNotExist) {
		// etcd creates the snap dir and replays the WAL into a new db.
		return in.walWithoutDB()
	}
	if err := checkDir(l.snapDir, "snap dir"); err != nil {
		return in.fail(err), true
	}
	st, err = os.Stat(l.db)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return in.walWithoutDB()
	case err != nil:
		return in.fail(fmt.Errorf("cannot read db file %q: %w", l.db, err)), true
	case !st.Mode().IsRegular():
		return in.corrupt("db file %q is not a regular file (%s)", l.db, st.Mode().Type()), true
	}
	return Verdict{}, false
}

// walWithoutDB marks the inspection as one of a WAL without its db, which the
// full check decides (rebuild).
func (in *inspection) walWithoutDB() (Verdict, bool) {
	in.dbMissing = true
	return Verdict{}, false
}

func checkDir(path, what string) error {
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s %q is missing", what, path)
	case err != nil:
		return fmt.Errorf("cannot read %s %q: %w", what, path, err)
	case !st.IsDir():
		return fmt.Errorf("%s %q is not a directory", what, path)
	}
	if _, err := os.ReadDir(path); err != nil {
		return fmt.Errorf("cannot read %s %q: %w", what, path, err)
	}
	return nil
}

// hasWALFiles reports whether dir holds at least one *.wal file.
func hasWALFiles(dir string) bool {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".wal") {
			return true
		}
	}
	return false
}
