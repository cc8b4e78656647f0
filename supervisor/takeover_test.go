package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/etcdbr/etcdbr/embedded/datadir"
	"github.com/etcdbr/etcdbr/snapstore"
)

func TestDecideTakeover(t *testing.T) {
	t.Parallel()
	const a = "aaaaaaaaaaaaaaaa"
	t0 := time.Date(2026, 12, 7, 6, 0, 0, 0, time.UTC)
	rec := func(mod time.Time, after, refresh time.Duration) *snapstore.AliveRecord {
		return &snapstore.AliveRecord{ClusterID: a, Member: "m1", Written: mod.Add(-time.Second), ModTime: mod,
			TakeoverAfter: snapstore.Duration(after), Refresh: snapstore.Duration(refresh)}
	}
	fresh := rec(t0, 10*time.Minute, time.Minute)                    // written just before the first read
	old := rec(t0.Add(-20*time.Minute), 10*time.Minute, time.Minute) // written long before it
	rewritten := rec(t0.Add(time.Minute), 10*time.Minute, time.Minute)
	sameWriteOtherContent := *fresh
	sameWriteOtherContent.Written = fresh.Written.Add(time.Millisecond) // coarse store times (S3): the content tells
	ahead := rec(t0.Add(5*time.Minute), 10*time.Minute, time.Minute)    // this machine's clock behind the store's
	noRefresh := rec(t0.Add(-20*time.Minute), 10*time.Minute, 0)
	at := func(d time.Duration) time.Time { return t0.Add(d) }

	tests := []struct {
		name   string
		f      TakeoverFacts
		take   bool
		again  time.Duration // ReadAgainIn wanted
		reason []string
	}{
		{"no record", TakeoverFacts{Owner: a, FirstAt: t0}, false, 0, []string{a, "records no liveness", "not taken over automatically"}},
		{"takeover off", TakeoverFacts{Owner: a, First: rec(t0, 0, 0), FirstAt: t0}, false, 0, []string{a, "--store-takeover-after 0", "2026-12-07T06:00:00.000Z"}},
		{"fresh, first read: watch", TakeoverFacts{Owner: a, First: fresh, FirstAt: t0}, false, time.Minute, []string{a, "10m0s", "watching", "10m30s"}},
		{"fresh, watched less than the bound", TakeoverFacts{Owner: a, First: fresh, FirstAt: t0, Last: fresh, LastAt: at(10 * time.Minute)}, false, 30 * time.Second, nil},
		{"fresh, watched the bound and half a refresh", TakeoverFacts{Owner: a, First: fresh, FirstAt: t0, Last: fresh, LastAt: at(10*time.Minute + 30*time.Second)}, true, 0,
			[]string{a, "written nothing", "2026-12-07T06:00:00.000Z", "10m0s", `"m1"`, "10m30s"}},
		{"old, first read: watch one refresh and a half", TakeoverFacts{Owner: a, First: old, FirstAt: t0}, false, time.Minute, []string{"1m30s"}},
		{"old, watched one refresh", TakeoverFacts{Owner: a, First: old, FirstAt: t0, Last: old, LastAt: at(time.Minute)}, false, 30 * time.Second, nil},
		{"old, watched one refresh and a half", TakeoverFacts{Owner: a, First: old, FirstAt: t0, Last: old, LastAt: at(90 * time.Second)}, true, 0,
			[]string{"2026-12-07T05:40:00.000Z", "10m0s"}},
		{"record in this machine's future: the full bound", TakeoverFacts{Owner: a, First: ahead, FirstAt: t0, Last: ahead, LastAt: at(10 * time.Minute)}, false, 30 * time.Second, nil},
		{"no refresh recorded: a tenth of the bound", TakeoverFacts{Owner: a, First: noRefresh, FirstAt: t0, Last: noRefresh, LastAt: at(89 * time.Second)}, false, time.Second, nil},
		{"rewritten meanwhile: alive", TakeoverFacts{Owner: a, First: old, FirstAt: t0, Last: rewritten, LastAt: at(time.Minute)}, false, 0,
			[]string{a, "is alive", "2026-12-07T06:01:00.000Z", `"m1"`, "10m0s"}},
		{"rewritten in the same second: alive", TakeoverFacts{Owner: a, First: fresh, FirstAt: t0, Last: &sameWriteOtherContent, LastAt: at(time.Minute)}, false, 0,
			[]string{"is alive"}},
		{"removed meanwhile", TakeoverFacts{Owner: a, First: old, FirstAt: t0, LastAt: at(time.Minute)}, false, 0, []string{a, "removed"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d := DecideTakeover(tt.f)
			assert.Equal(t, tt.take, d.Take, d.Reason)
			assert.Equal(t, tt.again, d.ReadAgainIn, d.Reason)
			assert.NotEmpty(t, d.Reason)
			for _, s := range tt.reason {
				assert.Contains(t, d.Reason, s)
			}
			if tt.f.First != nil {
				assert.Equal(t, time.Duration(tt.f.First.TakeoverAfter), d.After)
				assert.False(t, d.LastWritten.IsZero())
			}
		})
	}
}

