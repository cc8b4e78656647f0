package supervisor

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/etcdbr/etcdbr/backup"
	"github.com/etcdbr/etcdbr/embedded"
	"github.com/etcdbr/etcdbr/embedded/rebuild"
	"github.com/etcdbr/etcdbr/internal/deltatest"
	"github.com/etcdbr/etcdbr/internal/embeddedtest"
	"github.com/etcdbr/etcdbr/internal/etcdtest"
	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// storeFixture is a store with two full snapshots and a chain of deltas from before the
// first to the end, made from a real member, with the member's data at some revisions.
type storeFixture struct {
	dir          string // the file store's directory
	f1, f2       catalog.Snapshot
	deltas       []catalog.Snapshot
	final, atMid etcdtest.Dump
	mid          int64 // a revision inside a delta between f1 and f2
	ttls         deltatest.LeaseTTLs
	afterF2      catalog.Snapshot // a delta after f2, not the last
}

func buildStoreFixture(t *testing.T) *storeFixture {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cfg := embeddedtest.NewConfig(t)
	e, err := embedded.Start(ctx, cfg, nil)
	require.NoError(t, err)
	defer e.Close()
	cli := e.Client()
	f := &storeFixture{dir: filepath.Join(t.TempDir(), "store")}
	store, err := snapstore.Open(ctx, "file://"+f.dir, snapstore.Options{})
	require.NoError(t, err)
	defer store.Close()

	_, err = etcdtest.Workload{Seed: 3, Keys: 300, LeasedKeys: 10}.Run(ctx, cli)
	require.NoError(t, err)
	f.f1, err = backup.FullFromBackend(ctx, e.Server().Backend(), store)
	require.NoError(t, err)
	rec := deltatest.Start(ctx, cli, store, f.f1.Revision-4, deltatest.Options{})
	defer rec.Stop()
	cut := f.f1.Revision - 5
	res, err := deltatest.Churn{Seed: 11, Ops: 300, Keys: 80}.Run(ctx, cli, func(op int, rev int64) error {
		switch {
		case op >= 60 && f.mid == 0:
			f.mid = rev
			if f.atMid, err = etcdtest.Take(ctx, cli, 0); err != nil {
				return err
			}
		case op >= 150 && f.f2.Key == "":
			if f.f2, err = backup.FullFromBackend(ctx, e.Server().Backend(), store); err != nil {
				return err
			}
		}
		if rev-cut >= 29 {
			d, err := rec.Cut(ctx, rev)
			if err != nil {
				return err
			}
			f.deltas = append(f.deltas, d)
			cut = rev
		}
		return nil
	})
	require.NoError(t, err)
	d, err := rec.Cut(ctx, res.Revision)
	require.NoError(t, err)
	f.deltas = append(f.deltas, d)
	f.final, err = etcdtest.Take(ctx, cli, 0)
	require.NoError(t, err)
	granted, err := deltatest.GrantedTTLs(ctx, cli, res.TTLs)
	require.NoError(t, err)
	f.ttls = deltatest.ExpectedTTLs(granted, rec.TTLs(), rebuild.MinLeaseTTL(cfg))
	for _, d := range f.deltas {
		if d.From > f.f2.Revision+1 && d.Revision < res.Revision {
			f.afterF2 = d
			break
		}
	}
	require.Less(t, f.f1.Revision, f.mid)
	require.Less(t, f.mid, f.f2.Revision)
	require.NotEmpty(t, f.afterF2.Key)
	return f
}

// copyStore gives a test its own copy of the fixture's store.
func (f *storeFixture) copyStore(t *testing.T) (*snapstore.Store, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "store")
	require.NoError(t, os.CopyFS(dir, os.DirFS(f.dir)))
	s, err := snapstore.Open(context.Background(), "file://"+dir, snapstore.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s, dir
}

