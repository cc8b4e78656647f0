package rebuild

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"go.uber.org/zap"

	"go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/etcdbr/etcdbr/embedded/datadir"
	"github.com/etcdbr/etcdbr/internal/boltfmt"
	"github.com/etcdbr/etcdbr/internal/dbrev"
	"github.com/etcdbr/etcdbr/internal/fsync"
	"github.com/etcdbr/etcdbr/internal/progress"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// RestoreOptions mirror the knobs of etcdutl's snapshot.RestoreConfig.
type RestoreOptions struct {
	// SkipHashCheck restores a db without the 32-byte sha256 the Maintenance
	// API appends (for example a db file copied from a data dir). Without it
	// the hash must be present and match.
	SkipHashCheck bool
	// MoveSnapshot says that the snapshot db at dbPath is a file of the restore's own (a
	// fetched full snapshot, its sha256 checked and cut off), beside the data dir: it is
	// moved into the new member instead of copied (adoptSnapshot), and is gone afterwards,
	// whether the restore succeeds or not. A db that still ends with a sha256 is copied.
	MoveSnapshot bool
	// RevisionBump raises the latest revision by this much after the restore, so
	// that clients (Kubernetes' informers) never see the revision go back.
	// Requires MarkCompacted.
	RevisionBump uint64
	// MarkCompacted marks the bumped revision as compacted, so that watchers
	// from older revisions are told to relist. Requires RevisionBump > 0.
	MarkCompacted bool
	// WantRevision, when set, is the revision the snapshot db must hold (the
	// revision in the full snapshot's name); another one fails the restore with
	// ErrWrongRevision before anything is written. With WantAtLeast it is only a lower
	// bound (a full snapshot of another tool, catalog.Snapshot.RevisionAtLeast): a db below
	// it fails so, and a db above MaxRevision, when that is set, fails with ErrPastTarget.
	WantRevision int64
	WantAtLeast  bool
	MaxRevision  int64
	// UnrecordedLeaseTTL is Replay.UnrecordedLeaseTTL when that is 0.
	UnrecordedLeaseTTL int64
	// Replay, when it lists deltas, has them replayed (ReplayDeltas) into the db of
	// the member that etcdutl's restore built from the snapshot, before the revision
	// bump. The snapshot db at dbPath is never changed (unless MoveSnapshot).
	Replay ReplayOptions
	// Served, when not 0, is the newest revision clients may have been served by the
	// history the restore replaces: a restore that ends before it raises the revision
	// past it (catalog.RevisionBump, at least RevisionBump) and marks it compacted, so
	// that every watcher of the old history is told to relist. MarkCompacted is then
	// implied.
	Served int64
	// Marker, when set, is completed with what the restore did and written into the new
	// data dir as datadir.RestoredMarkerName, swapped in with it.
	Marker *datadir.RestoredMarker
	// Progress, when set, follows the restore: the fetch of the full snapshot (the
	// supervisor's), the replay (Replay.Progress, unless set) and the final sync.
	Progress *progress.Progress
	// CompactReplay says whether a replay that ends in a bump writes the db compacted
	// (replayCompacted); the zero value decides by the sizes.
	CompactReplay CompactReplay
}

// CompactReplay says whether a replay that ends in a revision bump writes the member's db
// compacted at the bumped revision.
type CompactReplay int

const (
	// CompactWhenLarge, the default, compacts when the deltas are large beside the full
	// snapshot's db: their stored size at least a quarter of the db's (the deltas' content
	// about half of it). Writing the compacted db rewrites the whole db, which pays back in
	// etcd's start (its key index rebuilt from fewer revisions) and in the compaction etcd no
	// longer runs after it only when the deltas rewrote much of it: 1M events beside a 1.3 GB
	// db (stored 590 MB): etcd ready 3.2-3.5 s instead of 6-9 s, no 33-s compaction after it;
	// 10k events (stored 6 MB): the compacted replay took 4.2 s, the plain one a fraction of it.
	CompactWhenLarge CompactReplay = iota
	// CompactAlways compacts whatever the sizes.
	CompactAlways
	// CompactNever replays into the full snapshot's db: etcd compacts it when it starts.
	CompactNever
)

