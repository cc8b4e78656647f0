package catalog

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// t0 is the time of the store's first object; objects are minutes after it.
var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

func at(minute int) time.Time { return t0.Add(time.Duration(minute) * time.Minute) }

func full(rev int64, minute int) Snapshot {
	return Snapshot{Kind: KindFull, Revision: rev, Time: at(minute), Key: FullName(rev, at(minute), false)}
}

func delta(from, to int64, minute int) Snapshot {
	return Snapshot{Kind: KindDelta, From: from, Revision: to, Time: at(minute), Key: DeltaName(from, to, at(minute), false)}
}

// sorted lists snapshots as Store.List returns them.
func sorted(snaps ...Snapshot) []Snapshot {
	out := slices.Clone(snaps)
	slices.SortFunc(out, CompareSnapshots)
	return out
}

func TestPlanRestore(t *testing.T) {
	// A store as a day of backups looks: two fulls, deltas every few minutes, the first
	// delta after each full starting before it.
	f100, f300 := full(100, 0), full(300, 60)
	d1, d2, d3 := delta(90, 150, 10), delta(151, 200, 20), delta(201, 310, 65)
	d4, d5 := delta(311, 400, 70), delta(401, 401, 80)
	day := struct{ fulls, deltas []Snapshot }{sorted(f100, f300), sorted(d1, d2, d3, d4, d5)}

	type plan struct {
		full      Snapshot
		deltas    []Snapshot
		rev, min  int64
		newest    bool
		endsAtGap bool
	}
	tests := []struct {
		name          string
		fulls, deltas []Snapshot
		target        Target
		exclude       []string
		want          plan
		err           []string // substrings of the error; empty: no error
	}{
		// The latest point.
		{name: "latest: the newest full and its deltas", fulls: day.fulls, deltas: day.deltas,
			want: plan{full: f300, deltas: []Snapshot{d3, d4, d5}, rev: 401, min: 401, newest: true}},
		{name: "latest: a full alone", fulls: sorted(f100),
			want: plan{full: f100, rev: 100, min: 100, newest: true}},
		{name: "latest: deltas older than the newest full are not read", fulls: sorted(f100, f300), deltas: sorted(d1, d2),
			want: plan{full: f300, rev: 300, min: 300, newest: true}},
		{name: "latest: the newest full is corrupt, an older one reaches the same point", fulls: day.fulls, deltas: day.deltas,
			exclude: []string{f300.Key},
			want:    plan{full: f100, deltas: []Snapshot{d1, d2, d3, d4, d5}, rev: 401, min: 401, newest: true}},
		{name: "latest: the newest full is corrupt and nothing bridges to it", fulls: day.fulls,
			deltas: sorted(d1, d2, delta(301, 310, 65), d4, d5), exclude: []string{f300.Key},
			err: []string{"after " + d2.Key + " the chain ends at revision 200", "no delta holds revision 201", delta(301, 310, 65).Key,
				"revision 401 cannot be reached", "the newest point this chain reaches is revision 200"}},
		{name: "latest: a gap after the newest full", fulls: day.fulls, deltas: sorted(d3, d5),
			err: []string{"after " + d3.Key + " the chain ends at revision 310", "no delta holds revision 311", d5.Key, "revision 401 cannot be reached"}},
		{name: "latest: the newest delta is corrupt", fulls: day.fulls, deltas: day.deltas, exclude: []string{d5.Key},
			err: []string{d5.Key + " holds revision 401 but failed verification", "revision 401 cannot be reached"}},
		{name: "latest: a corrupt delta has an intact copy", fulls: day.fulls,
			deltas: sorted(d1, d2, d3, d4, delta(311, 400, 71), d5), exclude: []string{d4.Key},
			want: plan{full: f300, deltas: []Snapshot{d3, delta(311, 400, 71), d5}, rev: 401, min: 401, newest: true}},
		{name: "latest: two copies of a delta, the first is used", fulls: day.fulls,
			deltas: sorted(d1, d2, d3, d4, delta(311, 400, 71), d5),
			want:   plan{full: f300, deltas: []Snapshot{d3, d4, d5}, rev: 401, min: 401, newest: true}},
		{name: "no full snapshot", deltas: day.deltas, err: []string{"the store has no full snapshot"}},

		// A revision.
		{name: "revision of a full", fulls: day.fulls, deltas: day.deltas, target: Target{Revision: 300},
			want: plan{full: f300, rev: 300, min: 300}},
		{name: "revision inside a delta", fulls: day.fulls, deltas: day.deltas, target: Target{Revision: 350},
			want: plan{full: f300, deltas: []Snapshot{d3, d4}, rev: 350, min: 350}},
		{name: "revision just after a full, in a delta that starts before it", fulls: day.fulls, deltas: day.deltas, target: Target{Revision: 301},
			want: plan{full: f300, deltas: []Snapshot{d3}, rev: 301, min: 301}},
		{name: "revision at the end of a delta", fulls: day.fulls, deltas: day.deltas, target: Target{Revision: 200},
			want: plan{full: f100, deltas: []Snapshot{d1, d2}, rev: 200, min: 200}},
		{name: "revision between the fulls uses the older one", fulls: day.fulls, deltas: day.deltas, target: Target{Revision: 101},
			want: plan{full: f100, deltas: []Snapshot{d1}, rev: 101, min: 101}},
		{name: "the newest revision", fulls: day.fulls, deltas: day.deltas, target: Target{Revision: 401},
			want: plan{full: f300, deltas: []Snapshot{d3, d4, d5}, rev: 401, min: 401, newest: true}},
		{name: "revision in a gap", fulls: day.fulls, deltas: sorted(d1, d3, d4), target: Target{Revision: 250},
			err: []string{"after " + d1.Key + " the chain ends at revision 150", "no delta holds revision 151", "revision 250 cannot be reached"}},
		{name: "revision before the oldest full", fulls: day.fulls, deltas: day.deltas, target: Target{Revision: 99},
			err: []string{"revision 99 is before the oldest full snapshot, " + f100.Key}},
		{name: "revision after the newest", fulls: day.fulls, deltas: day.deltas, target: Target{Revision: 402},
			err: []string{"revision 402 is not in the store: the newest revision is 401 (" + d5.Key + ")"}},
		{name: "revision whose only full is corrupt", fulls: day.fulls, deltas: day.deltas, target: Target{Revision: 150},
			exclude: []string{f100.Key}, err: []string{"every full snapshot at or before it failed verification (" + f100.Key + ")"}},
		{name: "overlapping deltas on the way", fulls: day.fulls, deltas: sorted(d1, d2, d3, delta(305, 320, 66), d4, d5), target: Target{Revision: 350},
			err: []string{"deltas " + d3.Key + " and " + delta(305, 320, 66).Key + " overlap at revision 305", "cannot both belong to one history"}},
		{name: "overlapping deltas that start together", fulls: day.fulls, deltas: sorted(d1, d2, d3, d4, delta(311, 390, 71), d5),
			err: []string{d4.Key, delta(311, 390, 71).Key, "overlap at revision 311"}},
		{name: "a delta inside one the chain reads", fulls: day.fulls, deltas: sorted(d1, d2, d3, d4, delta(320, 330, 71), d5),
			err: []string{"deltas " + d4.Key + " and " + delta(320, 330, 71).Key + " overlap at revision 320"}},
		{name: "a delta inside one the chain reads, after the target", fulls: day.fulls, deltas: sorted(d1, d2, d3, d4, delta(320, 330, 71), d5),
			target: Target{Revision: 319}, want: plan{full: f300, deltas: []Snapshot{d3, d4}, rev: 319, min: 319}},
		{name: "overlap after the target is not crossed", fulls: day.fulls, deltas: sorted(d1, d2, d3, delta(305, 320, 66), d4, d5), target: Target{Revision: 304},
			want: plan{full: f300, deltas: []Snapshot{d3}, rev: 304, min: 304}},
		{name: "overlap at the target", fulls: day.fulls, deltas: sorted(d1, d2, d3, delta(305, 320, 66), d4, d5), target: Target{Revision: 305},
			err: []string{"overlap at revision 305"}},

		// A time. The chain goes on past the first delta taken after the time, as far as it runs.
		{name: "time between deltas", fulls: day.fulls, deltas: day.deltas, target: Target{Time: at(72)},
			want: plan{full: f300, deltas: []Snapshot{d3, d4, d5}, rev: 401, min: 400, newest: true}},
		{name: "time inside the first delta after a full", fulls: day.fulls, deltas: day.deltas, target: Target{Time: at(62)},
			want: plan{full: f300, deltas: []Snapshot{d3, d4, d5}, rev: 401, min: 300, newest: true}},
		{name: "time of a full", fulls: day.fulls, deltas: day.deltas, target: Target{Time: at(60)},
			want: plan{full: f300, deltas: []Snapshot{d3, d4, d5}, rev: 401, min: 300, newest: true}},
		{name: "time of a delta", fulls: day.fulls, deltas: day.deltas, target: Target{Time: at(20)},
			want: plan{full: f100, deltas: []Snapshot{d1, d2, d3, d4, d5}, rev: 401, min: 200, newest: true}},
		{name: "time before the newest full uses the older one", fulls: day.fulls, deltas: day.deltas, target: Target{Time: at(15)},
			want: plan{full: f100, deltas: []Snapshot{d1, d2, d3, d4, d5}, rev: 401, min: 150, newest: true}},
		{name: "time after everything is the latest point", fulls: day.fulls, deltas: day.deltas, target: Target{Time: at(1000)},
			want: plan{full: f300, deltas: []Snapshot{d3, d4, d5}, rev: 401, min: 401, newest: true}},
		{name: "time after a lone full", fulls: sorted(f100), target: Target{Time: at(30)},
			want: plan{full: f100, rev: 100, min: 100, newest: true}},
		{name: "time before the oldest full", fulls: day.fulls, deltas: day.deltas, target: Target{Time: at(-1)},
			err: []string{"is before the oldest full snapshot, " + f100.Key}},
		{name: "time between fulls without deltas", fulls: day.fulls, target: Target{Time: at(30)},
			err: []string{"after " + f100.Key + " the chain ends at revision 100", "the store holds later revisions"}},
		{name: "time after a gap that the names show was written", fulls: day.fulls, deltas: sorted(d1, delta(170, 200, 20), d3), target: Target{Time: at(30)},
			err: []string{"no delta holds revision 151", "revision 200 was written by then"}},
		{name: "a gap after a delta taken after the time ends the chain", fulls: day.fulls, deltas: sorted(d1, d3, d5), target: Target{Time: at(5)},
			want: plan{full: f100, deltas: []Snapshot{d1}, rev: 150, min: 100, endsAtGap: true}},
		{name: "an overlap after a delta taken after the time ends the chain", fulls: day.fulls, deltas: sorted(d1, d2, delta(180, 250, 25)), target: Target{Time: at(5)},
			want: plan{full: f100, deltas: []Snapshot{d1}, rev: 150, min: 100, endsAtGap: true}},
		{name: "an overlap inside the delta that passes the time", fulls: day.fulls, deltas: sorted(d1, delta(140, 200, 20)), target: Target{Time: at(5)},
			err: []string{"overlap at revision 140"}},
		{name: "an overlap right after the full is an error", fulls: day.fulls, deltas: sorted(d1, delta(95, 200, 20)), target: Target{Time: at(5)},
			err: []string{"overlap at revision 101"}},
		{name: "time whose newest full is corrupt", fulls: day.fulls, deltas: sorted(d1, d2, delta(301, 310, 65), d4, d5),
			target: Target{Time: at(72)}, exclude: []string{f300.Key},
			err: []string{"after " + d2.Key + " the chain ends at revision 200", "revision 400 was written by then"}},

		// Invalid targets.
		{name: "revision and time", fulls: day.fulls, target: Target{Revision: 5, Time: at(1)}, err: []string{"not both"}},
		{name: "negative revision", fulls: day.fulls, target: Target{Revision: -5}, err: []string{"revision -5"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			exclude := map[string]bool{}
			for _, k := range tt.exclude {
				exclude[k] = true
			}
			in := slices.Concat(tt.fulls, tt.deltas)
			p, err := PlanRestore(tt.fulls, tt.deltas, tt.target, exclude)
			assert.Equal(t, slices.Concat(tt.fulls, tt.deltas), in, "the listings are not modified")
			if len(tt.err) > 0 {
				require.Error(t, err)
				for _, s := range tt.err {
					assert.Contains(t, err.Error(), s)
				}
				if !strings.Contains(tt.name, "revision and time") && !strings.Contains(tt.name, "negative") {
					assert.ErrorIs(t, err, ErrNoChain)
				}
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.target, p.Target)
			assert.Equal(t, tt.want.full.Key, p.Full.Key, "full")
			assert.Equal(t, keys(tt.want.deltas), keys(p.Deltas), "deltas")
			assert.Equal(t, tt.want.rev, p.Revision, "revision")
			assert.Equal(t, tt.want.min, p.MinRevision, "min revision")
			assert.Equal(t, tt.want.newest, p.Newest, "newest")
			assert.Equal(t, tt.want.endsAtGap, p.EndsAtGap, "ends at a gap")
			for _, d := range p.Deltas {
				assert.False(t, exclude[d.Key], "an excluded delta is used: %s", d.Key)
			}
		})
	}
}

