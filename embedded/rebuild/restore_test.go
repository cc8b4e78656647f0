package rebuild

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/etcdbr/etcdbr/embedded"
	"github.com/etcdbr/etcdbr/embedded/datadir"
	"github.com/etcdbr/etcdbr/internal/embeddedtest"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

func TestStagingDir(t *testing.T) {
	assert.Equal(t, "/var/lib/etcd.etcdbr-restore", StagingDir("/var/lib/etcd"))
	assert.Equal(t, "/var/lib/etcd.etcdbr-restore", StagingDir("/var/lib/etcd/"))
}

func TestBuildDataDir(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	// The source member: keys with several versions and a deletion, and a
	// snapshot as the Maintenance API streams it (db + sha256).
	src := embeddedtest.NewConfig(t)
	se := embeddedtest.MustStart(t, embedded.Start, src)
	embeddedtest.FillKeys(t, se.Client(), 40)
	want, wantRev := embeddedtest.AllKeys(t, se.Client())
	snap := embeddedtest.WriteSnapshotFile(t, src)
	se.Close()

	// checkRestored starts etcd on cfg and compares every key with the source.
	checkRestored := func(t *testing.T, cfg *embed.Config, revOffset int64) *embedded.Etcd {
		t.Helper()
		e := embeddedtest.MustStart(t, embedded.Start, cfg)
		got, gotRev := embeddedtest.AllKeys(t, e.Client())
		assert.Equal(t, want, got)
		assert.Equal(t, wantRev+revOffset, gotRev)
		return e
	}
	noLeftovers := func(t *testing.T, cfg *embed.Config) {
		t.Helper()
		assert.NoDirExists(t, StagingDir(cfg.Dir))
		if cfg.WalDir != "" {
			assert.NoDirExists(t, StagingDir(cfg.WalDir))
		}
	}

	t.Run("into a new path", func(t *testing.T) {
		t.Parallel()
		cfg := embeddedtest.NewConfig(t)
		res, err := BuildDataDir(ctx, snap, cfg, RestoreOptions{}, embeddedtest.Logger(t))
		require.NoError(t, err)
		assert.Empty(t, res.MovedAside)
		assert.Equal(t, wantRev, res.Revision)
		noLeftovers(t, cfg)
		v := datadir.Inspect(ctx, cfg.Dir, "")
		require.Equal(t, datadir.StateValid, v.State, v.Reason)
		assert.Equal(t, wantRev, v.Revision)
		checkRestored(t, cfg, 0)
	})

	t.Run("into an existing data dir", func(t *testing.T) {
		t.Parallel()
		cfg, _ := embeddedtest.NewDataDir(t, embedded.Start, 5)
		before := embeddedtest.TreeDigest(t, cfg.Dir)

		res, err := BuildDataDir(ctx, snap, cfg, RestoreOptions{}, embeddedtest.Logger(t))
		require.NoError(t, err)
		aside := res.MovedAside
		require.NotEmpty(t, aside)
		assert.True(t, strings.HasPrefix(aside, cfg.Dir+".etcdbr-old-"), aside)
		assert.Equal(t, before, embeddedtest.TreeDigest(t, aside), "the old data dir is kept byte for byte")
		noLeftovers(t, cfg)
		checkRestored(t, cfg, 0)
	})

	t.Run("revision bump and mark compacted", func(t *testing.T) {
		t.Parallel()
		cfg := embeddedtest.NewConfig(t)
		res, err := BuildDataDir(ctx, snap, cfg, RestoreOptions{RevisionBump: 1000, MarkCompacted: true}, embeddedtest.Logger(t))
		require.NoError(t, err)
		assert.Equal(t, wantRev+1000, res.Revision)
		v := datadir.Inspect(ctx, cfg.Dir, "")
		require.Equal(t, datadir.StateValid, v.State, v.Reason)
		assert.Equal(t, wantRev+1000, v.Revision)

		e := checkRestored(t, cfg, 1000)
		_, err = e.Client().Get(ctx, "key-001", clientv3.WithRev(wantRev))
		require.ErrorIs(t, err, rpctypes.ErrCompacted)
	})

	t.Run("separate WAL dir", func(t *testing.T) {
		t.Parallel()
		cfg := embeddedtest.NewConfig(t)
		cfg.WalDir = filepath.Join(filepath.Dir(cfg.Dir), "wal")
		require.NoError(t, os.MkdirAll(cfg.WalDir, 0o700)) // an old WAL dir to move aside
		_, err := BuildDataDir(ctx, snap, cfg, RestoreOptions{}, embeddedtest.Logger(t))
		require.NoError(t, err)
		noLeftovers(t, cfg)
		walFiles, err := filepath.Glob(filepath.Join(cfg.WalDir, "*.wal"))
		require.NoError(t, err)
		assert.NotEmpty(t, walFiles, "the WAL dir holds WAL files")
		assert.NoDirExists(t, filepath.Join(cfg.Dir, "member", "wal"))
		olds, err := filepath.Glob(cfg.WalDir + ".etcdbr-old-*")
		require.NoError(t, err)
		assert.Len(t, olds, 1, "the old WAL dir is moved aside")
		v := datadir.Inspect(ctx, cfg.Dir, cfg.WalDir)
		require.Equal(t, datadir.StateValid, v.State, v.Reason)
		checkRestored(t, cfg, 0)
	})

	t.Run("snapshot without its hash", func(t *testing.T) {
		t.Parallel()
		raw, err := os.ReadFile(snap)
		require.NoError(t, err)
		noHash := filepath.Join(t.TempDir(), "db")
		require.NoError(t, os.WriteFile(noHash, raw[:len(raw)-32], 0o600))

		cfg := embeddedtest.NewConfig(t)
		_, err = BuildDataDir(ctx, noHash, cfg, RestoreOptions{}, embeddedtest.Logger(t))
		require.Error(t, err)
		assert.Contains(t, err.Error(), "missing hash")
		assert.NoDirExists(t, cfg.Dir)
		noLeftovers(t, cfg)

		_, err = BuildDataDir(ctx, noHash, cfg, RestoreOptions{SkipHashCheck: true}, embeddedtest.Logger(t))
		require.NoError(t, err)
		v := datadir.Inspect(ctx, cfg.Dir, "")
		require.Equal(t, datadir.StateValid, v.State, v.Reason)
		assert.Equal(t, wantRev, v.Revision)
	})

	t.Run("failures leave the existing data dir alone", func(t *testing.T) {
		t.Parallel()
		cfg, _ := embeddedtest.NewDataDir(t, embedded.Start, 3)
		before := embeddedtest.TreeDigest(t, cfg.Dir)

		raw, err := os.ReadFile(snap)
		require.NoError(t, err)
		badHash := filepath.Join(t.TempDir(), "bad-hash.db")
		raw[len(raw)-1] ^= 0xff
		require.NoError(t, os.WriteFile(badHash, raw, 0o600))

		damaged := filepath.Join(t.TempDir(), "damaged.db")
		raw[len(raw)-1] ^= 0xff
		copy(raw[4096:], make([]byte, 4096)) // zero page 1, the second meta page...
		copy(raw[0:], make([]byte, 4096))    // ...and page 0: no valid meta left
		require.NoError(t, os.WriteFile(damaged, raw, 0o600))

		// A leftover of an interrupted restore is replaced, not an obstacle.
		require.NoError(t, os.MkdirAll(filepath.Join(StagingDir(cfg.Dir), "data", "junk"), 0o700))

		for _, tc := range []struct {
			name, db string
			opts     RestoreOptions
			want     string
		}{
			{"bad hash", badHash, RestoreOptions{}, "sha256"},
			{"damaged db", damaged, RestoreOptions{SkipHashCheck: true}, "damaged"},
			{"missing snapshot", filepath.Join(t.TempDir(), "nope.db"), RestoreOptions{}, "nope.db"},
			{"mark compacted without bump", snap, RestoreOptions{MarkCompacted: true}, "RevisionBump and MarkCompacted"},
			{"bump without mark compacted", snap, RestoreOptions{RevisionBump: 10}, "RevisionBump and MarkCompacted"},
		} {
			res, err := BuildDataDir(ctx, tc.db, cfg, tc.opts, embeddedtest.Logger(t))
			require.Error(t, err, tc.name)
			assert.Contains(t, err.Error(), tc.want, tc.name)
			assert.Empty(t, res.MovedAside, tc.name)
		}
		assert.Equal(t, before, embeddedtest.TreeDigest(t, cfg.Dir))
		olds, err := filepath.Glob(cfg.Dir + ".etcdbr-old-*")
		require.NoError(t, err)
		assert.Empty(t, olds)
		assert.Equal(t, datadir.StateValid, datadir.Inspect(ctx, cfg.Dir, "").State)
	})

	t.Run("staging dir cannot be created", func(t *testing.T) {
		t.Parallel()
		cfg := embeddedtest.NewConfig(t)
		blocker := filepath.Join(t.TempDir(), "not-a-dir")
		require.NoError(t, os.WriteFile(blocker, nil, 0o600))
		cfg.Dir = filepath.Join(blocker, "etcd")
		_, err := BuildDataDir(ctx, snap, cfg, RestoreOptions{}, embeddedtest.Logger(t))
		require.Error(t, err)
		assert.Contains(t, err.Error(), "staging dir")
		assert.Contains(t, err.Error(), StagingDir(cfg.Dir))
	})

	t.Run("discovery is refused", func(t *testing.T) {
		t.Parallel()
		cfg := embeddedtest.NewConfig(t)
		cfg.InitialCluster = ""
		cfg.Durl = "https://discovery.example.com/token"
		_, err := BuildDataDir(ctx, snap, cfg, RestoreOptions{}, embeddedtest.Logger(t))
		require.Error(t, err)
		assert.Contains(t, err.Error(), "--initial-cluster")
	})
}

