package supervisor

import (
	"context"
	"crypto/sha256"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/etcdbr/etcdbr/backup"
	"github.com/etcdbr/etcdbr/embedded"
	"github.com/etcdbr/etcdbr/internal/deltatest"
	"github.com/etcdbr/etcdbr/internal/embeddedtest"
	"github.com/etcdbr/etcdbr/internal/etcdtest"
	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// verifyFixture is a file store with a full snapshot and deltas after it, taken from a real
// member, and the member's keys at the end.
type verifyFixture struct {
	dir    string
	full   catalog.Snapshot
	deltas []catalog.Snapshot
	final  etcdtest.Dump
}

func buildVerifyFixture(t *testing.T) verifyFixture {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e, err := embedded.Start(ctx, embeddedtest.NewConfig(t), nil)
	require.NoError(t, err)
	defer e.Close()
	cli := e.Client()
	f := verifyFixture{dir: filepath.Join(t.TempDir(), "store")}
	store, err := snapstore.Open(ctx, "file://"+f.dir, snapstore.Options{})
	require.NoError(t, err)
	defer store.Close()

	_, err = etcdtest.Workload{Seed: 5, Keys: 200, LeasedKeys: 10}.Run(ctx, cli)
	require.NoError(t, err)
	f.full, err = backup.FullFromBackend(ctx, e.Server().Backend(), store)
	require.NoError(t, err)
	rec := deltatest.Start(ctx, cli, store, f.full.Revision+1, deltatest.Options{})
	defer rec.Stop()
	cut := f.full.Revision
	res, err := deltatest.Churn{Seed: 7, Ops: 200, Keys: 60}.Run(ctx, cli, func(op int, rev int64) error {
		if rev-cut >= 50 {
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
	require.GreaterOrEqual(t, len(f.deltas), 2)
	return f
}

// store opens a copy of the verifyFixture's store.
func (f verifyFixture) store(t *testing.T) (*snapstore.Store, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "store")
	require.NoError(t, os.CopyFS(dir, os.DirFS(f.dir)))
	s, err := snapstore.Open(context.Background(), "file://"+dir, snapstore.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s, dir
}

func TestVerify(t *testing.T) {
	f := buildVerifyFixture(t)
	ctx := context.Background()

	t.Run("intact", func(t *testing.T) {
		s, _ := f.store(t)
		rep, err := Verify(ctx, s, VerifyOptions{Deep: true, TempDir: t.TempDir()})
		require.NoError(t, err)
		assert.True(t, rep.OK(), "%v", rep.AllProblems())
		require.NotNil(t, rep.Deep)
		assert.Equal(t, f.final.Revision, rep.Latest.Revision)
		assert.Equal(t, f.final.Revision, rep.Deep.Restore.Revision)
		assert.Equal(t, f.final.Revision, rep.Deep.Revision)
		assert.EqualValues(t, len(f.final.KVs), rep.Deep.Keys)
		assert.Positive(t, rep.Deep.KeysChecked)
		t.Logf("deep verification: %d keys, %d checked against the deltas, %v", rep.Deep.Keys, rep.Deep.KeysChecked, rep.Deep.Duration)
	})

	t.Run("a corrupt delta", func(t *testing.T) {
		s, dir := f.store(t)
		bad := f.deltas[len(f.deltas)-1]
		path := filepath.Join(dir, filepath.FromSlash(bad.Key))
		b, err := os.ReadFile(path)
		require.NoError(t, err)
		b[len(b)/2] ^= 0x10
		require.NoError(t, os.WriteFile(path, b, 0o600))

		rep, err := Verify(ctx, s, VerifyOptions{Deep: true, TempDir: t.TempDir()})
		require.NoError(t, err)
		require.False(t, rep.OK())
		var all []string
		for _, p := range rep.AllProblems() {
			all = append(all, p.String())
		}
		joined := strings.Join(all, "\n")
		t.Log(joined)
		assert.Contains(t, all[0], bad.Key, "the first problem names the bad object")
		assert.Nil(t, rep.Deep, "no chain to the latest point: nothing to restore deeply")
	})

	t.Run("shallow only", func(t *testing.T) {
		s, _ := f.store(t)
		rep, err := Verify(ctx, s, VerifyOptions{})
		require.NoError(t, err)
		assert.True(t, rep.OK(), "%v", rep.AllProblems())
		assert.Nil(t, rep.Deep)
		assert.Equal(t, 1, rep.Fulls)
		assert.Equal(t, len(f.deltas), rep.Deltas)
	})
}

func TestVerifyKeyStateCompare(t *testing.T) {
	put := verifyKeyState{create: 5, mod: 9, version: 3, lease: 0x77, value: sha256.Sum256([]byte("v"))}
	kv := func(mut func(*mvccpb.KeyValue)) []*mvccpb.KeyValue {
		k := &mvccpb.KeyValue{Key: []byte("k"), Value: []byte("v"), CreateRevision: 5, ModRevision: 9, Version: 3, Lease: 0x77}
		if mut != nil {
			mut(k)
		}
		return []*mvccpb.KeyValue{k}
	}
	assert.Empty(t, put.compare(kv(nil)))
	assert.Contains(t, put.compare(nil), "absent, but put at revision 9")
	assert.Contains(t, put.compare(kv(func(k *mvccpb.KeyValue) { k.Value = []byte("w") })), "value differs")
	assert.Contains(t, put.compare(kv(func(k *mvccpb.KeyValue) { k.Version = 4 })), "5/9/4/77, the deltas say 5/9/3/77")
	assert.Contains(t, put.compare(kv(func(k *mvccpb.KeyValue) { k.Lease = 0 })), "lease")
	deleted := verifyKeyState{deleted: true, mod: 12}
	assert.Empty(t, deleted.compare(nil))
	assert.Contains(t, deleted.compare(kv(nil)), "deleted at revision 12")
}
