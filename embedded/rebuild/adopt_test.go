package rebuild

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/snap"
	"go.uber.org/zap"

	"github.com/etcdbr/etcdbr/embedded"
	"github.com/etcdbr/etcdbr/internal/deltatest"
	"github.com/etcdbr/etcdbr/internal/embeddedtest"
	"github.com/etcdbr/etcdbr/internal/etcdtest"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// testAdoptedSnapshot: a fetched db moved into the new member (MoveSnapshot) makes the same
// member as etcdutl's restore of a copy: the same db bucket by bucket and byte by byte, and
// the same WAL and raft snapshot, for a member of three and one alone, with and without
// deltas replayed and a revision bump; etcd serves the member alone. The fetched db is gone
// afterwards, and no seed db is left.
func testAdoptedSnapshot(t *testing.T, f *replayFixture) {
	for _, tc := range []struct {
		name    string
		target  catalog.Target
		bump    uint64
		members int
		served  int64 // RestoreOptions.Served: the last revision, a restore that needs no bump
	}{
		{"full snapshot only", catalog.Target{Revision: f.full.Revision}, 0, 3, 0},
		{"full snapshot only, bumped", catalog.Target{Revision: f.full.Revision}, 1000, 3, 0},
		{"deltas replayed", catalog.Target{}, 0, 3, 0},
		{"deltas replayed, bumped", catalog.Target{}, 1000, 3, 0},
		{"full snapshot only, alone", catalog.Target{Revision: f.full.Revision}, 0, 1, 0},
		{"full snapshot only, bumped, alone", catalog.Target{Revision: f.full.Revision}, 1000, 1, 0},
		{"deltas replayed, bumped, alone", catalog.Target{}, 1000, 1, 0},
		{"deltas replayed, nothing newer served", catalog.Target{}, 0, 3, f.last},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			p := f.planFor(t, tc.target)
			base := embeddedtest.NewConfig(t)
			if tc.members == 3 {
				base.InitialCluster = fmt.Sprintf("%s=%s,second=http://127.0.0.1:1,third=http://127.0.0.1:2", base.Name, base.AdvertisePeerUrls[0].String())
			}
			build := func(dbPath string, move bool) (*embed.Config, BuildResult) {
				cfg := *base
				cfg.Dir = filepath.Join(t.TempDir(), "member")
				opts := RestoreOptions{RevisionBump: tc.bump, MarkCompacted: tc.bump > 0, WantRevision: f.full.Revision,
					SkipHashCheck: move, MoveSnapshot: move, Served: tc.served, CompactReplay: CompactAlways}
				if len(p.Deltas) > 0 {
					opts.Replay = f.replayOptions(p, embeddedtest.Logger(t))
				}
				res, err := BuildDataDir(ctx, dbPath, &cfg, opts, embeddedtest.Logger(t))
				require.NoError(t, err)
				return &cfg, res
			}
			copied, wantRes := build(copyFile(t, f.snapPath), false)
			fetched := stripped(t, f)
			moved, gotRes := build(fetched, true)

			wantRes.Replay.Duration, gotRes.Replay.Duration = 0, 0
			assert.Equal(t, wantRes, gotRes)
			assert.NoFileExists(t, fetched, "the fetched db is moved into the member")
			wantFiles, gotFiles := treeFiles(t, copied.Dir), treeFiles(t, moved.Dir)
			assert.Equal(t, slices.Sorted(maps.Keys(wantFiles)), slices.Sorted(maps.Keys(gotFiles)), "the files of the data dir")
			for name, b := range wantFiles {
				if filepath.Ext(name) == ".snap" {
					assert.Equal(t, raftSnapshot(t, filepath.Join(copied.Dir, name)), raftSnapshot(t, filepath.Join(moved.Dir, name)), name)
					continue
				}
				assert.True(t, b == gotFiles[name], "%s differs from etcdutl's", name)
			}
			want := dumpBuckets(t, filepath.Join(copied.Dir, "member", "snap", "db"))
			got := dumpBuckets(t, filepath.Join(moved.Dir, "member", "snap", "db"))
			require.NotEmpty(t, want["members"])
			require.NotEmpty(t, want["key"])
			require.Equal(t, len(want), len(got), "buckets")
			for name, kvs := range want {
				assert.Equal(t, kvs, got[name], "bucket %q", name)
			}
			assert.Len(t, want["members"], tc.members)
			if tc.members == 1 {
				e := embeddedtest.MustStart(t, embedded.Start, moved)
				data, err := etcdtest.Take(ctx, e.Client(), 0)
				require.NoError(t, err)
				rev := gotRes.Revision - int64(tc.bump)
				want := f.dumps[rev]
				want.Revision = gotRes.Revision
				assert.Empty(t, deltatest.Compare(want, data, f.ttls, 20))
				if tc.bump > 0 {
					_, err = e.Client().Get(ctx, "x", clientv3.WithRev(rev))
					require.ErrorIs(t, err, rpctypes.ErrCompacted)
				}
			}
		})
	}

	t.Run("a db that ends with its sha256 is copied", func(t *testing.T) {
		t.Parallel()
		cfg := embeddedtest.NewConfig(t)
		db := copyFile(t, f.snapPath)
		_, err := BuildDataDir(context.Background(), db, cfg, RestoreOptions{MoveSnapshot: true}, embeddedtest.Logger(t))
		require.NoError(t, err)
		assert.FileExists(t, db)
		f.checkMember(t, cfg, f.full.Revision)
	})
}

