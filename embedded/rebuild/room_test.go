package rebuild

import (
	"errors"
	"os"
	"strings"
	"testing"

	"go.etcd.io/etcd/server/v3/storage/wal"
)

// A restore needs, at least, a copy of the db, what the deltas add, and the WAL file etcd
// preallocates: in the data dir's staging dir, or in the WAL dir's when the WAL lives apart.
func TestRestoreNeeds(t *testing.T) {
	together := restoreDirs{dataDir: "/d/data", stage: "/d/data.etcdbr-restore"}
	got := together.needs(10<<20, 3<<20)
	if len(got) != 1 || got[0].dir != together.stage || got[0].need != 13<<20+wal.SegmentSizeBytes {
		t.Fatalf("needs with the WAL in the data dir: %+v", got)
	}
	apart := restoreDirs{dataDir: "/d/data", stage: "/d/data.etcdbr-restore", walDir: "/w/wal", walStage: "/w/wal.etcdbr-restore"}
	got = apart.needs(10<<20, 0)
	if len(got) != 2 || got[0].need != 10<<20 || got[1].dir != apart.walStage || got[1].need != wal.SegmentSizeBytes {
		t.Fatalf("needs with the WAL apart: %+v", got)
	}
}

// A restore that runs out of room says where, wraps ErrNoRoom, and keeps the cause; other
// errors pass unchanged.
func TestNoRoom(t *testing.T) {
	dirs := restoreDirs{dataDir: "/d/data", stage: "/d/data.etcdbr-restore"}
	err := dirs.noRoom(errors.New("write /d/data.etcdbr-restore/data/member/snap/db: no space left on device"))
	if !errors.Is(err, ErrNoRoom) || !strings.Contains(err.Error(), "the file system of /d is full") ||
		!strings.Contains(err.Error(), "no space left on device") {
		t.Fatalf("noRoom: %v", err)
	}
	other := errors.New("permission denied")
	if got := dirs.noRoom(other); got != other {
		t.Fatalf("noRoom changed another error: %v", got)
	}
	// A file system that cannot hold the restore is refused before anything is written.
	if err := dirs.checkRoom(1<<62, 0); err != nil {
		t.Fatalf("checkRoom on a file system whose free space cannot be read: %v", err)
	}
	tmp := restoreDirs{dataDir: t.TempDir() + "/data"}
	tmp.stage = StagingDir(tmp.dataDir)
	if err := os.Mkdir(tmp.stage, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := tmp.checkRoom(1<<62, 0); !errors.Is(err, ErrNoRoom) || !strings.Contains(err.Error(), "needs at least") {
		t.Fatalf("checkRoom of an exabyte: %v", err)
	}
}