// compacts reports whether a replay of deltas stored in deltaBytes into a db of dbSize bytes
// is written compacted (when it ends in a bump).
func (c CompactReplay) compacts(dbSize, deltaBytes int64) bool {
	switch c {
	case CompactAlways:
		return true
	case CompactNever:
		return false
	}
	return deltaBytes*4 >= dbSize
}

// bumpFor returns the revision bump for a restore that ends at revision rev: the larger of
// RevisionBump and what Served requires.
func (o RestoreOptions) bumpFor(rev int64) uint64 {
	b := o.RevisionBump
	if o.Served > 0 {
		b = max(b, catalog.RevisionBump(rev, o.Served))
	}
	return b
}

// mayBump reports whether a restore with deltas to replay may end in a bump: bumpFor the
// lowest revision the replay can end at (the target revision, or the store's newest, below
// which it fails). A live restore of the newest point after the freeze does not.
func (o RestoreOptions) mayBump() bool {
	return o.bumpFor(max(o.Replay.Stop.Revision, o.Replay.Reach)) > 0
}

// ErrWrongRevision is wrapped by the error BuildDataDir returns when the snapshot
// db does not hold RestoreOptions.WantRevision.
var ErrWrongRevision = errors.New("the snapshot db holds another revision than its name says")

// ErrPastTarget is wrapped by the error BuildDataDir returns when the snapshot db holds
// revisions after RestoreOptions.MaxRevision: a full snapshot whose name gives only a lower
// bound of its revision cannot restore that target (an older one may).
var ErrPastTarget = errors.New("the snapshot db holds revisions after the target")

// BuildResult says what BuildDataDir built.
type BuildResult struct {
	// MovedAside is where the previous data dir went ("" when there was none).
	MovedAside string
	// Replay is what the replay of the deltas did (zero without deltas).
	Replay ReplayResult
	// Revision is the revision of the new data dir, after any bump; Bump is the bump
	// (the data dir is marked compacted at Revision when it is not 0).
	Revision int64
	Bump     uint64
	// SnapshotRevision is the revision the snapshot db held.
	SnapshotRevision int64
}

// restoreDBProblemsMax is how many problems of a damaged snapshot db an error names.
const restoreDBProblemsMax = 5

// StagingDir is where a restore for dataDir builds the new data dir: a sibling
// of dataDir (the same filesystem, so the final rename is atomic),
// <dataDir>.etcdbr-restore.
func StagingDir(dataDir string) string {
	return filepath.Clean(dataDir) + ".etcdbr-restore"
}

