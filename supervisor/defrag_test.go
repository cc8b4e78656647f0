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

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/etcdbr/etcdbr/backup"
	"github.com/etcdbr/etcdbr/internal/embeddedtest"
)

const mib = 1 << 20

// healthy3 is a cluster of three started voters led by member 1 (this member, "a"), every
// one caught up, with the given db sizes and bytes in use (MiB).
func healthy3(sizes ...[2]int64) defragView {
	v := defragView{Self: 1, Leader: 1}
	for i, name := range []string{"a", "b", "c"} {
		m := defragMember{ID: uint64(i + 1), Name: name, Answered: true, Leader: 1, Committed: 5000, Applied: 5000,
			DBSize: 10 * mib, DBInUse: 9 * mib}
		if i < len(sizes) {
			m.DBSize, m.DBInUse = sizes[i][0]*mib, sizes[i][1]*mib
		}
		v.Members = append(v.Members, m)
	}
	return v
}

func TestDecideDefrag(t *testing.T) {
	cfg := DefragConfig{MinFree: 100 * mib, MinFreeRatio: 0.5}
	now := time.Date(2026, 12, 7, 3, 0, 0, 0, time.UTC)
	with := func(v defragView, f func(v *defragView)) defragView {
		v.Members = append([]defragMember(nil), v.Members...)
		f(&v)
		return v
	}
	fragmented := healthy3([2]int64{400, 100}, [2]int64{400, 100}, [2]int64{400, 100})
	for _, tc := range []struct {
		name      string
		v         defragView
		cfg       DefragConfig
		round     map[uint64]bool
		notBefore map[uint64]time.Time
		inUse     map[uint64]int64 // at the previous check (nil: as now)
		kind      defragStepKind
		member    string // the member of a run or a skip
		skip      string
		why       string // a part of Why
	}{
		{name: "nothing fragmented", v: healthy3(), kind: defragNone},
		{name: "a follower over the threshold", v: healthy3([2]int64{10, 9}, [2]int64{10, 9}, [2]int64{300, 100}),
			kind: defragRun, member: "c", why: "209715200 of 314572800 bytes free (67%"},
		{name: "free space over the bytes but under the ratio", v: healthy3([2]int64{10, 9}, [2]int64{300, 180}),
			kind: defragNone},
		{name: "free space over the ratio but under the bytes", v: healthy3([2]int64{10, 9}, [2]int64{90, 10}),
			kind: defragNone},
		{name: "exactly at the threshold", v: healthy3([2]int64{10, 9}, [2]int64{200, 100}), kind: defragRun, member: "b"},
		{name: "every member fragmented: followers first, by name", v: fragmented, kind: defragRun, member: "b"},
		{name: "the followers done: the leader last", v: healthy3([2]int64{400, 100}), kind: defragRun, member: "a"},
		{name: "a scheduled round takes members under the threshold", v: healthy3(), round: map[uint64]bool{1: true, 3: true},
			kind: defragRun, member: "c", why: "schedule fired"},
		{name: "a scheduled round: the leader last", v: healthy3(), round: map[uint64]bool{1: true}, kind: defragRun, member: "a"},
		{name: "a member held back after a failure", v: fragmented, notBefore: map[uint64]time.Time{2: now.Add(time.Minute)},
			kind: defragRun, member: "c"},
		{name: "a hold that passed", v: fragmented, notBefore: map[uint64]time.Time{2: now.Add(-time.Second)},
			kind: defragRun, member: "b"},
		{name: "not the leader", v: with(fragmented, func(v *defragView) { v.Leader = 2 }), kind: defragNone},
		{name: "no leader", v: with(fragmented, func(v *defragView) { v.Leader = 0 }), kind: defragNone},
		{name: "a restore runs", v: with(fragmented, func(v *defragView) { v.Restoring = true }),
			kind: defragSkip, member: "b", skip: defragSkipRestore},
		{name: "a learner", v: with(fragmented, func(v *defragView) { v.Members[2].Learner = true }),
			kind: defragSkip, member: "b", skip: defragSkipMembership, why: "c is a learner"},
		{name: "a member added that never started",
			v:    with(fragmented, func(v *defragView) { v.Members = append(v.Members, defragMember{ID: 9, Err: "no client URL"}) }),
			kind: defragSkip, member: "b", skip: defragSkipMembership, why: "(unstarted 9) was added and never started"},
		{name: "a member down", v: with(fragmented, func(v *defragView) {
			v.Members[2] = defragMember{ID: 3, Name: "c", Err: "context deadline exceeded"}
		}), kind: defragSkip, member: "b", skip: defragSkipUnhealthy, why: "c does not answer (context deadline exceeded)"},
		{name: "the down member alone is fragmented: nothing is due", v: with(healthy3(), func(v *defragView) {
			v.Members[2] = defragMember{ID: 3, Name: "c", Err: "connection refused"}
		}), kind: defragNone},
		{name: "a member answers with an error", v: with(fragmented, func(v *defragView) { v.Members[1].Err = "permission denied" }),
			kind: defragSkip, member: "c", skip: defragSkipUnhealthy, why: "b answers with an error"},
		{name: "a member knows no leader", v: with(fragmented, func(v *defragView) { v.Members[2].Leader = 0 }),
			kind: defragSkip, member: "b", skip: defragSkipUnhealthy, why: "c knows no leader"},
		{name: "a member names another leader", v: with(fragmented, func(v *defragView) { v.Members[2].Leader = 3 }),
			kind: defragSkip, member: "b", skip: defragSkipUnhealthy, why: "c names another leader"},
		{name: "a member behind", v: with(fragmented, func(v *defragView) { v.Members[2].Applied = 5000 - maxLagEntries - 1 }),
			kind: defragSkip, member: "b", skip: defragSkipUnhealthy, why: "c is behind (1001 entries)"},
		{name: "a member just within the lag", v: with(fragmented, func(v *defragView) { v.Members[2].Applied = 5000 - maxLagEntries }),
			kind: defragRun, member: "b"},
		{name: "this member snapshotting: a follower goes ahead", v: with(fragmented, func(v *defragView) { v.Snapshotting = true }),
			kind: defragRun, member: "b"},
		{name: "this member snapshotting and next", v: with(healthy3([2]int64{400, 100}), func(v *defragView) { v.Snapshotting = true }),
			kind: defragSkip, member: "a", skip: defragSkipSnapshot},
		{name: "in use shrinking: etcd's compaction is under way", v: healthy3([2]int64{10, 9}, [2]int64{400, 100}),
			inUse: map[uint64]int64{1: 9 * mib, 2: 200 * mib}, kind: defragNone},
		{name: "in use shrinking by less than 1% of the db", v: healthy3([2]int64{10, 9}, [2]int64{400, 100}),
			inUse: map[uint64]int64{1: 9 * mib, 2: 104 * mib}, kind: defragRun, member: "b"},
		{name: "in use growing", v: healthy3([2]int64{10, 9}, [2]int64{400, 100}),
			inUse: map[uint64]int64{1: 9 * mib, 2: 50 * mib}, kind: defragRun, member: "b"},
		{name: "the leader due, its followers not compacted yet: it waits", v: healthy3([2]int64{400, 100}, [2]int64{400, 390}, [2]int64{400, 390}),
			kind: defragNone},
		{name: "the leader due, its followers compacting: it waits", v: healthy3([2]int64{400, 100}, [2]int64{400, 130}, [2]int64{400, 130}),
			inUse: map[uint64]int64{1: 100 * mib, 2: 390 * mib, 3: 390 * mib}, kind: defragNone},
		{name: "the leader due, a follower holding a little more in use", v: healthy3([2]int64{400, 100}, [2]int64{200, 139}, [2]int64{10, 9}),
			kind: defragRun, member: "a"},
		{name: "a member not seen at the previous check", v: healthy3([2]int64{10, 9}, [2]int64{400, 100}),
			inUse: map[uint64]int64{1: 9 * mib}, kind: defragNone},
		{name: "a scheduled round does not wait for in use to settle", v: healthy3(), round: map[uint64]bool{2: true},
			inUse: map[uint64]int64{}, kind: defragRun, member: "b"},
		{name: "a single member", v: defragView{Self: 7, Leader: 7, Members: []defragMember{{ID: 7, Name: "solo", Answered: true, Leader: 7,
			DBSize: 1024 * mib, DBInUse: 100 * mib}}}, kind: defragRun, member: "solo"},
		{name: "the threshold in bytes alone", cfg: DefragConfig{MinFree: 50 * mib}, v: healthy3([2]int64{10, 9}, [2]int64{1000, 940}),
			kind: defragRun, member: "b"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := cfg
			if tc.cfg != (DefragConfig{}) {
				c = tc.cfg
			}
			mem := defragMemory{Round: tc.round, NotBefore: tc.notBefore, InUse: map[uint64]int64{}}
			for _, m := range tc.v.Members {
				mem.InUse[m.ID] = m.DBInUse // settled: the same as at the previous check
			}
			if tc.inUse != nil {
				mem.InUse = tc.inUse
			}
			step := decideDefrag(tc.v, c, mem, now)
			require.Equal(t, tc.kind, step.Kind, "step: %+v", step)
			if tc.member != "" {
				require.Equal(t, tc.member, step.Member.Name, "step: %+v", step)
				require.Equal(t, step.Member.ID == tc.v.Leader, step.Leader)
			}
			require.Equal(t, tc.skip, step.Skip)
			require.Contains(t, step.Why, tc.why)
		})
	}
}

