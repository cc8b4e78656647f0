package supervisor

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdbr/etcdbr/embedded"
	"github.com/etcdbr/etcdbr/internal/embeddedtest"
	"github.com/etcdbr/etcdbr/internal/etcdtest"
	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// TestFreeze freezes a real etcd through its in-process server and through a client on its
// client URL: every write is refused (put, delete, transaction, lease grant), reads go on and
// hold every write before the freeze, the freeze is not taken for a member's CORRUPT alarm,
// and once it is lifted writes are accepted again.
func TestFreeze(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := embeddedtest.NewConfig(t)
	e, err := embedded.Start(ctx, cfg, nil)
	require.NoError(t, err)
	defer e.Close()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{cfg.ListenClientUrls[0].String()}, DialTimeout: 10 * time.Second})
	require.NoError(t, err)
	defer cli.Close()

	for _, how := range []struct {
		name   string
		freeze func() (int64, error)
		thaw   func() error
	}{
		{"server", func() (int64, error) { return freezeServer(ctx, e.Server()) }, func() error { return thawServer(ctx, e.Server()) }},
		{"client", func() (int64, error) { return FreezeCluster(ctx, cli) }, func() error { return ThawCluster(ctx, cli) }},
	} {
		put, err := cli.Put(ctx, "before/"+how.name, "v")
		require.NoError(t, err)
		rev, err := how.freeze()
		require.NoError(t, err, how.name)
		require.Equal(t, put.Header.Revision, rev, "%s: the frozen revision is the last write's", how.name)
		require.True(t, hasFreeze(e.Server().Alarms()), how.name)
		require.False(t, hasCorruptAlarm(e.Server().Alarms()), "%s: the freeze is not a member's CORRUPT alarm", how.name)
		require.Contains(t, alarmNames(e.Server().Alarms())[0], "freeze", how.name)

		_, err = cli.Put(ctx, "after", "v")
		require.ErrorIs(t, err, rpctypes.ErrCorrupt, "%s: put", how.name)
		_, err = cli.Delete(ctx, "before/"+how.name)
		require.ErrorIs(t, err, rpctypes.ErrCorrupt, "%s: delete", how.name)
		_, err = cli.Txn(ctx).Then(clientv3.OpPut("after", "v")).Commit()
		require.ErrorIs(t, err, rpctypes.ErrCorrupt, "%s: txn", how.name)
		_, err = cli.Grant(ctx, 60)
		require.ErrorIs(t, err, rpctypes.ErrCorrupt, "%s: lease grant", how.name)
		get, err := cli.Get(ctx, "before/"+how.name)
		require.NoError(t, err, "%s: reads go on", how.name)
		require.Len(t, get.Kvs, 1, how.name)
		require.Equal(t, rev, get.Header.Revision, how.name)

		require.NoError(t, how.thaw(), how.name)
		require.False(t, hasFreeze(e.Server().Alarms()), how.name)
		_, err = cli.Put(ctx, "after/"+how.name, "v")
		require.NoError(t, err, "%s: writes after the freeze is lifted", how.name)
	}
}

// A cluster restore asked of a serving member (what POST /v1/cluster-restore runs) freezes
// the cluster before it records the intent: the intent's point is the frozen revision, which
// holds every acknowledged write, while no write is accepted after it. The freeze is not a
// corruption (no restore with --restore-on-corrupt), and the restored member is not frozen.
func TestClusterRestoreRequestFreezesFirst(t *testing.T) {
	l := startLive(t, func(c *Config) {
		c.RestoreOnCorrupt = true
		c.ClusterRestorePoll = 100 * time.Millisecond
	})
	ctx := context.Background()
	_, err := etcdtest.Workload{Seed: 5, Keys: 100, Overwrites: 30, Deletes: 10, LeasedKeys: 5}.Run(ctx, l.cli)
	require.NoError(t, err)
	want := take(t, l.cli)

	in, err := l.s.RequestClusterRestore(ctx, catalog.Target{}, "test")
	require.NoError(t, err)
	require.Equal(t, want.Revision, in.FrozenRevision, "frozen at the last write")
	require.Equal(t, want.Revision, in.Revision, "the newest point is the frozen revision: every acknowledged write")
	_, noticed, err := l.store.FreezeNotice(ctx)
	require.NoError(t, err)
	require.False(t, noticed, "the freeze notice is removed once the intent is recorded")
	end := waitIntentEnded(t, l.store, in.ID)
	require.Equal(t, catalog.OutcomeDone, end.Outcome, end.Reason)

	l.waitFor("the restored member to serve", func() bool { return l.s.Status().State == StateServing })
	got := take(t, l.cli)
	got.Revision = want.Revision
	requireSameData(t, want, got)
	alarms, err := l.cli.AlarmList(ctx)
	require.NoError(t, err)
	require.Empty(t, alarms.Alarms, "the restored cluster is not frozen")
	_, err = l.cli.Put(ctx, "/after", "the restored cluster takes writes")
	require.NoError(t, err)
	require.Equal(t, 0.0, testutil.ToFloat64(l.s.metrics.restores.WithLabelValues(TriggerCorrupt, "succeeded")))
	require.Equal(t, 0.0, testutil.ToFloat64(l.s.metrics.restores.WithLabelValues(TriggerCorrupt, "failed")))
}