// BuildDataDir turns the snapshot db file at dbPath, with the deltas of
// opts.Replay replayed into it, into the data dir of cfg's member and swaps it in
// for cfg.Dir.
//
// dbPath is a db as etcd's Maintenance API streams it: the bbolt file followed by
// its 32-byte sha256, which is checked unless opts.SkipHashCheck (then the hash
// may be missing); BuildDataDir only reads it, unless opts.MoveSnapshot (then it is moved
// into the new member instead of copied: adoptSnapshot). With deltas, they are replayed (see
// ReplayDeltas; leases without a known TTL get MinLeaseTTL(cfg) unless opts.Replay
// says otherwise) into the staged member's db once etcdutl's restore built it from
// the snapshot, so that the snapshot's db is copied once and the replayed one
// never; the revision bump then applies to the replayed db, exactly as etcdutl
// applies it (see RestoreOptions.RevisionBump). The membership
// comes from cfg as etcd would use it, defaults included: cfg.Name,
// cfg.AdvertisePeerUrls, the initial cluster (--initial-cluster or DNS
// discovery) and cfg.InitialClusterToken; discovery by URL or by v3 discovery
// endpoints is refused (give --initial-cluster).
//
// The new data dir is built with etcdutl's snapshot.Restore in
// StagingDir(cfg.Dir)/data; a WAL dir outside the data dir (cfg.WalDir) is built
// in StagingDir(cfg.WalDir)/wal, beside the WAL dir. Every file and directory
// is fsynced, then the swap: an existing data dir is renamed to
// <dataDir>.etcdbr-old-<UTC timestamp> (never deleted; the path is returned,
// "" when there was none), the same for an existing separate WAL dir, the staged
// dirs are renamed into place and their parent dirs fsynced. A crash during the
// swap leaves no data dir (datadir.Inspect says missing) or the new one; the old one is
// always kept aside.
//
// BuildDataDir refuses when the data dir's db is locked by a running etcd or the
// staging dir cannot be created. On failure it removes its staging dirs and
// leaves the existing data dir untouched (a failure during the swap puts it
// back). It removes a staging dir left over by an earlier, interrupted call.
func BuildDataDir(ctx context.Context, dbPath string, cfg *embed.Config, opts RestoreOptions, lg *slog.Logger) (res BuildResult, err error) {
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	rc, dirs, err := prepareRestore(dbPath, cfg, opts)
	if err != nil {
		return res, err
	}
	failpoint(FailpointAfterFetch)
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("restore data dir %q: %w", dirs.dataDir, err)
	}
	if inUse, err := datadir.InUse(dirs.dataDir); err != nil {
		return res, fmt.Errorf("restore data dir %q: %w", dirs.dataDir, err)
	} else if inUse {
		return res, fmt.Errorf("restore data dir %q: it is in use by a running etcd (its db is locked); stop it first", dirs.dataDir)
	}
	replaying := len(opts.Replay.Deltas) > 0
	if err := checkSnapshotDB(dbPath); err != nil {
		return res, fmt.Errorf("restore data dir %q: %w", dirs.dataDir, err)
	}
	snapRev, err := fileRevision(dbPath)
	if err != nil {
		return res, fmt.Errorf("restore data dir %q: %w", dirs.dataDir, err)
	}
	res.SnapshotRevision = snapRev
	switch {
	case opts.WantRevision > 0 && opts.WantAtLeast && snapRev < opts.WantRevision:
		return res, fmt.Errorf("restore data dir %q: %w: it holds revision %d, below %d", dirs.dataDir, ErrWrongRevision, snapRev, opts.WantRevision)
	case opts.WantRevision > 0 && !opts.WantAtLeast && snapRev != opts.WantRevision:
		return res, fmt.Errorf("restore data dir %q: %w: it holds revision %d, not %d", dirs.dataDir, ErrWrongRevision, snapRev, opts.WantRevision)
	case opts.MaxRevision > 0 && snapRev > opts.MaxRevision:
		return res, fmt.Errorf("restore data dir %q: %w: it holds revision %d, after the target revision %d", dirs.dataDir, ErrPastTarget, snapRev, opts.MaxRevision)
	}
	if replaying {
		// The deltas are replayed into the staged member's db after etcdutl's restore, and
		// the revision bump must come after them: the replay applies it.
		rc.RevisionBump, rc.MarkCompacted = 0, false
	} else {
		res.Bump = opts.bumpFor(snapRev)
		rc.RevisionBump, rc.MarkCompacted = res.Bump, res.Bump > 0
	}

	if err := dirs.createStaging(lg); err != nil {
		return res, err
	}
	swapping := false
	defer func() {
		if err != nil {
			if !swapping {
				err = dirs.noRoom(err)
			}
			dirs.removeStaging(lg)
		}
	}()
	// A db of the restore's own moves into the new member; another is copied.
	move := opts.MoveSnapshot && fileSize(dbPath)%512 != sha256.Size
	copied := fileSize(dbPath)
	if move {
		copied = 0
	}
	if err := dirs.checkRoom(copied, deltaBytes(opts.Replay.Deltas)); err != nil {
		return res, err
	}
	seed := filepath.Join(dirs.stage, "seed.db")
	if move {
		// etcdutl writes the WAL, the raft snapshot and the records of the new membership
		// from a seed db; the fetched db takes those records and the seed's place below.
		if err := writeSeedDB(seed); err != nil {
			return res, fmt.Errorf("restore data dir %q: %w", dirs.dataDir, err)
		}
		rc.SnapshotPath, rc.SkipHashCheck, rc.RevisionBump, rc.MarkCompacted = seed, true, 0, false
	}

	lg.Info("restoring etcd data dir from snapshot", "snapshot", dbPath, "staging_dir", dirs.stage,
		"name", rc.Name, "initial_cluster", rc.InitialCluster,
		"revision_bump", rc.RevisionBump, "mark_compacted", rc.MarkCompacted, "served", opts.Served)
	if err := runRestore(zapLogger(cfg), rc); err != nil {
		return res, fmt.Errorf("restore snapshot %q into %q: %w", dbPath, dirs.stagedData(), err)
	}
	stagedDB := filepath.Join(dirs.stagedData(), "member", "snap", "db")
	// A replay that may end in a bump writes the member's db compacted, reading the full
	// snapshot's db: a fetched one it reads where it is, taking etcdutl's records from the
	// seed itself (replayExtras.from), so it is not adopted first.
	compact := replaying && opts.mayBump() && opts.CompactReplay.compacts(fileSize(dbPath), deltaBytes(opts.Replay.Deltas))
	if move {
		if !compact {
			var bump int64
			if !replaying {
				bump = int64(res.Bump)
			}
			if err := adoptSnapshot(dbPath, stagedDB, bump, lg); err != nil {
				return res, fmt.Errorf("restore data dir %q: %w", dirs.dataDir, err)
			}
		}
		if err := os.Remove(seed); err != nil {
			return res, fmt.Errorf("restore data dir %q: remove the seed db: %w", dirs.dataDir, err)
		}
	}
	if replaying {
		// Replayed into the staged member's db: etcdutl copies only the full snapshot's db,
		// and the one fsync of the staged tree below makes the replayed db durable.
		replay := opts.Replay
		if replay.MinLeaseTTL == 0 {
			replay.MinLeaseTTL = MinLeaseTTL(cfg)
		}
		if replay.UnrecordedLeaseTTL == 0 {
			replay.UnrecordedLeaseTTL = opts.UnrecordedLeaseTTL
		}
		if replay.Log == nil {
			replay.Log = lg
		}
		if replay.Progress == nil {
			replay.Progress = opts.Progress
		}
		extras := replayExtras{
			compact: compact,
			bump: func(rev int64) int64 {
				res.Bump = opts.bumpFor(rev)
				return int64(res.Bump)
			},
			onDelta: failpointOnDelta(len(replay.Deltas)),
		}
		if move && compact {
			extras.from = dbPath
		}
		if res.Replay, err = replayDeltas(ctx, stagedDB, replay, extras); err != nil {
			return res, fmt.Errorf("restore data dir %q: %w", dirs.dataDir, err)
		}
		lg.Info("deltas replayed", "from_revision", res.Replay.FromRevision, "revision", res.Replay.Revision,
			"revisions", res.Replay.Revisions, "events", res.Replay.Events, "skipped", res.Replay.Skipped,
			"leases_granted", res.Replay.Leases, "duration", res.Replay.Duration.Round(time.Millisecond),
			"revisions_per_second", perSecond(res.Replay.Revisions, res.Replay.Duration))
	}
	if res.Revision, err = fileRevision(stagedDB); err != nil {
		return res, fmt.Errorf("restore data dir %q: %w", dirs.dataDir, err)
	}
	if m := opts.Marker; m != nil {
		m.Revision, m.DataRevision, m.Bump, m.Served = res.Revision-int64(res.Bump), res.Revision, res.Bump, opts.Served
		if res.Replay.Revisions > 0 {
			m.RevisionTime = res.Replay.Time
		}
		if err := datadir.WriteRestoredMarker(dirs.stagedData(), m); err != nil {
			return res, fmt.Errorf("restore data dir %q: %w", dirs.dataDir, err)
		}
	}
	opts.Progress.SetPhase("sync")
	for _, d := range dirs.stagingDirs() {
		if err := fsync.Tree(d); err != nil {
			return res, fmt.Errorf("restore data dir %q: %w", dirs.dataDir, err)
		}
	}
	if err := dirs.markComplete(); err != nil {
		return res, fmt.Errorf("restore data dir %q: %w", dirs.dataDir, err)
	}
	failpoint(FailpointAfterStaging)
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("restore data dir %q: %w", dirs.dataDir, err)
	}

	swapping = true
	res.MovedAside, err = dirs.swap(lg, time.Now())
	if err != nil {
		return res, err
	}
	failpoint(FailpointAfterSwap)
	dirs.removeStaging(lg)
	lg.Info("restored etcd data dir", "data_dir", dirs.dataDir, "revision", res.Revision, "moved_aside", res.MovedAside)
	return res, nil
}