func TestDefragConfigValidate(t *testing.T) {
	require.NoError(t, DefaultDefragConfig().Validate())
	require.NoError(t, DefragConfig{MinFreeRatio: 0.2}.Validate())
	for _, c := range []DefragConfig{{MinFree: -1, MinFreeRatio: 0.5}, {MinFree: 1, MinFreeRatio: 1.5}, {MinFree: 1, MinFreeRatio: -0.1}, {},
		{MinFree: 1, Period: -time.Second}} {
		require.Error(t, c.Validate(), "%+v", c)
	}
}

// fakeDefragCluster is a defragCluster of members in memory: a defrag shrinks the member's
// db to what it holds; after it, the member is behind for lagLooks views (it catches up
// only then). It records every defrag's interval, and fails the members in fail.
type fakeDefragCluster struct {
	mu       sync.Mutex
	v        defragView
	fail     map[uint64]bool
	lagLooks int
	behind   map[uint64]int // views left until the member caught up
	clock    time.Time
	defrags  []fakeDefrag
	running  int
	overlap  bool
}

type fakeDefrag struct {
	name              string
	started, ended    time.Time
	caughtUpAtNextRun bool
}

func (f *fakeDefragCluster) now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.clock = f.clock.Add(time.Millisecond)
	return f.clock
}