// waitIntentEnded waits up to 2 minutes for the intent id to end.
func waitIntentEnded(t *testing.T, s *snapstore.Store, id string) catalog.IntentEnd {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		end, ok, err := s.IntentEnd(context.Background(), id)
		require.NoError(t, err)
		if ok {
			return end
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster restore %s did not end within 2 minutes", id)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A restore of the newest point while clients write holds every write etcd acknowledged:
// etcd is frozen before the final delta, so no write is acknowledged that the final delta
// misses; after the restore the member takes writes again.
func TestLiveRestoreKeepsEveryAcknowledgedWrite(t *testing.T) {
	l := startLive(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type ack struct {
		key string
		rev int64
	}
	var (
		mu      sync.Mutex
		acks    []ack
		refused int
	)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				key := fmt.Sprintf("w/%d/%06d", g, i)
				pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
				resp, err := l.cli.Put(pctx, key, "v")
				pcancel()
				mu.Lock()
				if err == nil {
					acks = append(acks, ack{key, resp.Header.Revision})
				} else if ctx.Err() == nil {
					refused++
				}
				mu.Unlock()
				if err != nil {
					time.Sleep(20 * time.Millisecond)
				}
			}
		})
	}
	acked := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acks)
	}
	l.waitFor("writes before the restore", func() bool { return acked() >= 200 })
	st, err := l.s.RequestRestore(ctx, catalog.Target{})
	require.NoError(t, err)
	st, err = l.s.WaitRestore(ctx, st.ID)
	require.NoError(t, err)
	require.Equal(t, string(PhaseSucceeded), st.Phase, st.Error)
	require.Zero(t, st.RevisionBump, "the newest point is every revision etcd served: nothing to bump past")
	after := acked()
	l.waitFor("writes after the restore", func() bool { return acked() >= after+200 })
	cancel()
	wg.Wait()

	got := take(t, l.cli)
	mu.Lock()
	defer mu.Unlock()
	for _, a := range acks {
		kv, ok := got.KVs[a.key]
		require.True(t, ok, "write %s acknowledged at revision %d is lost", a.key, a.rev)
		require.Equal(t, a.rev, kv.ModRevision, a.key)
	}
	t.Logf("%d writes acknowledged, every one kept; %d refused while etcd was frozen or stopped", len(acks), refused)
	alarms, err := l.cli.AlarmList(context.Background())
	require.NoError(t, err)
	require.Empty(t, alarms.Alarms)
}

// A serving member lifts a freeze it finds with no cluster restore active, once no command
// is about to record one (the store's freeze notice), and not before.
func TestFreezeWithoutIntentLifted(t *testing.T) {
	l := startLive(t, func(c *Config) { c.ClusterRestorePoll = 100 * time.Millisecond })
	ctx := context.Background()
	now := time.Now().UTC()
	require.NoError(t, l.store.WriteFreezeNotice(ctx, catalog.FreezeNotice{Version: 1, Created: now, Until: now.Add(time.Hour), By: "test"}))
	n, ok, err := l.store.FreezeNotice(ctx)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, "test", n.By)
	_, err = FreezeCluster(ctx, l.cli)
	require.NoError(t, err)

	// Two looks after the freeze, with the notice: still frozen.
	looked := func() time.Time {
		l.s.mu.Lock()
		defer l.s.mu.Unlock()
		return l.s.intents.read
	}
	frozenAt := time.Now()
	l.waitFor("two looks for a cluster restore", func() bool { return looked().After(frozenAt.Add(200 * time.Millisecond)) })
	_, err = l.cli.Put(ctx, "k", "v")
	require.ErrorIs(t, err, rpctypes.ErrCorrupt, "frozen while a command may record its intent")

	require.NoError(t, l.store.ClearFreezeNotice(ctx))
	_, ok, err = l.store.FreezeNotice(ctx)
	require.NoError(t, err)
	require.False(t, ok)
	l.waitFor("the freeze lifted", func() bool { return !hasFreeze(l.s.etcdServerAlarms()) })
	_, err = l.cli.Put(ctx, "k", "v")
	require.NoError(t, err)
	require.Contains(t, l.log.String(), "the freeze is lifted")
}

// etcdServerAlarms are the serving etcd's alarms (none while it does not serve).
func (s *Supervisor) etcdServerAlarms() []*pb.AlarmMember {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.etcd == nil {
		return nil
	}
	return s.etcd.Server().Alarms()
}