// fileSize is the size of the file at path, 0 when it cannot be read (prepareRestore checked
// that it is a regular file).
func fileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

// deltaBytes is the stored size of deltas.
func deltaBytes(deltas []catalog.Snapshot) int64 {
	var n int64
	for _, d := range deltas {
		n += d.Size
	}
	return n
}

// fileRevision reads the revision of the db file at path (a snapshot db may still end with
// its sha256: bbolt reads only whole pages).
func fileRevision(path string) (int64, error) {
	return dbrev.FileRevision(path, time.Second)
}

func perSecond(n int64, d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64(float64(n) / d.Seconds())
}

// restoreDirs is where a restore builds and where it swaps.
type restoreDirs struct {
	dataDir string
	stage   string // StagingDir(dataDir)
	// walDir is set when the WAL lives outside the data dir; walStage is then
	// StagingDir(walDir).
	walDir, walStage string
}

func (p restoreDirs) stagedData() string { return filepath.Join(p.stage, "data") }
func (p restoreDirs) stagedWAL() string  { return filepath.Join(p.walStage, "wal") }

func (p restoreDirs) stagingDirs() []string {
	if p.walDir == "" {
		return []string{p.stage}
	}
	return []string{p.stage, p.walStage}
}

// prepareRestore checks the inputs and derives etcdutl's restore configuration
// and the paths from cfg.
func prepareRestore(dbPath string, cfg *embed.Config, opts RestoreOptions) (snapshot.RestoreConfig, restoreDirs, error) {
	var none snapshot.RestoreConfig
	if cfg.Dir == "" {
		return none, restoreDirs{}, errors.New("restore: the etcd config has no data dir")
	}
	if opts.Served == 0 && (opts.RevisionBump > 0) != opts.MarkCompacted {
		return none, restoreDirs{}, errors.New("restore: RevisionBump and MarkCompacted go together (etcdutl: --mark-compacted required if --bump-revision > 0)")
	}
	if st, err := os.Stat(dbPath); err != nil {
		return none, restoreDirs{}, fmt.Errorf("restore: snapshot db: %w", err)
	} else if !st.Mode().IsRegular() {
		return none, restoreDirs{}, fmt.Errorf("restore: snapshot db %q is not a regular file", dbPath)
	}
	if cfg.Durl != "" || len(cfg.DiscoveryCfg.Endpoints) > 0 {
		return none, restoreDirs{}, errors.New("restore: the etcd config bootstraps by discovery; a restore needs the members: give --initial-cluster")
	}
	if err := cfg.Validate(); err != nil {
		return none, restoreDirs{}, fmt.Errorf("restore: invalid etcd configuration: %w", err)
	}
	urlsmap, token, err := cfg.PeerURLsMapAndToken("etcd")
	if err != nil {
		return none, restoreDirs{}, fmt.Errorf("restore: initial cluster of the etcd config: %w", err)
	}
	peerURLs := make([]string, len(cfg.AdvertisePeerUrls))
	for i, u := range cfg.AdvertisePeerUrls {
		peerURLs[i] = u.String()
	}

	dataDir := filepath.Clean(cfg.Dir)
	dirs := restoreDirs{dataDir: dataDir, stage: StagingDir(dataDir)}
	rc := snapshot.RestoreConfig{
		SnapshotPath:        dbPath,
		Name:                cfg.Name,
		OutputDataDir:       dirs.stagedData(),
		PeerURLs:            peerURLs,
		InitialCluster:      urlsmap.String(),
		InitialClusterToken: token,
		SkipHashCheck:       opts.SkipHashCheck,
		RevisionBump:        opts.RevisionBump,
		MarkCompacted:       opts.MarkCompacted,
	}
	if cfg.WalDir != "" {
		walDir := filepath.Clean(cfg.WalDir)
		rel, err := filepath.Rel(dataDir, walDir)
		if err != nil {
			return none, restoreDirs{}, fmt.Errorf("restore: WAL dir %q: %w", walDir, err)
		}
		switch {
		case rel == ".":
			return none, restoreDirs{}, fmt.Errorf("restore: the WAL dir %q is the data dir itself", walDir)
		case rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)):
			dirs.walDir, dirs.walStage = walDir, StagingDir(walDir)
			rc.OutputWALDir = dirs.stagedWAL()
		default: // inside the data dir: built and swapped with it
			rc.OutputWALDir = filepath.Join(dirs.stagedData(), rel)
		}
	}
	return rc, dirs, nil
}