func (f *fakeDefragCluster) view(context.Context) (defragView, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v := f.v
	v.Members = append([]defragMember(nil), f.v.Members...)
	for i, m := range v.Members {
		if f.behind[m.ID] > 0 {
			f.behind[m.ID]--
			v.Members[i].Applied = 0
		}
	}
	return v, nil
}

func (f *fakeDefragCluster) defragment(_ context.Context, id uint64) error {
	f.mu.Lock()
	f.running++
	if f.running > 1 {
		f.overlap = true
	}
	f.clock = f.clock.Add(time.Second)
	started := f.clock
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.running--
		f.mu.Unlock()
	}()
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, m := range f.v.Members {
		if m.ID != id {
			continue
		}
		if f.fail[id] {
			return errors.New("etcdserver: request timed out")
		}
		// Every earlier defrag's member must have caught up before this one began.
		for _, d := range f.defrags {
			if !d.caughtUpAtNextRun {
				return fmt.Errorf("%s began before %s caught up", m.Name, d.name)
			}
		}
		f.v.Members[i].DBSize = m.DBInUse
		f.clock = f.clock.Add(time.Second)
		f.defrags = append(f.defrags, fakeDefrag{name: m.Name, started: started, ended: f.clock})
		if f.behind == nil {
			f.behind = map[uint64]int{}
		}
		f.behind[id] = f.lagLooks
		return nil
	}
	return fmt.Errorf("member %x is no longer in the cluster", id)
}