// TestBuildDataDirDiskFull restores a snapshot larger than the free space of the
// filesystem of the data dir (a 20 MiB tmpfs): it is refused before anything is written,
// the error (ErrNoRoom) names the file system, its free space and the room needed, and the
// old data dir is untouched, with no staging dir left.
func TestBuildDataDirDiskFull(t *testing.T) {
	t.Parallel()
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount a 20 MiB tmpfs (the test runs as root): %v: %s", err, out)
	}
	t.Cleanup(func() { _ = syscall.Unmount(mnt, syscall.MNT_DETACH) })

	src := embeddedtest.NewConfig(t)
	se := embeddedtest.MustStart(t, embedded.Start, src)
	big := strings.Repeat("x", 1<<20)
	for i := range 30 {
		_, err := se.Client().Put(context.Background(), fmt.Sprintf("big-%02d", i), big)
		require.NoError(t, err)
	}
	snap := embeddedtest.WriteSnapshotFile(t, src)
	se.Close()

	old, _ := embeddedtest.NewDataDir(t, embedded.Start, 20)
	cfg := embeddedtest.NewConfig(t)
	cfg.Dir = filepath.Join(mnt, "data")
	embeddedtest.CopyTree(t, old.Dir, cfg.Dir)
	before := embeddedtest.TreeDigest(t, cfg.Dir)

	_, err := BuildDataDir(context.Background(), snap, cfg, RestoreOptions{}, embeddedtest.Logger(t))
	require.Error(t, err)
	assert.ErrorIs(t, err, ErrNoRoom, "%v", err)
	assert.Contains(t, err.Error(), "the file system of "+mnt+" has ")
	assert.Contains(t, err.Error(), "the restore needs at least")
	assert.Equal(t, before, embeddedtest.TreeDigest(t, cfg.Dir), "the old data dir was changed")
	assert.NoDirExists(t, StagingDir(cfg.Dir))
	olds, err := datadir.OldDataDirs(cfg.Dir)
	require.NoError(t, err)
	assert.Empty(t, olds)
}

