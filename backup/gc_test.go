package backup

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3client"

	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// GC runs after each full snapshot (the Take function triggers it, as the supervisor wires
// it) and only while the member takes backups: with the limit policy, the store keeps the
// newest two full snapshots of a real member.
func TestGCAfterFullSnapshots(t *testing.T) {
	e := startEtcd(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	store, err := snapstore.Open(ctx, "file://"+t.TempDir(), snapstore.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { store.Close() })

	var active atomic.Bool
	active.Store(true)
	runs := make(chan GCRun, 16)
	gc, err := NewGC(GCConfig{
		Store: store, Policy: catalog.Policy{Kind: catalog.PolicyLimit, MaxBackups: 2},
		Period: time.Hour, Active: active.Load, OnRun: func(r GCRun) { runs <- r },
	})
	require.NoError(t, err)
	sched, err := ParseSchedule("@daily")
	require.NoError(t, err)
	runner := &Runner{Store: store, Schedule: sched, Take: func(ctx context.Context) (catalog.Snapshot, error) {
		snap, err := FullFromBackend(ctx, e.Server.Backend(), store)
		if err == nil {
			gc.Trigger()
		}
		return snap, err
	}}
	done := make(chan error)
	go func() { done <- gc.Run(ctx) }()

	next := func() GCRun {
		t.Helper()
		select {
		case r := <-runs:
			return r
		case <-time.After(time.Minute):
			t.Fatal("no garbage collection run")
			return GCRun{}
		}
	}
	// The first run, at start, finds an empty store.
	require.Contains(t, next().Plan.Paused, "no full snapshot")

	cli := v3client.New(e.Server)
	defer cli.Close()
	var taken []catalog.Snapshot
	take := func() {
		t.Helper()
		_, err := cli.Put(ctx, fmt.Sprintf("k%d", len(taken)), "v") // a new revision, a new name
		require.NoError(t, err)
		snap, err := runner.TakeNow(ctx)
		require.NoError(t, err)
		taken = append(taken, snap)
	}
	for i := 1; i <= 4; i++ {
		take()
		r := next()
		require.NoError(t, r.Err)
		require.Equal(t, min(i, 2), r.Plan.KeptFulls)
		require.Equal(t, min(max(i-2, 0), 1), r.Result.DeletedFulls)
		requireFulls(t, store, taken[max(0, i-2):])
	}

	// While another member takes the backups, this one deletes nothing.
	active.Store(false)
	take()
	r := next()
	require.ErrorIs(t, r.Err, ErrSkipped)
	requireFulls(t, store, taken[2:])
	active.Store(true)
	gc.Trigger()
	require.NoError(t, next().Err)
	requireFulls(t, store, taken[3:])

	cancel()
	require.NoError(t, <-done)
}

func requireFulls(t *testing.T, store *snapstore.Store, want []catalog.Snapshot) {
	t.Helper()
	got, err := store.List(context.Background(), catalog.KindFull)
	require.NoError(t, err)
	require.Equal(t, keysOf(want), keysOf(got))
}

func keysOf(snaps []catalog.Snapshot) []string {
	out := make([]string, len(snaps))
	for i, s := range snaps {
		out[i] = s.Key
	}
	return out
}

func TestNewGCRejectsBadPolicy(t *testing.T) {
	_, err := NewGC(GCConfig{Store: memStore(t), Policy: catalog.Policy{Kind: catalog.PolicyLimit}})
	require.ErrorContains(t, err, "keep at least 1 full snapshot")
	_, err = NewGC(GCConfig{Policy: catalog.Policy{Kind: catalog.PolicyExponential}})
	require.True(t, err != nil && !errors.Is(err, ErrSkipped))
}