// markCaughtUp records, before each defrag, that the earlier ones caught up (the fake's
// behind counters ran out).
func (f *fakeDefragCluster) markCaughtUp() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range f.defrags {
		if id := f.idOf(f.defrags[i].name); f.behind[id] == 0 {
			f.defrags[i].caughtUpAtNextRun = true
		}
	}
}

func (f *fakeDefragCluster) idOf(name string) uint64 {
	for _, m := range f.v.Members {
		if m.Name == name {
			return m.ID
		}
	}
	return 0
}

// caughtUpCluster wraps the fake so that markCaughtUp runs at every view.
type caughtUpCluster struct{ *fakeDefragCluster }

func (c caughtUpCluster) view(ctx context.Context) (defragView, error) {
	v, err := c.fakeDefragCluster.view(ctx)
	c.markCaughtUp()
	return v, err
}

var _ defragCluster = caughtUpCluster{}

func newTestDefragger(t *testing.T, f *fakeDefragCluster, cfg DefragConfig, hold tryLocker) (*defragger, *embeddedtest.SyncBuffer, *defragMetrics) {
	t.Helper()
	logs := &embeddedtest.SyncBuffer{}
	m := newDefragMetrics(prometheus.NewRegistry())
	d := newDefragger(cfg, caughtUpCluster{f}, hold, m, slog.New(slog.NewTextHandler(logs, nil)))
	d.now, d.poll = f.now, 0
	return d, logs, m
}

// TestDefraggerRolls: one check defragments every member due, followers first and the
// leader last, each after the one before it caught up, one at a time; the log line of each
// says its sizes; the metrics count them.
func TestDefraggerRolls(t *testing.T) {
	f := &fakeDefragCluster{v: healthy3([2]int64{400, 100}, [2]int64{300, 50}, [2]int64{500, 100}), lagLooks: 3,
		clock: time.Date(2026, 12, 7, 3, 0, 0, 0, time.UTC)}
	var hold sync.RWMutex
	d, logs, m := newTestDefragger(t, f, DefragConfig{MinFree: 100 * mib, MinFreeRatio: 0.5, Period: time.Hour}, &hold)
	d.check(context.Background())
	require.Empty(t, f.defrags, "the first check only sees how much each member holds")
	d.check(context.Background())
	var order []string
	for i, df := range f.defrags {
		order = append(order, df.name)
		if i > 0 {
			require.False(t, df.started.Before(f.defrags[i-1].ended), "%s began before %s ended", df.name, f.defrags[i-1].name)
		}
	}
	require.Equal(t, []string{"b", "c", "a"}, order)
	require.False(t, f.overlap)
	require.Equal(t, 3.0, testutil.ToFloat64(m.defrags.WithLabelValues("succeeded")))
	require.Equal(t, float64((300+250+400)*mib), testutil.ToFloat64(m.reclaimed))
	require.Equal(t, 3, strings.Count(logs.String(), "msg=\"member defragmented\""), logs.String())
	require.Contains(t, logs.String(), "member=a role=leader size_before=419430400 size_after=104857600")
	require.Contains(t, logs.String(), "member=b role=follower size_before=314572800 size_after=52428800")
	require.True(t, hold.TryLock(), "the hold was released")

	// Nothing due any more: the next check does nothing.
	d.check(context.Background())
	require.Len(t, f.defrags, 3)
}