// createStaging creates the empty staging dirs, removing leftovers of an
// interrupted restore first.
func (p restoreDirs) createStaging(lg *slog.Logger) error {
	for _, d := range p.stagingDirs() {
		if _, err := os.Lstat(d); err == nil {
			lg.Warn("removing the staging dir of an interrupted restore", "path", d)
			if err := os.RemoveAll(d); err != nil {
				return fmt.Errorf("restore: remove the leftover staging dir %q: %w", d, err)
			}
		}
		if err := os.MkdirAll(filepath.Dir(d), 0o700); err != nil {
			return fmt.Errorf("restore: cannot create the parent of the staging dir %q: %w", d, err)
		}
		if err := os.Mkdir(d, 0o700); err != nil {
			p.removeStaging(lg)
			return fmt.Errorf("restore: cannot create the staging dir %q (it must sit beside the data dir, on the same filesystem): %w", d, err)
		}
	}
	return nil
}

func (p restoreDirs) removeStaging(lg *slog.Logger) {
	for _, d := range p.stagingDirs() {
		if err := os.RemoveAll(d); err != nil {
			lg.Warn("could not remove the restore staging dir", "path", d, "error", err)
		}
	}
}

// swap moves the existing dirs aside and the staged ones into place. On error
// it puts back what it moved.
func (p restoreDirs) swap(lg *slog.Logger, now time.Time) (movedAside string, err error) {
	type move struct{ from, to string }
	var done []move
	rename := func(from, to string) error {
		if err := os.Rename(from, to); err != nil {
			return fmt.Errorf("restore: rename %q to %q: %w", from, to, err)
		}
		done = append(done, move{from, to})
		return nil
	}
	defer func() {
		if err == nil {
			return
		}
		for i := len(done) - 1; i >= 0; i-- {
			if rerr := os.Rename(done[i].to, done[i].from); rerr != nil {
				lg.Error("could not undo a rename of the failed restore", "from", done[i].to, "to", done[i].from, "error", rerr)
				err = errors.Join(err, fmt.Errorf("undo rename %q to %q: %w", done[i].to, done[i].from, rerr))
			}
		}
		movedAside = ""
	}()

	// The data dir goes aside first and comes back last: until the end there is
	// no data dir, which datadir.Inspect reports as missing, so a crash leads to a
	// rerun of the restore, never to a half-swapped member.
	if exists(p.dataDir) {
		movedAside = datadir.AsideDir(p.dataDir, now)
		if err := rename(p.dataDir, movedAside); err != nil {
			return "", err
		}
		lg.Info("moved the old data dir aside", "from", p.dataDir, "to", movedAside)
	}
	if p.walDir != "" {
		if exists(p.walDir) {
			walAside := datadir.AsideDir(p.walDir, now)
			if err := rename(p.walDir, walAside); err != nil {
				return "", err
			}
			lg.Info("moved the old WAL dir aside", "from", p.walDir, "to", walAside)
		}
		if err := rename(p.stagedWAL(), p.walDir); err != nil {
			return "", err
		}
		if err := fsync.Path(filepath.Dir(p.walDir)); err != nil {
			return "", err
		}
	}
	failpoint(FailpointAfterAside)
	if err := rename(p.stagedData(), p.dataDir); err != nil {
		return "", err
	}
	if err := fsync.Path(filepath.Dir(p.dataDir)); err != nil {
		return "", err
	}
	return movedAside, nil
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// zapLogger is the logger etcd's own code logs to for cfg (validated).
func zapLogger(cfg *embed.Config) *zap.Logger {
	if lg := cfg.GetLogger(); lg != nil {
		return lg
	}
	return zap.NewNop()
}

// runRestore runs etcdutl's restore, turning its panics into errors.
func runRestore(lg *zap.Logger, rc snapshot.RestoreConfig) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("etcdutl restore panicked: %v", r)
		}
	}()
	return snapshot.NewV3(lg).Restore(rc)
}