func TestTargetString(t *testing.T) {
	assert.Equal(t, "the latest point", Target{}.String())
	assert.Equal(t, "revision 7", Target{Revision: 7}.String())
	assert.Equal(t, "time 2026-11-25T10:00:00Z", Target{Time: t0}.String())
	assert.True(t, Target{}.Latest())
	assert.False(t, Target{Revision: 1}.Latest())
	assert.False(t, Target{Time: t0}.Latest())
}

func TestRestorableWindow(t *testing.T) {
	f100, f300, f500 := full(100, 0), full(300, 60), full(500, 120)
	tests := []struct {
		name           string
		fulls, deltas  []Snapshot
		oldest, newest Snapshot
		gaps, pruned   []Gap
		overlaps       []Overlap
	}{
		{name: "empty store"},
		{name: "deltas without a full", deltas: sorted(delta(1, 10, 1), delta(5, 20, 2)),
			overlaps: []Overlap{{A: delta(1, 10, 1).Key, B: delta(5, 20, 2).Key, From: 5, To: 10}}},
		{name: "one full", fulls: sorted(f100), oldest: f100, newest: f100},
		{name: "a full and its deltas", fulls: sorted(f100), deltas: sorted(delta(90, 150, 10), delta(151, 200, 20)),
			oldest: f100, newest: delta(151, 200, 20)},
		{name: "deltas before the oldest full do not count", fulls: sorted(f100), deltas: sorted(delta(10, 50, -5), delta(51, 99, -1)),
			oldest: f100, newest: f100},
		{name: "a chain cut short before a newer full is pruned", fulls: sorted(f100, f300), deltas: sorted(delta(101, 150, 10), delta(290, 320, 65)),
			oldest: f100, newest: delta(290, 320, 65),
			pruned: []Gap{{From: 151, To: 299, After: delta(101, 150, 10).Key, Before: f300.Key}}},
		{name: "retention's holes between kept fulls are pruned", fulls: sorted(f100, f300, f500),
			deltas: sorted(delta(495, 520, 125), delta(521, 530, 126)),
			oldest: f100, newest: delta(521, 530, 126),
			pruned: []Gap{{From: 101, To: 299, After: f100.Key, Before: f300.Key}, {From: 301, To: 499, After: f300.Key, Before: f500.Key}}},
		{name: "a delta that no chain reaches makes a hole a gap", fulls: sorted(f100, f300), deltas: sorted(delta(101, 150, 10), delta(201, 250, 40), delta(290, 320, 65)),
			oldest: f100, newest: delta(290, 320, 65),
			gaps: []Gap{{From: 151, To: 299, After: delta(101, 150, 10).Key, Before: f300.Key}}},
		{name: "a gap after the newest full", fulls: sorted(f100, f300), deltas: sorted(delta(301, 320, 65), delta(331, 340, 70), delta(341, 350, 75)),
			oldest: f100, newest: delta(301, 320, 65),
			pruned: []Gap{{From: 101, To: 299, After: f100.Key, Before: f300.Key}},
			gaps:   []Gap{{From: 321, To: 350, After: delta(301, 320, 65).Key, Before: delta(331, 340, 70).Key}}},
		{name: "fulls inside a chain are no gap", fulls: sorted(f100, f300, f500), deltas: sorted(delta(101, 400, 70), delta(401, 600, 130)),
			oldest: f100, newest: delta(401, 600, 130)},
		{name: "copies of a delta are no overlap", fulls: sorted(f100), deltas: sorted(delta(101, 200, 10), delta(101, 200, 11), delta(201, 250, 20)),
			oldest: f100, newest: delta(201, 250, 20)},
		{name: "an overlap is listed", fulls: sorted(f100), deltas: sorted(delta(101, 200, 10), delta(150, 260, 20), delta(190, 195, 21)),
			oldest: f100, newest: delta(150, 260, 20),
			overlaps: []Overlap{
				{A: delta(101, 200, 10).Key, B: delta(150, 260, 20).Key, From: 150, To: 200},
				{A: delta(150, 260, 20).Key, B: delta(190, 195, 21).Key, From: 190, To: 195},
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := RestorableWindow(tt.fulls, tt.deltas)
			point := func(s Snapshot) Point {
				if s.Key == "" {
					return Point{}
				}
				return Point{Revision: s.Revision, Time: s.Time, Key: s.Key}
			}
			assert.Equal(t, point(tt.oldest), w.Oldest, "oldest")
			assert.Equal(t, point(tt.newest), w.Newest, "newest")
			assert.Equal(t, tt.gaps, w.Gaps, "gaps")
			assert.Equal(t, tt.pruned, w.Pruned, "pruned")
			assert.Equal(t, tt.overlaps, w.Overlaps, "overlaps")
		})
	}
}