// aliveSeq is an aliveReader that answers with records in turn, the last one from then on.
type aliveSeq struct {
	mu    sync.Mutex
	recs  []*snapstore.AliveRecord
	err   error
	reads int
}

func (s *aliveSeq) Alive(_ context.Context, cluster string) (snapstore.AliveRecord, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return snapstore.AliveRecord{}, false, s.err
	}
	r := s.recs[min(s.reads, len(s.recs)-1)]
	s.reads++
	if r == nil {
		return snapstore.AliveRecord{}, false, nil
	}
	return *r, true, nil
}

// TestWatchOwner: the new member reads the owner's record until DecideTakeover decides: it
// takes over a record that stays unchanged, and refuses at the first rewrite.
func TestWatchOwner(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	lg := slog.New(slog.DiscardHandler)
	const a = "aaaaaaaaaaaaaaaa"
	now := time.Now()
	still := &snapstore.AliveRecord{ClusterID: a, ModTime: now.Add(-time.Hour), Written: now.Add(-time.Hour),
		TakeoverAfter: snapstore.Duration(time.Second), Refresh: snapstore.Duration(20 * time.Millisecond)}
	fresh := *still // watched for its whole bound: long enough for the reads below
	fresh.ModTime, fresh.Written = now, now
	moved := fresh
	moved.ModTime, moved.Written = now.Add(time.Millisecond), now.Add(time.Millisecond)

	st := &aliveSeq{recs: []*snapstore.AliveRecord{still}}
	d, err := watchOwner(ctx, st, a, time.Now, lg)
	require.NoError(t, err)
	assert.True(t, d.Take, d.Reason)
	assert.GreaterOrEqual(t, st.reads, 2, "the record was read again before the takeover")

	st = &aliveSeq{recs: []*snapstore.AliveRecord{&fresh, &fresh, &moved}}
	d, err = watchOwner(ctx, st, a, time.Now, lg)
	require.NoError(t, err)
	assert.False(t, d.Take, d.Reason)
	assert.Contains(t, d.Reason, "is alive")
	assert.Equal(t, 3, st.reads)

	st = &aliveSeq{recs: []*snapstore.AliveRecord{nil}}
	d, err = watchOwner(ctx, st, a, time.Now, lg)
	require.NoError(t, err)
	assert.False(t, d.Take)
	assert.Equal(t, 1, st.reads, "no record: decided at once")

	st = &aliveSeq{err: errors.New("store down")}
	_, err = watchOwner(ctx, st, a, time.Now, lg)
	require.ErrorContains(t, err, "store down")

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err = watchOwner(cctx, &aliveSeq{recs: []*snapstore.AliveRecord{still}}, a, time.Now, lg)
	require.ErrorIs(t, err, context.Canceled)
}