// raftSnapshot reads the raft snapshot file at path: its metadata, and the members it
// holds (id -> raft attributes). Its other contents depend on the order in which etcdutl
// ranges over a map of the members, which differs from one run to the next.
func raftSnapshot(t *testing.T, path string) any {
	t.Helper()
	s, err := snap.Read(zap.NewNop(), path)
	require.NoError(t, err)
	type node struct {
		Value    string
		Children map[string]node
	}
	var store struct{ Root node }
	require.NoError(t, json.Unmarshal(s.Data, &store))
	members := map[string]string{}
	for id, m := range store.Root.Children["0"].Children["members"].Children {
		members[id] = m.Children["raftAttributes"].Value
	}
	require.NotEmpty(t, members)
	return []any{s.Metadata, members}
}

// treeFiles maps every file under dir but the db to its content.
func treeFiles(t *testing.T, dir string) map[string]string {
	t.Helper()
	files := map[string]string{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() == "db" {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		files[rel] = string(b)
		return nil
	})
	require.NoError(t, err)
	require.NotEmpty(t, files)
	return files
}

// TestMoveFileAcrossFileSystems: a fetched db on another file system than the member is
// copied into it (a rename fails with EXDEV), and removed.
func TestMoveFileAcrossFileSystems(t *testing.T) {
	t.Parallel()
	other, err := os.MkdirTemp("/dev/shm", "etcdbr-move-")
	require.NoError(t, err, "/dev/shm is the tmpfs this test crosses to")
	t.Cleanup(func() { os.RemoveAll(other) })
	var a, b syscall.Stat_t
	require.NoError(t, syscall.Stat(other, &a))
	dir := t.TempDir()
	require.NoError(t, syscall.Stat(dir, &b))
	require.NotEqual(t, a.Dev, b.Dev, "the test's temporary dir must be on another file system than /dev/shm")

	from := filepath.Join(other, "db")
	require.NoError(t, os.WriteFile(from, []byte("the fetched db"), 0o600))
	to := filepath.Join(dir, "db")
	require.NoError(t, os.WriteFile(to, []byte("the seed db, replaced"), 0o600))
	require.ErrorIs(t, os.Rename(from, to), syscall.EXDEV)
	require.NoError(t, moveFile(from, to))
	got, err := os.ReadFile(to)
	require.NoError(t, err)
	assert.Equal(t, "the fetched db", string(got))
	assert.NoFileExists(t, from)
}