// checkSnapshotDB checks the structure of the snapshot db before bbolt opens
// it for writing: bbolt panics on goroutines of its own (ending the process)
// when a db it opens is damaged.
func checkSnapshotDB(dbPath string) error {
	done := make(chan error, 1)
	go func() {
		debug.SetPanicOnFault(true)
		defer func() {
			if r := recover(); r != nil {
				done <- fmt.Errorf("snapshot db %q is damaged: reading it failed with: %v", dbPath, r)
			}
		}()
		f, err := os.Open(dbPath)
		if err != nil {
			done <- fmt.Errorf("snapshot db: %w", err)
			return
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			done <- fmt.Errorf("snapshot db: %w", err)
			return
		}
		if err := boltfmt.Check(f, st.Size(), restoreDBProblemsMax); err != nil {
			done <- fmt.Errorf("snapshot db %q is damaged: %w", dbPath, err)
			return
		}
		done <- nil
	}()
	return <-done
}

// Failpoints of BuildDataDir, for crash tests: with the environment variable
// ETCDBR_FAILPOINT set to one of these names, the process kills itself with
// SIGKILL at that step. Never set it outside tests.
const (
	// FailpointAfterFetch: BuildDataDir was called (the snapshot is fetched).
	FailpointAfterFetch = "restore-after-fetch"
	// FailpointDuringReplay: the replay begins to write the revisions of its second
	// delta (its first when there is only one) into the staged member's db, or to check
	// and spool them when it writes the db compacted; those of the first are done.
	FailpointDuringReplay = "restore-during-replay"
	// FailpointAfterStaging: the staged data dir is complete and fsynced.
	FailpointAfterStaging = "restore-after-staging"
	// FailpointAfterAside: the old data dir (if any) was moved aside, the new
	// one not yet in place (there is no data dir).
	FailpointAfterAside = "restore-after-aside"
	// FailpointAfterSwap: the new data dir is in place, the staging dir not yet
	// removed.
	FailpointAfterSwap = "restore-after-swap"
)