// TestHeartbeat: the leader's etcdbr writes its cluster's liveness record with its bound and
// rewrites it while etcd is idle; once another cluster took the store over, the next rewrite
// reads the store's record and stops the delta snapshots: nothing more is uploaded, not even
// a final delta.
func TestHeartbeat(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	l := startLive(t, func(c *Config) { c.TakeoverAfter = 2 * time.Second })
	own := l.s.Status().Etcd.ClusterID
	require.NotEmpty(t, own)
	var first snapstore.AliveRecord
	l.waitFor("the liveness record", func() bool {
		rec, ok, err := l.store.Alive(ctx, own)
		require.NoError(t, err)
		first = rec
		return ok
	})
	assert.Equal(t, snapstore.Duration(2*time.Second), first.TakeoverAfter)
	assert.Equal(t, snapstore.Duration(200*time.Millisecond), first.Refresh)
	assert.Equal(t, l.cfg.Etcd.Name, first.Member)
	l.waitFor("a rewrite of the record while etcd is idle", func() bool {
		rec, ok, err := l.store.Alive(ctx, own)
		require.NoError(t, err)
		return ok && !rec.Same(first)
	})

	resp, err := l.cli.Put(ctx, "before", "1")
	require.NoError(t, err)
	flushed, err := l.s.FlushDeltas(ctx)
	require.NoError(t, err)
	require.GreaterOrEqual(t, flushed.Revision, resp.Header.Revision)

	const other = "1234567890abcdef"
	takerStops := strings.Count(l.log.String(), "delta snapshots stopped")
	require.NoError(t, l.store.ReclaimClusterID(ctx, other, own))
	l.waitFor("the delta taker to stop", func() bool {
		return strings.Count(l.log.String(), "delta snapshots stopped") > takerStops
	})
	assert.Contains(t, l.log.String(), "it was taken over")
	before := storeObjects(t, l.store)
	for i := range 20 {
		_, err := l.cli.Put(ctx, fmt.Sprintf("after-%d", i), "2")
		require.NoError(t, err)
	}
	require.NoError(t, l.stop())
	assert.Equal(t, before, storeObjects(t, l.store), "nothing uploaded into the other cluster's store")
	_, ok, err := l.store.Alive(ctx, other)
	require.NoError(t, err)
	assert.False(t, ok, "the old owner never writes the new owner's liveness record")
}

// TestLookAtOwner: etcdbr validate's one read of the owner's record, asked only for a new
// machine on the store of another cluster.
func TestLookAtOwner(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const a, b = "aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb"
	store, err := snapstore.Open(ctx, "mem://x/", snapstore.Options{})
	require.NoError(t, err)
	defer store.Close()
	missing := datadir.Verdict{State: datadir.StateMissing, Reason: "none"}
	newMachine := StartFacts{Verdict: missing, StoreNewest: 10, StoreCluster: a, NewCluster: b}

	for name, f := range map[string]StartFacts{
		"same cluster":  {Verdict: missing, StoreNewest: 10, StoreCluster: a, NewCluster: a},
		"forced":        {Verdict: missing, StoreNewest: 10, StoreCluster: a, NewCluster: b, ForceRestore: true},
		"several":       {Verdict: missing, StoreNewest: 10, StoreCluster: a, NewCluster: b, Members: 3},
		"a data dir":    {Verdict: datadir.Verdict{State: datadir.StateValid}, StoreNewest: 10, StoreCluster: a, DirCluster: b, NewCluster: b},
		"store of none": {Verdict: missing, StoreNewest: 10, NewCluster: b},
	} {
		_, ok, err := LookAtOwner(ctx, store, f, time.Now())
		require.NoError(t, err, name)
		assert.False(t, ok, name)
	}

	d, ok, err := LookAtOwner(ctx, store, newMachine, time.Now())
	require.NoError(t, err)
	require.True(t, ok)
	assert.False(t, d.Take)
	assert.Zero(t, d.ReadAgainIn)
	assert.Contains(t, d.Reason, "records no liveness")

	require.NoError(t, store.WriteAlive(ctx, snapstore.AliveRecord{ClusterID: a, Written: time.Now(),
		TakeoverAfter: snapstore.Duration(time.Minute), Refresh: snapstore.Duration(6 * time.Second)}))
	d, ok, err = LookAtOwner(ctx, store, newMachine, time.Now())
	require.NoError(t, err)
	require.True(t, ok)
	assert.False(t, d.Take, "one read never takes over")
	assert.Equal(t, 6*time.Second, d.ReadAgainIn)
	assert.Contains(t, d.Reason, "watching")
}
