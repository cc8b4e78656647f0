package supervisor

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/etcdbr/etcdbr/backup"
	"github.com/etcdbr/etcdbr/embedded"
	"github.com/etcdbr/etcdbr/internal/embeddedtest"
	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// inProcessCluster starts three members in-process and returns them with the index of the
// one that proves its leadership.
func inProcessCluster(t *testing.T) ([]*embedded.Etcd, int) {
	t.Helper()
	members := embeddedtest.MustStartCluster(t, embedded.Start, embeddedtest.ClusterConfigs(t, 3))
	return members, provenLeader(t, members)
}

// provenLeader waits until a member proves that it leads and returns its index.
func provenLeader(t *testing.T, members []*embedded.Etcd) int {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		for i, e := range members {
			if _, err := lead(context.Background(), e); err == nil {
				return i
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no member proves that it leads")
		}
		<-time.After(50 * time.Millisecond)
	}
}

// moveLeader hands the leadership from member from to member to and waits until it proves it.
func moveLeader(t *testing.T, members []*embedded.Etcd, from, to int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := members[from].Client().MoveLeader(ctx, uint64(members[to].Server().MemberID()))
	require.NoError(t, err)
	require.Equal(t, to, provenLeader(t, members))
}

func fileStore(t *testing.T) *snapstore.Store {
	t.Helper()
	store, err := snapstore.Open(context.Background(), "file://"+t.TempDir(), snapstore.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { store.Close() })
	return store
}

// A deposed leader that has not noticed yet (its uploads still carry the fence of its
// leadership) commits nothing: neither a full snapshot nor a delta, whose taker stops at once.
// The same uploads commit while it leads.
func TestFencedUploadsOfADeposedLeader(t *testing.T) {
	t.Parallel()
	members, first := inProcessCluster(t)
	e := members[first]
	store := fileStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l, err := lead(ctx, e)
	require.NoError(t, err)
	fence := leadershipFence(l)

	full, err := backup.FullFromBackendFenced(ctx, e.Server().Backend(), store, fence)
	require.NoError(t, err, "fenced by a leadership that holds")

	moveLeader(t, members, first, (first+1)%3)
	_, err = backup.FullFromBackendFenced(ctx, e.Server().Backend(), store, fence)
	require.ErrorIs(t, err, backup.ErrFenced)

	// A delta taker of the deposed leader, started from where the store ends: the writes
	// after it are the next delta's, which its fence refuses.
	logs := &embeddedtest.SyncBuffer{}
	cfg := backup.DeltaConfig{
		Store:    store,
		Client:   e.Client(),
		Events:   e.Events,
		Period:   100 * time.Millisecond,
		Log:      slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Fence:    fence,
		RetryMin: 10 * time.Millisecond,
		Full: func(ctx context.Context) (catalog.Snapshot, error) {
			return backup.FullFromBackendFenced(ctx, e.Server().Backend(), store, fence)
		},
	}
	done := make(chan error, 1)
	go func() { done <- backup.RunDeltas(ctx, cfg) }()
	for i := range 20 {
		_, err := members[(first+1)%3].Client().Put(ctx, fmt.Sprintf("k%d", i), "v")
		require.NoError(t, err)
	}
	select {
	case err := <-done:
		require.ErrorIs(t, err, backup.ErrFenced)
	case <-ctx.Done():
		t.Fatalf("the deposed leader's delta taker did not stop; its log:\n%s", logs.String())
	}
	assert.Contains(t, logs.String(), "delta upload fenced")
	fulls, err := store.List(ctx, catalog.KindFull)
	require.NoError(t, err)
	assert.Equal(t, []catalog.Snapshot{full}, fulls)
	deltas, err := store.List(ctx, catalog.KindDelta)
	require.NoError(t, err)
	assert.Empty(t, deltas)
}

// deltasOnEvery runs deltasWhileLeader on every member into store, each with full snapshots
// fenced by its own leadership, until the test ends.
func deltasOnEvery(t *testing.T, members []*embedded.Etcd, store *snapstore.Store) []*embeddedtest.SyncBuffer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	logs := make([]*embeddedtest.SyncBuffer, len(members))
	done := make(chan error, len(members))
	for i, e := range members {
		logs[i] = &embeddedtest.SyncBuffer{}
		lg := slog.New(slog.NewTextHandler(logs[i], &slog.HandlerOptions{Level: slog.LevelDebug}))
		cfg := backup.DeltaConfig{
			Store:    store,
			Client:   e.Client(),
			Events:   e.Events,
			Period:   200 * time.Millisecond,
			Log:      lg,
			RetryMin: 10 * time.Millisecond,
			Full: func(ctx context.Context) (catalog.Snapshot, error) {
				l, err := lead(ctx, e)
				if err != nil {
					return catalog.Snapshot{}, fmt.Errorf("%w: %w", err, backup.ErrSkipped)
				}
				return backup.FullFromBackendFenced(ctx, e.Server().Backend(), store, leadershipFence(l))
			},
		}
		go func() { done <- deltasWhileLeader(ctx, e, cfg, lg) }()
	}
	t.Cleanup(func() {
		cancel()
		for range members {
			assert.NoError(t, <-done)
		}
		if t.Failed() {
			for i, l := range logs {
				t.Logf("member %d:\n%s", i, l.String())
			}
		}
	})
	return logs
}