func flipByte(t *testing.T, dir string, snap catalog.Snapshot) {
	t.Helper()
	path := filepath.Join(dir, filepath.FromSlash(snap.Key))
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	b[len(b)/3] ^= 0x20
	require.NoError(t, os.WriteFile(path, b, 0o600))
}

// TestRestore restores from real stores, intact and damaged: a damaged object is left out
// when an older full snapshot or another copy of a delta reaches the same point, and
// otherwise the restore fails naming it; the data always equals the source's at the target.
func TestRestore(t *testing.T) {
	t.Parallel()
	f := buildStoreFixture(t)
	ctx := context.Background()

	type want struct {
		dump     etcdtest.Dump
		full     catalog.Snapshot
		excluded []string
		logs     []string
		err      []string // the restore fails with all of these
	}
	liar := catalog.FullName(f.final.Revision, time.Now(), false)
	tests := []struct {
		name   string
		target catalog.Target
		damage func(t *testing.T, s *snapstore.Store, dir string)
		want   want
	}{
		{name: "latest", want: want{dump: f.final, full: f.f2}},
		{name: "a revision between the fulls", target: catalog.Target{Revision: f.mid}, want: want{dump: f.atMid, full: f.f1}},
		{name: "a time after every backup", target: catalog.Target{Time: time.Now().Add(time.Hour)},
			want: want{dump: f.final, full: f.f2, logs: []string{"the target time is after the newest backup"}}},
		{name: "the newest full snapshot corrupt: the older one and more deltas", damage: func(t *testing.T, _ *snapstore.Store, dir string) {
			flipByte(t, dir, f.f2)
		}, want: want{dump: f.final, full: f.f1, excluded: []string{f.f2.Key}, logs: []string{"failed verification", f.f2.Key}}},
		{name: "a full snapshot whose content is another revision than its name", damage: func(t *testing.T, _ *snapstore.Store, dir string) {
			b, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(f.f2.Key)))
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(filepath.Join(dir, filepath.FromSlash(liar)), b, 0o600))
		}, want: want{dump: f.final, full: f.f2, excluded: []string{liar}, logs: []string{"holds revision " + itoa(f.f2.Revision) + ", not " + itoa(f.final.Revision)}}},
		{name: "a corrupt delta with an intact copy", damage: func(t *testing.T, _ *snapstore.Store, dir string) {
			copyName := catalog.DeltaName(f.afterF2.From, f.afterF2.Revision, f.afterF2.Time.Add(time.Second), false)
			b, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(f.afterF2.Key)))
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(filepath.Join(dir, filepath.FromSlash(copyName)), b, 0o600))
			flipByte(t, dir, f.afterF2)
		}, want: want{dump: f.final, full: f.f2, excluded: []string{f.afterF2.Key}}},
		{name: "a corrupt delta without a copy", damage: func(t *testing.T, _ *snapstore.Store, dir string) {
			flipByte(t, dir, f.afterF2)
		}, want: want{err: []string{f.afterF2.Key, "holds revision " + itoa(f.afterF2.From) + " but failed verification",
			"corrupt backup object", "the newest point this chain reaches is revision " + itoa(f.afterF2.From-1)}}},
		// Damage the store records is left out before anything is read: the objects below
		// are intact, so only the records keep the restore from using them.
		{name: "a full snapshot recorded as damaged: the older one and more deltas", damage: func(t *testing.T, s *snapstore.Store, _ string) {
			require.NoError(t, s.RecordDamage(context.Background(), f.f2, "verify", snapstore.ErrCorrupt))
		}, want: want{dump: f.final, full: f.f1, excluded: []string{f.f2.Key}, logs: []string{"records as damaged", f.f2.Key}}},
		{name: "a delta recorded as damaged", damage: func(t *testing.T, s *snapstore.Store, _ string) {
			require.NoError(t, s.RecordDamage(context.Background(), f.afterF2, "verify", snapstore.ErrCorrupt))
		}, want: want{err: []string{f.afterF2.Key, "recorded as damaged by verify", "holds revision " + itoa(f.afterF2.From) + " but failed verification",
			"restore that with --to-revision " + itoa(f.afterF2.From-1)}}},
		{name: "a time after every backup, with a delta recorded as damaged", target: catalog.Target{Time: time.Now().Add(time.Hour)},
			damage: func(t *testing.T, s *snapstore.Store, _ string) {
				require.NoError(t, s.RecordDamage(context.Background(), f.afterF2, "verify", snapstore.ErrCorrupt))
			}, want: want{err: []string{f.afterF2.Key, "recorded as damaged by verify", "restore that with --to-revision " + itoa(f.afterF2.From-1)}}},
		{name: "a missing delta in the middle", damage: func(t *testing.T, s *snapstore.Store, _ string) {
			require.NoError(t, s.Delete(context.Background(), f.afterF2))
		}, want: want{err: []string{"no delta holds revision " + itoa(f.afterF2.From), "cannot be reached"}}},
		{name: "two deltas that overlap", damage: func(t *testing.T, s *snapstore.Store, dir string) {
			// Another history's delta over the same revisions, as a restore to a past
			// point without a revision bump would write.
			_, err := deltatest.Write(context.Background(), s, []snapstore.Revision{{Revision: f.afterF2.From + 1, Time: time.Now(),
				Events: []*mvccpb.Event{{Type: mvccpb.PUT, Kv: &mvccpb.KeyValue{Key: []byte("/other-history"), Value: []byte("x"),
					CreateRevision: f.afterF2.From + 1, ModRevision: f.afterF2.From + 1, Version: 1}}}}}, nil, time.Now())
			require.NoError(t, err)
		}, want: want{err: []string{"overlap at revision " + itoa(f.afterF2.From+1), f.afterF2.Key, "cannot both belong to one history"}}},
		{name: "a target before every full snapshot", target: catalog.Target{Revision: f.f1.Revision - 1},
			want: want{err: []string{"before the oldest full snapshot", f.f1.Key}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			store, dir := f.copyStore(t)
			if tc.damage != nil {
				tc.damage(t, store, dir)
			}
			cfg := embeddedtest.NewConfig(t)
			var logs embeddedtest.SyncBuffer
			lg := slog.New(slog.NewTextHandler(&logs, nil))
			res, err := Restore(ctx, store, cfg, tc.target, rebuild.RestoreOptions{}, lg)
			if len(tc.want.err) > 0 {
				require.Error(t, err)
				t.Log(err)
				for _, s := range tc.want.err {
					assert.Contains(t, err.Error(), s)
				}
				assert.NoDirExists(t, cfg.Dir, "a failed restore left a data dir")
				requireNoLock(t, store)
				return
			}
			require.NoError(t, err, logs.String())
			requireNoLock(t, store)
			assert.Equal(t, tc.want.full.Key, res.Snapshot.Key)
			assert.Equal(t, tc.want.dump.Revision, res.Revision)
			assert.Equal(t, tc.want.dump.Revision, res.DataRevision)
			var excluded []string
			for _, x := range res.Excluded {
				excluded = append(excluded, x.Key)
			}
			assert.Equal(t, tc.want.excluded, excluded)
			for _, s := range tc.want.logs {
				assert.Contains(t, logs.String(), s)
			}
			checkData(t, cfg, tc.want.dump, f.ttls)
		})
	}
}

// checkData starts etcd on cfg and compares its data with want.
func checkData(t *testing.T, cfg *embed.Config, want etcdtest.Dump, ttls deltatest.LeaseTTLs) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e, err := embedded.Start(ctx, cfg, nil)
	require.NoError(t, err)
	defer e.Close()
	got, err := etcdtest.Take(ctx, e.Client(), 0)
	require.NoError(t, err)
	diff := deltatest.Compare(want, got, ttls, 20)
	require.Empty(t, diff, "restored data differs:\n%s", strings.Join(diff, "\n"))
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