// The window and the planner agree: every revision in the window outside its gaps can be
// planned, and none in a gap or outside the window can.
func TestRestorableWindowMatchesPlans(t *testing.T) {
	fulls := sorted(full(100, 0), full(300, 60), full(500, 120))
	deltas := sorted(delta(90, 150, 10), delta(151, 200, 20), delta(290, 320, 65), delta(331, 340, 70), delta(495, 520, 125))
	w := RestorableWindow(fulls, deltas)
	require.NotEmpty(t, w.Gaps)
	require.NotEmpty(t, w.Pruned)
	inGap := func(rev int64) bool {
		for _, g := range slices.Concat(w.Gaps, w.Pruned) {
			if g.From <= rev && rev <= g.To {
				return true
			}
		}
		return false
	}
	for rev := int64(1); rev <= 530; rev++ {
		_, err := PlanRestore(fulls, deltas, Target{Revision: rev}, nil)
		restorable := rev >= w.Oldest.Revision && rev <= w.Newest.Revision && !inGap(rev)
		assert.Equal(t, restorable, err == nil, "revision %d: %v", rev, err)
	}
}

// keys returns the keys of snaps.
func keys(snaps []Snapshot) []string {
	var out []string
	for _, s := range snaps {
		out = append(out, s.Key)
	}
	return out
}

// GoalRevision counts from names what a restore must reach: the revision asked for, the
// newest revision written by a time, the newest revision in the store.
func TestGoalRevision(t *testing.T) {
	fulls := []Snapshot{full(100, 0), full(200, 60)}
	deltas := []Snapshot{delta(101, 150, 30), delta(151, 250, 90)}
	for _, tc := range []struct {
		target Target
		want   int64
	}{
		{Target{}, 250},
		{Target{Revision: 120}, 120},
		{Target{Time: at(45)}, 150},
		{Target{Time: at(60)}, 200},
		{Target{Time: at(-1)}, 0},
	} {
		if got := GoalRevision(fulls, deltas, tc.target); got != tc.want {
			t.Errorf("GoalRevision(%s) = %d, want %d", tc.target, got, tc.want)
		}
	}
}