// A replay that ends in a bump is written compacted when the deltas are large beside the db
// (stored, a quarter of its size or more), unless told always or never.
func TestCompactReplayDecision(t *testing.T) {
	const db = 1314 << 20
	for _, tc := range []struct {
		c      CompactReplay
		deltas int64
		want   bool
	}{
		{CompactWhenLarge, 590 << 20, true}, // 1M events beside a 1.3 GB db
		{CompactWhenLarge, db / 4, true},
		{CompactWhenLarge, db/4 - 1, false},
		{CompactWhenLarge, 6 << 20, false}, // 10k events
		{CompactAlways, 6 << 20, true},
		{CompactNever, 590 << 20, false},
	} {
		assert.Equal(t, tc.want, tc.c.compacts(db, tc.deltas), "%d, %d bytes of deltas", tc.c, tc.deltas)
	}
}

// A restore may end in a bump with RevisionBump, or with Served unless its replay surely
// ends at or after it: then it is not written compacted (its bump would be 0).
func TestRestoreMayBump(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    RestoreOptions
		want bool
	}{
		{"nothing served", RestoreOptions{}, false},
		{"a bump asked for", RestoreOptions{RevisionBump: 1000}, true},
		{"served past the store's newest", RestoreOptions{Served: 120, Replay: ReplayOptions{Reach: 100}}, true},
		{"served up to the store's newest", RestoreOptions{Served: 100, Replay: ReplayOptions{Reach: 100}}, false},
		{"a target before what was served", RestoreOptions{Served: 100, Replay: ReplayOptions{Stop: catalog.Target{Revision: 90}, Reach: 90}}, true},
		{"a target at what was served", RestoreOptions{Served: 100, Replay: ReplayOptions{Stop: catalog.Target{Revision: 100}, Reach: 100}}, false},
	} {
		assert.Equal(t, tc.want, tc.o.mayBump(), tc.name)
	}
}
