package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/storage"
	"go.etcd.io/etcd/server/v3/storage/wal"

	"github.com/etcdbr/etcdbr/embedded"
	"github.com/etcdbr/etcdbr/internal/diskspace"
)

// The data dir's file system. etcd stops the whole process (a FATAL line, then exit) when a
// write of its WAL or of its db finds no room, and a WAL file is preallocated whole, 64 MB at
// a time. So etcdbr looks at the free space of the file systems of the data dir and of the
// WAL dir every second, and when one has less than a WAL file's worth left it raises etcd's
// own NOSPACE alarm for its member: etcd then refuses writes ("etcdserver: mvcc: database
// space exceeded", which clients such as kube-apiserver know) and goes on serving reads,
// watches and lease keep-alives, instead of stopping. Once there is room again it disarms the
// alarm. A full disk is never a reason to restore: the data dir is kept as it is.
const (
	// dataDirReserve is the free space below which the data dir's file system counts as
	// full: less than etcd's next WAL file (wal.SegmentSizeBytes, a variable in etcd).
	dataDirReserve int64 = 64 * 1000 * 1000
	// dataDirRoomAgain is the free space at or above which it has room again: a WAL file and
	// a quarter more, so that the alarm does not go up and down around one figure.
	dataDirRoomAgain = dataDirReserve + dataDirReserve/4
	// alarmTimeout bounds one request to raise or disarm the alarm.
	alarmTimeout = 5 * time.Second
)

// diskView is what the readiness checks and the status read of the data dir's file
// system (set by guardDisk, under the Supervisor's mutex).
type diskView struct {
	full  bool      // less than dataDirReserve free (until dataDirRoomAgain is)
	path  string    // the directory (the data dir or the WAL dir) with the least room
	free  int64     // its free bytes, as last read
	since time.Time // when it became full
	// alarm says whether etcd's NOSPACE alarm of this member is up because of it; alarmErr why
	// raising it failed ("" when it did not).
	alarm    bool
	alarmErr string
}

// diskGuard is what guardDisk remembers between samples; the monitor's goroutine owns it.
type diskGuard struct {
	view diskView
	// raised: this process raised the NOSPACE alarm of its member (or took over one it finds
	// up at start while the db is below etcd's quota: see guardDisk), and disarms it once
	// there is room.
	raised bool
	// checked: the alarms of the running etcd were looked at once (adopt).
	checked bool
}

// leastRoom returns, of the data dir and the WAL dir (when apart), the one whose file system
// has the least free space, and that space.
func leastRoom(dataDir, walDir string) (string, int64, error) {
	path := dataDir
	free, err := diskspace.Available(dataDir)
	if err != nil {
		return "", 0, err
	}
	if walDir != "" {
		if n, werr := diskspace.Available(walDir); werr == nil && n < free {
			path, free = walDir, n
		}
	}
	return path, free, nil
}

// guardDisk reads the free space of the data dir's file system and, while etcd serves, raises
// or disarms etcd's NOSPACE alarm of this member (see dataDirReserve), logging each change;
// then it publishes what it found for the readiness checks.
func (s *Supervisor) guardDisk(ctx context.Context, g *diskGuard, now time.Time) {
	s.mu.Lock()
	e := s.etcd
	if s.state != StateServing {
		e = nil
	}
	s.mu.Unlock()
	if e == nil {
		g.checked = false // a new etcd: look at its alarms again
	}
	path, free, err := leastRoom(s.cfg.Etcd.Dir, s.cfg.Etcd.WalDir)
	if err != nil {
		return // not there yet (before a restore), or unreadable: nothing to tell
	}
	v := &g.view
	v.path, v.free = path, free
	switch {
	case !v.full && free < dataDirReserve:
		v.full, v.since = true, now
		s.lg.Error("the file system of the data dir is full: it has less free space than etcd's next WAL file, and etcd stops "+
			"the process when a write finds no room; etcd's NOSPACE alarm is raised, so that etcd refuses writes and goes on "+
			"serving reads until there is room. Make room on that file system: the alarm is disarmed then",
			"path", path, "free_bytes", free, "needs_bytes", dataDirReserve)
	case v.full && free >= dataDirRoomAgain:
		v.full = false
		s.lg.Info("the file system of the data dir has room again", "path", path, "free_bytes", free,
			"full_for", now.Sub(v.since).Round(time.Second))
	}
	if e != nil {
		srv := e.Server()
		id := uint64(srv.MemberID())
		up := false
		for _, a := range srv.Alarms() {
			up = up || (a.Alarm == pb.AlarmType_NOSPACE && a.MemberID == id)
		}
		if !g.checked {
			// An alarm up at start, while the db is below etcd's quota (etcd's own reason to
			// raise it), was raised by an etcdbr before it stopped: it is this one's to disarm.
			g.checked = true
			quota := srv.Cfg.QuotaBackendBytes
			if quota <= 0 {
				quota = storage.DefaultQuotaBytes
			}
			if up && srv.Backend().Size() < quota {
				g.raised = true
			}
		}
		switch {
		case v.full && !up:
			if err := s.alarm(ctx, e, pb.AlarmRequest_ACTIVATE); err != nil {
				v.alarmErr = err.Error()
				s.lg.Warn("cannot raise etcd's NOSPACE alarm while the data dir's file system is full: etcd may stop when a write "+
					"finds no room; trying again in a second", "path", path, "err", err)
			} else {
				g.raised, up, v.alarmErr = true, true, ""
				s.lg.Warn("raised etcd's NOSPACE alarm: etcd refuses writes and serves reads until the data dir's file system "+
					"has room", "path", path, "free_bytes", free)
			}
		case !v.full && up && g.raised:
			if err := s.alarm(ctx, e, pb.AlarmRequest_DEACTIVATE); err != nil {
				s.lg.Warn("cannot disarm etcd's NOSPACE alarm now that the data dir's file system has room; trying again in a "+
					"second", "path", path, "err", err)
			} else {
				g.raised, up = false, false
				s.lg.Info("disarmed etcd's NOSPACE alarm: etcd takes writes again", "path", path, "free_bytes", free)
			}
		}
		v.alarm = up && g.raised
	}
	s.mu.Lock()
	s.disk = *v
	s.mu.Unlock()
}