// TestDefraggerSkips: a member down holds every defrag back, once logged with the reason,
// counted at every check; a full snapshot of this member holds back its own defrag only.
func TestDefraggerSkips(t *testing.T) {
	f := &fakeDefragCluster{v: healthy3([2]int64{400, 100}, [2]int64{400, 100}, [2]int64{400, 100}),
		clock: time.Date(2026, 12, 7, 3, 0, 0, 0, time.UTC)}
	f.v.Members[2] = defragMember{ID: 3, Name: "c", Err: "connection refused"}
	var hold sync.RWMutex
	d, logs, m := newTestDefragger(t, f, DefragConfig{MinFree: 100 * mib, MinFreeRatio: 0.5}, &hold)
	d.check(context.Background()) // sees how much each member holds
	d.check(context.Background())
	d.check(context.Background())
	require.Empty(t, f.defrags)
	require.Equal(t, 2.0, testutil.ToFloat64(m.skipped.WithLabelValues(defragSkipUnhealthy)))
	require.Equal(t, 1, strings.Count(logs.String(), "defragmentation skipped"), logs.String())
	require.Contains(t, logs.String(), `reason=unhealthy member=b why="b is due`)

	// c back: b and c go; a full snapshot of this member (the leader) is being read, so a waits.
	f.mu.Lock()
	f.v.Members[2] = defragMember{ID: 3, Name: "c", Answered: true, Leader: 1, Committed: 5000, Applied: 5000, DBSize: 400 * mib, DBInUse: 100 * mib}
	f.mu.Unlock()
	hold.RLock()
	d.check(context.Background())
	require.Len(t, f.defrags, 2)
	require.Equal(t, 1.0, testutil.ToFloat64(m.skipped.WithLabelValues(defragSkipSnapshot)))
	require.Contains(t, logs.String(), "reason=snapshot member=a")
	hold.RUnlock()
	d.check(context.Background())
	require.Len(t, f.defrags, 3)
	require.Equal(t, "a", f.defrags[2].name)
}

// TestDefraggerFailureBacksOff: a failed defrag is counted, logged, and holds that member
// back for the backoff; the others are not held back by it at the next check.
func TestDefraggerFailureBacksOff(t *testing.T) {
	f := &fakeDefragCluster{v: healthy3([2]int64{10, 9}, [2]int64{400, 100}, [2]int64{400, 100}), fail: map[uint64]bool{2: true},
		clock: time.Date(2026, 12, 7, 3, 0, 0, 0, time.UTC)}
	var hold sync.RWMutex
	d, logs, m := newTestDefragger(t, f, DefragConfig{MinFree: 100 * mib, MinFreeRatio: 0.5}, &hold)
	var failed []error
	d.failed = func(err error) { failed = append(failed, err) }
	d.check(context.Background()) // sees how much each member holds
	d.check(context.Background())
	require.Empty(t, f.defrags)
	require.Len(t, failed, 1)
	require.Equal(t, 1.0, testutil.ToFloat64(m.defrags.WithLabelValues("failed")))
	require.Contains(t, logs.String(), "defragmentation of a member failed")
	require.Contains(t, logs.String(), "next_try_in=5m0s")
	d.check(context.Background())
	require.Len(t, f.defrags, 1)
	require.Equal(t, "c", f.defrags[0].name)
}

// TestDefraggerSchedule: the schedule fires a round of every member, whatever its free
// space, followers first; a check before it fires does nothing.
func TestDefraggerSchedule(t *testing.T) {
	sched, err := backup.ParseSchedule("@every 1h")
	require.NoError(t, err)
	f := &fakeDefragCluster{v: healthy3(), clock: time.Date(2026, 12, 7, 3, 0, 0, 0, time.UTC)}
	var hold sync.RWMutex
	d, logs, _ := newTestDefragger(t, f, DefragConfig{MinFree: 100 * mib, MinFreeRatio: 0.5, Schedule: &sched}, &hold)
	d.check(context.Background())
	require.Empty(t, f.defrags)
	f.mu.Lock()
	f.clock = f.clock.Add(time.Hour)
	f.mu.Unlock()
	d.check(context.Background())
	var order []string
	for _, df := range f.defrags {
		order = append(order, df.name)
	}
	require.Equal(t, []string{"b", "c", "a"}, order)
	require.Contains(t, logs.String(), "the defragmentation schedule fired")
	d.check(context.Background())
	require.Len(t, f.defrags, 3, "the round is done")
}
