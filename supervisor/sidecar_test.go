package supervisor

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdbr/etcdbr/backup"
	"github.com/etcdbr/etcdbr/embedded"
	"github.com/etcdbr/etcdbr/internal/embeddedtest"
	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// externalEtcd is an etcd the sidecar tests back up through its client URL, and a file store
// for them.
type externalEtcd struct {
	e        *embedded.Etcd
	url      string // the client URL
	cluster  string // its cluster ID
	storeURL string
	logs     *embeddedtest.SyncBuffer
}

func startExternal(t *testing.T) *externalEtcd {
	t.Helper()
	cfg := embeddedtest.NewConfig(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e, err := embedded.Start(ctx, cfg, nil)
	require.NoError(t, err)
	t.Cleanup(e.Close)
	x := &externalEtcd{e: e, url: cfg.ListenClientUrls[0].String(), cluster: clusterID(e),
		storeURL: "file://" + filepath.Join(t.TempDir(), "store"), logs: &embeddedtest.SyncBuffer{}}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("sidecar log:\n%s", x.logs.String())
		}
	})
	return x
}

// config is a sidecar configuration for x: full snapshots daily, deltas every second.
func (x *externalEtcd) config(t *testing.T) SidecarConfig {
	sched, err := backup.ParseSchedule("@daily")
	require.NoError(t, err)
	return SidecarConfig{
		Client: clientv3.Config{Endpoints: []string{x.url}, DialTimeout: 5 * time.Second},
		OpenStore: func(ctx context.Context) (*snapstore.Store, error) {
			return snapstore.Open(ctx, x.storeURL, snapstore.Options{})
		},
		Schedule:    sched,
		DeltaPeriod: time.Second,
		Log:         slog.New(slog.NewTextHandler(x.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}

// store opens x's store for the test to look into.
func (x *externalEtcd) store(t *testing.T) *snapstore.Store {
	t.Helper()
	s, err := snapstore.Open(context.Background(), x.storeURL, snapstore.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s
}

// put writes a key and returns the revision.
func (x *externalEtcd) put(t *testing.T, key string) int64 {
	t.Helper()
	resp, err := x.e.Client().Put(context.Background(), key, "v")
	require.NoError(t, err)
	return resp.Header.Revision
}

// waitUntil polls cond until it holds, or fails the test after a minute.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRunSidecar: the sidecar claims the store for the external etcd's cluster, takes a full
// snapshot at once into the empty store, and on stop uploads the final delta (the period is
// an hour: no other delta): the store then holds the last revision written.
func TestRunSidecar(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	x := startExternal(t)
	store := x.store(t)
	x.put(t, "before")
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	cfg := x.config(t)
	cfg.DeltaPeriod = time.Hour
	go func() { done <- RunSidecar(rctx, cfg) }()
	t.Cleanup(stop)

	waitUntil(t, "a full snapshot in the store", func() bool {
		list, err := store.List(ctx, catalog.KindFull)
		return err == nil && len(list) == 1
	})
	id, ok, err := store.ClusterID(ctx)
	require.NoError(t, err)
	require.True(t, ok, "claimed before the first upload")
	assert.Equal(t, x.cluster, id)
	waitUntil(t, "the delta taker to start", func() bool {
		return strings.Contains(x.logs.String(), "component=delta")
	})
	last := x.put(t, "last")
	stop()
	select {
	case err := <-done:
		require.NoError(t, err, "a stop is no error")
	case <-time.After(time.Minute):
		t.Fatal("RunSidecar did not return after its context ended")
	}
	newest, err := store.Newest(ctx)
	require.NoError(t, err)
	assert.Equal(t, last, newest, "the final delta holds the last write")
	deltas, err := store.List(ctx, catalog.KindDelta)
	require.NoError(t, err)
	assert.Len(t, deltas, 1, "the final delta only")
	assert.Contains(t, x.logs.String(), "backing up an external etcd until SIGTERM")
}

// TestSidecarSnapshot: one full snapshot (etcdbr snapshot --once) at the external etcd's
// revision, into a store claimed for its cluster; no delta.
func TestSidecarSnapshot(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	x := startExternal(t)
	rev := x.put(t, "k")
	snap, err := SidecarSnapshot(ctx, x.config(t))
	require.NoError(t, err)
	assert.Equal(t, rev, snap.Revision)
	store := x.store(t)
	fulls, err := store.List(ctx, catalog.KindFull)
	require.NoError(t, err)
	require.Len(t, fulls, 1)
	assert.Equal(t, snap.Key, fulls[0].Key)
	deltas, err := store.List(ctx, catalog.KindDelta)
	require.NoError(t, err)
	assert.Empty(t, deltas)
	id, _, err := store.ClusterID(ctx)
	require.NoError(t, err)
	assert.Equal(t, x.cluster, id)
}

// TestSidecarRefusesAnotherClustersStore: a store that records another cluster gets no
// backup, continuous or once; the error names both clusters.
func TestSidecarRefusesAnotherClustersStore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	x := startExternal(t)
	const other = "1234567890abcdef"
	store := x.store(t)
	require.NoError(t, store.ClaimClusterID(ctx, other))

	_, err := SidecarSnapshot(ctx, x.config(t))
	require.ErrorIs(t, err, snapstore.ErrClusterMismatch)
	assert.Contains(t, err.Error(), other)
	assert.Contains(t, err.Error(), x.cluster)
	assert.Contains(t, err.Error(), "own store")

	rctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	err = RunSidecar(rctx, x.config(t))
	require.ErrorIs(t, err, snapstore.ErrClusterMismatch)
	require.NoError(t, rctx.Err(), "refused at once, not retried")
	fulls, err := store.List(ctx, catalog.KindFull)
	require.NoError(t, err)
	assert.Empty(t, fulls)
}

// TestSidecarRetriesTheClaim: a store that fails when the sidecar claims it is retried with
// backoff; once it works, the backups start.
func TestSidecarRetriesTheClaim(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	x := startExternal(t)
	// The store's directory is a file once the sidecar opened it: every read and write fails
	// (a store error, not another cluster's record).
	root := strings.TrimPrefix(x.storeURL, "file://")
	cfg := x.config(t)
	open := cfg.OpenStore
	cfg.OpenStore = func(ctx context.Context) (*snapstore.Store, error) {
		s, err := open(ctx)
		if err == nil {
			require.NoError(t, os.RemoveAll(root))
			require.NoError(t, os.WriteFile(root, nil, 0o600))
		}
		return s, err
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- RunSidecar(rctx, cfg) }()
	t.Cleanup(stop)

	waitUntil(t, "a retried claim", func() bool {
		return strings.Contains(x.logs.String(), "cannot claim the store for this cluster before the first backup; retrying")
	})
	require.NoError(t, os.Remove(root))
	require.NoError(t, os.MkdirAll(root, 0o700))
	store := x.store(t)
	waitUntil(t, "a full snapshot in the store", func() bool {
		list, err := store.List(ctx, catalog.KindFull)
		return err == nil && len(list) == 1
	})
	stop()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(time.Minute):
		t.Fatal("RunSidecar did not return after its context ended")
	}
}

// TestSidecarEtcdDown: an etcd that does not answer is an error, and the store is never
// opened.
func TestSidecarEtcdDown(t *testing.T) {
	t.Parallel()
	down := embeddedtest.FreeURL(t, "http")
	cfg := SidecarConfig{
		Client: clientv3.Config{Endpoints: []string{down.String()}, DialTimeout: time.Second},
		OpenStore: func(context.Context) (*snapstore.Store, error) {
			t.Error("the store was opened though etcd does not answer")
			return nil, context.Canceled
		},
	}
	_, err := SidecarSnapshot(context.Background(), cfg)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "does not answer")
}