// alarm raises (pb.AlarmRequest_ACTIVATE) or disarms (DEACTIVATE) etcd's NOSPACE alarm of
// this member: a request through raft, as `etcdctl alarm disarm` makes.
func (s *Supervisor) alarm(ctx context.Context, e *embedded.Etcd, action pb.AlarmRequest_AlarmAction) error {
	ctx, cancel := context.WithTimeout(ctx, alarmTimeout)
	defer cancel()
	srv := e.Server()
	req := &pb.AlarmRequest{Action: action, MemberID: uint64(srv.MemberID()), Alarm: pb.AlarmType_NOSPACE}
	if _, err := srv.Alarm(ctx, req); err != nil {
		return fmt.Errorf("%s etcd's NOSPACE alarm: %w", strings.ToLower(action.String()), err)
	}
	return nil
}

// diskMessage says, for the readiness check and the status, that the data dir's file
// system is full and what etcd and etcdbr do about it.
func diskMessage(v diskView) string {
	msg := fmt.Sprintf("the file system of the data dir (%s) is full: %s free, less than etcd's next WAL file (%s), since %s",
		v.path, diskspace.Bytes(v.free), diskspace.Bytes(dataDirReserve), v.since.UTC().Format(time.RFC3339))
	switch {
	case v.alarm:
		msg += "; etcdbr raised etcd's NOSPACE alarm: etcd refuses writes and serves reads"
	case v.alarmErr != "":
		msg += "; raising etcd's NOSPACE alarm failed (" + v.alarmErr + "): etcd stops when a write finds no room"
	}
	return msg + "; make room on that file system (etcdbr disarms the alarm then)"
}

// startDiskFault adds to an error of etcd's start what the data dir's file system says, when
// it has less room than etcd's first WAL file (etcd panics "failed to create WAL" without
// its cause), or when the error is a full or read-only file system: which directory, its
// free space, and that the data dir is kept and etcdbr starts once there is room.
func startDiskFault(err error, dataDir, walDir string) error {
	path, free, ferr := leastRoom(dataDir, walDir)
	if ferr != nil {
		path, free, ferr = leastRoom(filepath.Dir(dataDir), "") // a data dir etcd has not created yet
	}
	switch {
	case diskspace.ReadOnly(err):
		return fmt.Errorf("%w (the file system of the data dir is read-only: remount it read-write and start etcdbr "+
			"again; the data dir is kept as it is)", err)
	case ferr == nil && (free < dataDirReserve || diskspace.Full(err)):
		return fmt.Errorf("%w (the file system of the data dir (%s) has %s free, less than etcd's WAL file (%s): make room "+
			"there and start etcdbr again; the data dir is kept as it is, nothing is restored)", err, path,
			diskspace.Bytes(free), diskspace.Bytes(dataDirReserve))
	}
	return err
}

// bootstrap is what etcd's start of a new member creates: its member dir, when it was not
// there before the start (newBootstrap). When the start fails before etcd wrote its first
// WAL file (a file system too small for it: etcd panics "failed to create WAL"), undo removes
// that member dir again: it holds nothing but the empty db of the bootstrap, and left there it
// would make the next start find a data dir without a WAL, corrupt, and refuse to start.
type bootstrap struct {
	memberDir, walDir string // "" when the member dir was there before the start
}

// newBootstrap notes, before etcd starts on cfg, whether its member dir is there.
func newBootstrap(cfg *embed.Config) bootstrap {
	member := filepath.Join(cfg.Dir, "member")
	if _, err := os.Lstat(member); !errors.Is(err, fs.ErrNotExist) {
		return bootstrap{}
	}
	walDir := cfg.WalDir
	if walDir == "" {
		walDir = filepath.Join(member, "wal")
	}
	return bootstrap{memberDir: member, walDir: walDir}
}

// undo removes the member dir a failed start of a new member created, unless etcd wrote a
// WAL file (then the member exists, and its data dir is left for the next start to judge).
func (b bootstrap) undo(lg *slog.Logger) {
	if b.memberDir == "" || wal.Exist(b.walDir) {
		return
	}
	if _, err := os.Lstat(b.memberDir); err != nil {
		return
	}
	if err := os.RemoveAll(b.memberDir); err != nil {
		lg.Warn("cannot remove what the failed start of a new member created: the next start may find it corrupt",
			"path", b.memberDir, "err", err)
		return
	}
	lg.Info("removed what the failed start of a new member created (no WAL was written: no member exists yet)", "path", b.memberDir)
}
