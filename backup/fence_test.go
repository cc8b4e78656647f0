package backup

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3client"

	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// switchFence is a Fence a test turns: it lets uploads through while open, refuses them
// for good (ErrFenced) once closed, and fails without a verdict (the right not proven) while
// unproven is above 0, counting those down.
type switchFence struct {
	closed   atomic.Bool
	unproven atomic.Int32
	calls    atomic.Int32
}

var errReadTimedOut = errors.New("the linearizable read timed out")

func (f *switchFence) check(context.Context) error {
	f.calls.Add(1)
	switch {
	case f.closed.Load():
		return fmt.Errorf("member 2 leads now: %w", ErrFenced)
	case f.unproven.Add(-1) >= 0:
		return errReadTimedOut
	}
	return nil
}

// runDeltas runs RunDeltas with cfg in a goroutine; waitDone waits for its error.
func runDeltas(t *testing.T, cfg DeltaConfig) (context.CancelCauseFunc, *ranDeltas) {
	ctx, cancel := context.WithCancelCause(context.Background())
	r := &ranDeltas{done: make(chan struct{})}
	go func() {
		r.err = RunDeltas(ctx, cfg)
		close(r.done)
	}()
	t.Cleanup(func() {
		cancel(nil)
		<-r.done
	})
	return cancel, r
}

type ranDeltas struct {
	done chan struct{}
	err  error
}

func waitDone(t *testing.T, r *ranDeltas) error {
	t.Helper()
	select {
	case <-r.done:
		return r.err
	case <-time.After(time.Minute):
		t.Fatal("RunDeltas did not return")
		return nil
	}
}

// A delta whose fence refuses never becomes visible: the taker stops at once, reports it,
// and uploads nothing more, neither the refused range nor anything after it, not even a
// final delta; whether it was fenced during a period's upload or on its final one.
func TestDeltaFenced(t *testing.T) {
	for _, when := range []string{"period", "final"} {
		t.Run(when, func(t *testing.T) {
			e := startEtcd(t)
			cli := inProcess(t, e)
			store := memStore(t)
			log, logs := testLog(t)
			fence := &switchFence{}
			obs := &recorder{}
			cfg := deltaConfig(backendSource, e, cli, store, log)
			cfg.Fence = fence.check
			cfg.Observer = obs
			if when == "final" {
				cfg.Period = time.Hour
			}
			before := chainStarts(logs)
			cancel, done := runDeltas(t, cfg)
			waitFor(t, "the delta chain to start", func() bool { return chainStarts(logs) > before })

			want := newLeaseWant()
			first := revisionOf(t, cli) + 1
			last := churn(t, cli, "/a", 20, want)
			if when == "period" {
				waitFor(t, "the deltas up to the writes", func() bool { return newestDelta(t, store) >= last })
				checkChain(t, store, cli, first, last, *want)
				require.Positive(t, fence.calls.Load(), "every delta is fenced")
			}
			stored := keys(listKind(t, store, catalog.KindDelta))

			fence.closed.Store(true)
			churn(t, cli, "/b", 20, want)
			if when == "final" {
				cancel(nil) // a stop: the final delta would hold every write
			}
			err := waitDone(t, done)
			require.ErrorIs(t, err, ErrFenced)
			assert.Equal(t, stored, keys(listKind(t, store, catalog.KindDelta)), "nothing was uploaded once fenced")
			assert.Contains(t, logs.String(), "delta upload fenced")
			_, failures, _ := obs.snapshot()
			assert.Empty(t, failures, "a fenced upload is no failure to retry")
			obs.mu.Lock()
			assert.Equal(t, []catalog.Kind{catalog.KindDelta}, obs.fenced)
			obs.mu.Unlock()
		})
	}
}