// waitStored waits until the store holds rev.
func waitStored(t *testing.T, store *snapstore.Store, rev int64) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		newest, err := store.Newest(context.Background())
		require.NoError(t, err)
		if newest >= rev {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the store's newest revision is %d after a minute, want %d", newest, rev)
		}
		<-time.After(50 * time.Millisecond)
	}
}

// When the leadership moves (handed over, then back: a term the first leader led in before
// is over), the new leader's deltas continue the store's chain exactly: no gap and no overlap.
func TestDeltasFollowTheLeader(t *testing.T) {
	t.Parallel()
	members, first := inProcessCluster(t)
	store := fileStore(t)
	ctx := context.Background()
	// The chain of an empty store starts at the leader's revision: anchor it first.
	_, err := backup.FullFromBackend(ctx, members[first].Server().Backend(), store)
	require.NoError(t, err)
	deltasOnEvery(t, members, store)

	cli := members[first].Client()
	put := func(n int) int64 {
		var rev int64
		for i := range n {
			resp, err := cli.Put(ctx, fmt.Sprintf("k%d", i), fmt.Sprint(rev))
			require.NoError(t, err)
			rev = resp.Header.Revision
		}
		return rev
	}
	waitStored(t, store, put(30))
	second := (first + 1) % 3
	moveLeader(t, members, first, second)
	waitStored(t, store, put(30))
	moveLeader(t, members, second, first)
	waitStored(t, store, put(30))

	fulls, err := store.List(ctx, catalog.KindFull)
	require.NoError(t, err)
	deltas, err := store.List(ctx, catalog.KindDelta)
	require.NoError(t, err)
	assert.Empty(t, catalog.CheckChain(fulls, deltas))
	for i := 1; i < len(deltas); i++ {
		assert.Equal(t, deltas[i-1].Revision+1, deltas[i].From, "%s after %s", deltas[i].Key, deltas[i-1].Key)
	}
}

// A member that does not lead (here: whose etcd does not run) takes the full snapshot before
// a membership change through a client of the cluster, named with the revision inside it,
// into a store of that cluster; a store of another cluster is refused and gets nothing.
func TestFullBeforeMembershipChange(t *testing.T) {
	t.Parallel()
	cfgs := embeddedtest.ClusterConfigs(t, 3)
	members := embeddedtest.MustStartCluster(t, embedded.Start, cfgs)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	resp, err := members[0].Client().Put(ctx, "before-the-change", "v")
	require.NoError(t, err)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{cfgs[1].ListenClientUrls[0].String()}, Logger: zap.NewNop()})
	require.NoError(t, err)
	defer cli.Close()

	store := fileStore(t)
	sched, err := backup.ParseSchedule("@daily")
	require.NoError(t, err)
	s, err := New(Config{Etcd: embeddedtest.NewConfig(t), Store: store, Schedule: sched})
	require.NoError(t, err)
	snap, err := s.FullBeforeMembershipChange(ctx, cli)
	require.NoError(t, err)
	assert.Equal(t, resp.Header.Revision, snap.Revision)
	fulls, err := store.List(ctx, catalog.KindFull)
	require.NoError(t, err)
	assert.Equal(t, []catalog.Snapshot{snap}, fulls)
	id, ok, err := store.ClusterID(ctx)
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, members[0].Server().Cluster().ID().String(), id)

	other := fileStore(t)
	require.NoError(t, other.ClaimClusterID(ctx, "1234"))
	s2, err := New(Config{Etcd: embeddedtest.NewConfig(t), Store: other, Schedule: sched})
	require.NoError(t, err)
	_, err = s2.FullBeforeMembershipChange(ctx, cli)
	require.ErrorIs(t, err, snapstore.ErrClusterMismatch)
	fulls, err = other.List(ctx, catalog.KindFull)
	require.NoError(t, err)
	assert.Empty(t, fulls)
}