// failpointEnv names the environment variable that arms a failpoint.
const failpointEnv = "ETCDBR_FAILPOINT"

// failpoint kills the process when the failpoint name is armed.
func failpoint(name string) {
	if os.Getenv(failpointEnv) != name {
		return
	}
	p, err := os.FindProcess(os.Getpid())
	if err == nil {
		_ = p.Kill() // SIGKILL: no deferred function runs
	}
	select {} // the signal is on its way
}

// failpointOnDelta returns the replay's hook that hits FailpointDuringReplay when the
// replay begins to write its second delta (its first when there is only one).
func failpointOnDelta(deltas int) func(int) {
	if os.Getenv(failpointEnv) != FailpointDuringReplay {
		return nil
	}
	at := min(2, deltas) - 1
	return func(i int) {
		if i == at {
			failpoint(FailpointDuringReplay)
		}
	}
}

// completeMarker is the file, in the staging dir, that says the staged dirs are
// complete and fsynced: a swap interrupted after it may be finished.
const completeMarker = "COMPLETE"

// markComplete writes the complete marker into the staging dir and fsyncs it.
func (p restoreDirs) markComplete() error {
	if err := fsync.WriteFile(filepath.Join(p.stage, completeMarker), []byte("staged data dir complete\n")); err != nil {
		return fmt.Errorf("mark the staging dir %q complete: %w", p.stage, err)
	}
	return fsync.Path(p.stage)
}