// A fence that cannot give a verdict (etcd did not serve the read) fails the upload, which
// is retried with the same range and lands once the fence proves the right again.
func TestDeltaFenceUnproven(t *testing.T) {
	e := startEtcd(t)
	cli := inProcess(t, e)
	store := memStore(t)
	log, logs := testLog(t)
	fence := &switchFence{}
	fence.unproven.Store(2)
	obs := &recorder{}
	cfg := deltaConfig(backendSource, e, cli, store, log)
	cfg.Fence = fence.check
	cfg.Observer = obs
	startDeltasReady(t, cfg, logs)

	want := newLeaseWant()
	first := revisionOf(t, cli) + 1
	last := churn(t, cli, "/a", 20, want)
	waitFor(t, "the deltas up to the writes", func() bool { return newestDelta(t, store) >= last })
	checkChain(t, store, cli, first, last, *want)
	_, failures, _ := obs.snapshot()
	require.Len(t, failures, 2)
	for _, f := range failures {
		assert.Equal(t, ReasonEtcd, f.Reason)
		assert.ErrorIs(t, f.Err, errReadTimedOut)
	}
	assert.Empty(t, obs.fenced)
}

// A full snapshot whose fence refuses never becomes visible, and the runner neither retries
// it nor counts it as a failure.
func TestFullFenced(t *testing.T) {
	e := startEtcd(t)
	store := memStore(t)
	ctx := context.Background()
	fence := &switchFence{}
	fence.closed.Store(true)
	_, err := FullFromBackendFenced(ctx, e.Server.Backend(), store, fence.check)
	require.ErrorIs(t, err, ErrFenced)
	assert.Empty(t, listKind(t, store, catalog.KindFull))

	obs := &recorder{}
	log, logs := testLog(t)
	var takes atomic.Int32
	sched, err := ParseSchedule("@daily")
	require.NoError(t, err)
	r := &Runner{Store: store, Schedule: sched, Log: log, Observer: obs, RetryMin: time.Millisecond, RetryMax: time.Millisecond,
		Take: func(ctx context.Context) (catalog.Snapshot, error) {
			takes.Add(1)
			return FullFromBackendFenced(ctx, e.Server.Backend(), store, fence.check)
		}}
	r.takeWithRetry(ctx, "startup")
	assert.Equal(t, int32(1), takes.Load(), "not retried")
	assert.Empty(t, listKind(t, store, catalog.KindFull))
	_, failures, _ := obs.snapshot()
	assert.Empty(t, failures)
	assert.Equal(t, []catalog.Kind{catalog.KindFull}, obs.fenced)
	assert.Contains(t, logs.String(), "full snapshot fenced")

	fence.closed.Store(false)
	snap, err := FullFromBackendFenced(ctx, e.Server.Backend(), store, fence.check)
	require.NoError(t, err)
	assert.Equal(t, []string{snap.Key}, keys(listKind(t, store, catalog.KindFull)))
}

// Garbage collection whose fence refuses deletes nothing.
func TestGCFenced(t *testing.T) {
	e := startEtcd(t)
	cli := v3client.New(e.Server)
	defer cli.Close()
	store := memStore(t)
	ctx := context.Background()
	for i := range 3 {
		_, err := cli.Put(ctx, "k", fmt.Sprint(i))
		require.NoError(t, err)
		_, err = FullFromBackend(ctx, e.Server.Backend(), store)
		require.NoError(t, err)
	}
	before := keys(listKind(t, store, catalog.KindFull))
	log, logs := testLog(t)
	fence := &switchFence{}
	fence.closed.Store(true)
	gc, err := NewGC(GCConfig{Store: store, Policy: catalog.Policy{Kind: catalog.PolicyLimit, MaxBackups: 1}, Fence: fence.check, Log: log})
	require.NoError(t, err)
	run, err := gc.RunOnce(ctx)
	require.ErrorIs(t, err, ErrFenced)
	assert.Len(t, run.Plan.Delete, 2)
	assert.Equal(t, before, keys(listKind(t, store, catalog.KindFull)))
	assert.True(t, strings.Contains(logs.String(), "garbage collection fenced"))

	fence.closed.Store(false)
	_, err = gc.RunOnce(ctx)
	require.NoError(t, err)
	assert.Equal(t, before[2:], keys(listKind(t, store, catalog.KindFull)))
}
