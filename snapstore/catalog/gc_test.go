package catalog_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// keysOf returns the objects' keys.
func keysOf(objs []obj) []string {
	out := make([]string, len(objs))
	for i, o := range objs {
		out[i] = o.snap.Key
	}
	return out
}

func TestGCRestoreLocks(t *testing.T) {
	t.Parallel()
	now := ts("2026-11-25T14:30:00Z")
	store := fourHours(keep, drop, drop, keep, drop, drop, keep, keep, keep, keep, keep, keep)
	live := func(id string, keys ...string) catalog.RestoreLock {
		return catalog.RestoreLock{ID: id, Key: "locks/restore-" + id + ".json", ModTime: now.Add(-time.Minute), TTLSeconds: 600, Keys: keys}
	}
	// What the plan must keep, as verdicts for the store's objects in order.
	with := func(verdicts ...bool) []obj {
		out := slices.Clone(store)
		for i := range out {
			out[i].keep = verdicts[i]
		}
		return out
	}
	tests := []struct {
		name   string
		locks  []catalog.RestoreLock
		objs   []obj
		paused string // a substring of Paused; "" when the plan deletes
		stale  int
	}{
		{
			name:  "a restore reading the 11:00 chain keeps it",
			locks: []catalog.RestoreLock{live("a", store[0].snap.Key, store[1].snap.Key, store[2].snap.Key)},
			objs:  with(keep, keep, keep, keep, drop, drop, keep, keep, keep, keep, keep, keep),
		},
		{
			// A lock that names a delta but not the full snapshot it needs (not what etcdbr
			// writes): the delta's chain is kept anyway, so that it is never left without it.
			name:  "a lock on a delta alone keeps its chain",
			locks: []catalog.RestoreLock{live("b", store[5].snap.Key)},
			objs:  with(keep, drop, drop, keep, keep, keep, keep, keep, keep, keep, keep, keep),
		},
		{
			name:   "a restore that is planning stops all deletion",
			locks:  []catalog.RestoreLock{live("c")},
			objs:   with(keep, keep, keep, keep, keep, keep, keep, keep, keep, keep, keep, keep),
			paused: "restore lock c",
		},
		{
			name: "an unreadable lock stops all deletion until it expires",
			locks: []catalog.RestoreLock{{ID: "d", Key: "locks/restore-d.json", ModTime: now.Add(-9 * time.Minute),
				Malformed: "unexpected end of JSON input"}},
			objs:   with(keep, keep, keep, keep, keep, keep, keep, keep, keep, keep, keep, keep),
			paused: "cannot be read",
		},
		{
			name: "an expired lock protects nothing; one dead for over an hour is removed",
			locks: []catalog.RestoreLock{
				{ID: "f", Key: "locks/restore-f.json", ModTime: now.Add(-11 * time.Minute), TTLSeconds: 600, Keys: keysOf(store[:3])},
				{ID: "g", Key: "locks/restore-g.json", ModTime: now.Add(-2 * time.Hour), TTLSeconds: 600},
			},
			objs:  with(keep, drop, drop, keep, drop, drop, keep, keep, keep, keep, keep, keep),
			stale: 1,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := listing(tc.objs)
			l.Locks = tc.locks
			plan, err := catalog.PlanGC(l, exponential, now)
			if err != nil {
				t.Fatal(err)
			}
			checkDecisions(t, plan, tc.objs)
			if tc.paused == "" && plan.Paused != "" || !strings.Contains(plan.Paused, tc.paused) {
				t.Errorf("Paused %q, want %q", plan.Paused, tc.paused)
			}
			if len(plan.StaleLocks) != tc.stale {
				t.Errorf("%d stale locks, want %d", len(plan.StaleLocks), tc.stale)
			}
		})
	}
}

func TestRestoreLockEnd(t *testing.T) {
	t.Parallel()
	written := ts("2026-11-25T14:00:00Z")
	for _, tc := range []struct {
		name string
		lock catalog.RestoreLock
		end  time.Time
	}{
		{"TTL after the store wrote it", catalog.RestoreLock{ModTime: written, Expires: written.Add(10 * time.Minute), TTLSeconds: 600},
			written.Add(10 * time.Minute)},
		{"the holder's later expiry (its clock ahead)", catalog.RestoreLock{ModTime: written, Expires: written.Add(15 * time.Minute), TTLSeconds: 600},
			written.Add(15 * time.Minute)},
		{"at most 2 TTL after the write", catalog.RestoreLock{ModTime: written, Expires: written.Add(24 * time.Hour), TTLSeconds: 600},
			written.Add(20 * time.Minute)},
		{"the holder's earlier expiry (its clock behind) does not shorten it", catalog.RestoreLock{ModTime: written, Expires: written.Add(-time.Hour), TTLSeconds: 600},
			written.Add(10 * time.Minute)},
		{"no TTL: the default", catalog.RestoreLock{ModTime: written}, written.Add(catalog.DefaultLockTTL)},
		{"a TTL above an hour is an hour", catalog.RestoreLock{ModTime: written, TTLSeconds: 86400}, written.Add(time.Hour)},
	} {
		if got := tc.lock.End(); !got.Equal(tc.end) {
			t.Errorf("%s: End %s, want %s", tc.name, got, tc.end)
		}
		if !tc.lock.Live(tc.end.Add(-time.Nanosecond)) || tc.lock.Live(tc.end) {
			t.Errorf("%s: Live does not end at %s", tc.name, tc.end)
		}
	}
}

// A rich store: four days of hourly full snapshots and deltas every ten minutes, the first
// after each full snapshot starting before it, an hour without deltas (a member that was
// idle), and a chain break (a full snapshot after a gap).
func fourDays() (fulls, deltas []catalog.Snapshot) {
	start := ts("2026-11-22T00:00:00Z")
	rev := int64(1)
	for h := 0; h < 4*24+14; h++ {
		hour := start.Add(time.Duration(h) * time.Hour)
		if h == 50 {
			rev += 100 // a gap: the chain broke; the next full snapshot starts a new one
		}
		at := hour.Add(300 * time.Millisecond)
		fulls = append(fulls, catalog.Snapshot{Kind: catalog.KindFull, Revision: rev + 1, Time: at, Key: catalog.FullName(rev+1, at, false)})
		if h == 30 {
			continue // an idle hour
		}
		for m := 10; m <= 60; m += 10 {
			at := hour.Add(time.Duration(m) * time.Minute)
			deltas = append(deltas, catalog.Snapshot{Kind: catalog.KindDelta, From: rev + 1, Revision: rev + 7, Time: at,
				Key: catalog.DeltaName(rev+1, rev+7, at, false)})
			rev += 7
		}
	}
	return fulls, deltas
}

// Whenever a garbage collection run stops (a crash, an error), what is left restores: the
// newest point and the window as before, every kept full snapshot, and every delta left
// still follows its full snapshot without a gap (catalog.CheckChain finds no problem).
func TestGCDeleteOrderSurvivesAnyCrash(t *testing.T) {
	t.Parallel()
	fulls, deltas := fourDays()
	for _, p := range []catalog.Policy{
		exponential,
		{Kind: catalog.PolicyExponential, KeepWithin: 5 * time.Hour},
		{Kind: catalog.PolicyLimit, MaxBackups: 3},
	} {
		plan, err := catalog.PlanGC(catalog.Listing{Fulls: fulls, Deltas: deltas}, p, ts("2026-11-26T13:30:00Z"))
		if err != nil {
			t.Fatal(err)
		}
		if len(plan.Delete) < 100 {
			t.Fatalf("%s: only %d objects to delete", p, len(plan.Delete))
		}
		if problems := crashedRuns(fulls, deltas, plan); len(problems) > 0 {
			t.Errorf("%s: %s", p, strings.Join(problems, "\n"))
		}
	}
	// Deleting the deltas oldest first would leave deltas cut off from their full
	// snapshot: the check sees it.
	plan, err := catalog.PlanGC(catalog.Listing{Fulls: fulls, Deltas: deltas}, exponential, ts("2026-11-26T13:30:00Z"))
	if err != nil {
		t.Fatal(err)
	}
	n := slices.IndexFunc(plan.Delete, func(d catalog.Decision) bool { return d.Snapshot.Kind == catalog.KindFull })
	slices.Reverse(plan.Delete[:n])
	if problems := crashedRuns(fulls, deltas, plan); len(problems) == 0 {
		t.Error("deleting the deltas oldest first left no stranded delta: the check is blind")
	}
}

// crashedRuns checks the store after every prefix of plan.Delete, and returns the problems
// (at most a few).
func crashedRuns(fulls, deltas []catalog.Snapshot, plan catalog.GCPlan) []string {
	var problems []string
	report := func(k int, format string, args ...any) {
		if len(problems) < 5 {
			problems = append(problems, fmt.Sprintf("after %d deletions: ", k)+fmt.Sprintf(format, args...))
		}
	}
	newest, err := catalog.PlanRestore(fulls, deltas, catalog.Target{}, nil)
	if err != nil {
		return []string{"the store does not restore to begin with: " + err.Error()}
	}
	window := catalog.Target{Time: plan.WindowFrom}
	gone := map[string]bool{}
	left := func(snaps []catalog.Snapshot) []catalog.Snapshot {
		return slices.DeleteFunc(slices.Clone(snaps), func(s catalog.Snapshot) bool { return gone[s.Key] })
	}
	baseline := len(catalog.CheckChain(fulls, deltas))
	for k := 0; k <= len(plan.Delete); k++ {
		if k > 0 {
			gone[plan.Delete[k-1].Snapshot.Key] = true
		}
		lf, ld := left(fulls), left(deltas)
		if p, err := catalog.PlanRestore(lf, ld, catalog.Target{}, nil); err != nil || p.Revision != newest.Revision {
			report(k, "the newest point %d restores to %d: %v", newest.Revision, p.Revision, err)
		}
		if p, err := catalog.PlanRestore(lf, ld, window, nil); err != nil || !p.Newest || p.Full.Key != plan.WindowBase.Key {
			report(k, "the window from %s does not restore: %v", plan.WindowFrom, err)
		}
		// The store has one gap of its own (the chain break); any other problem is a delta
		// cut off by the deletions.
		if problems := catalog.CheckChain(lf, ld); len(problems) > baseline {
			report(k, "%d problems: %v", len(problems), problems)
		}
	}
	return problems
}

func TestGCReasons(t *testing.T) {
	t.Parallel()
	fulls, deltas := fourDays()
	plan, err := catalog.PlanGC(catalog.Listing{Fulls: fulls, Deltas: deltas}, exponential, ts("2026-11-26T13:30:00Z"))
	if err != nil {
		t.Fatal(err)
	}
	reasons := map[string]string{}
	for _, d := range slices.Concat(plan.Kept(), plan.Delete) {
		reasons[d.Snapshot.Key] = d.Reason
	}
	key := func(kind catalog.Kind, at string) string {
		for _, s := range slices.Concat(fulls, deltas) {
			if s.Kind == kind && s.Time.Equal(ts(at)) {
				return s.Key
			}
		}
		t.Fatalf("no %s at %s", kind, at)
		return ""
	}
	for _, tc := range []struct{ key, reason string }{
		{key(catalog.KindFull, "2026-11-26T13:00:00.300Z"), "in the point-in-time window from 2026-11-26T13:00:00.000Z"},
		{key(catalog.KindFull, "2026-11-26T12:00:00.300Z"), "a restore to any point from 2026-11-26T13:00:00.000Z on starts from it; the newest full snapshot of hour 2026-11-26 12:00 UTC"},
		{key(catalog.KindDelta, "2026-11-26T12:10:00Z"), "in the point-in-time window"},
		{key(catalog.KindDelta, "2026-11-26T11:10:00Z"), "older than the point-in-time window (from 2026-11-26T13:00:00.000Z, restored from full/"},
		{key(catalog.KindFull, "2026-11-25T23:00:00.300Z"), "the newest full snapshot of day 2026-11-25 (UTC)"},
		{key(catalog.KindFull, "2026-11-25T22:00:00.300Z"), "not the newest full snapshot of day 2026-11-25 (UTC) (" + key(catalog.KindFull, "2026-11-25T23:00:00.300Z") + " is kept)"},
	} {
		if got := reasons[tc.key]; !strings.Contains(got, tc.reason) {
			t.Errorf("%s: reason %q, want %q", tc.key, got, tc.reason)
		}
	}
}

// Objects recorded as damaged are never deleted, and never count as backups: retention
// decides over the others as if the damaged ones were not listed, so that a damaged newest
// full snapshot does not cost the intact chain that still restores the newest point.
func TestGCKeepsDamaged(t *testing.T) {
	t.Parallel()
	now := ts("2026-11-25T14:30:00Z")
	limit1 := catalog.Policy{Kind: catalog.PolicyLimit, MaxBackups: 1}
	tests := []struct {
		name    string
		policy  catalog.Policy
		objs    []obj
		damaged []int // indexes into objs
	}{
		{
			name:   "nothing damaged: limit 1 keeps the newest full snapshot and its deltas",
			policy: limit1,
			objs:   fourHours(drop, drop, drop, drop, drop, drop, drop, drop, drop, keep, keep, keep),
		},
		{
			// Counted as a backup, the damaged 14:00 full snapshot would be the one limit 1
			// keeps, and the 13:00 chain, the only one that restores the newest point, would go.
			name:    "a damaged newest full snapshot: the previous one and its chain stay",
			policy:  limit1,
			objs:    fourHours(drop, drop, drop, drop, drop, drop, keep, keep, keep, keep, keep, keep),
			damaged: []int{9},
		},
		{
			name:    "a damaged delta older than the window stays as evidence",
			policy:  exponential,
			objs:    fourHours(keep, drop, keep, keep, drop, drop, keep, keep, keep, keep, keep, keep),
			damaged: []int{2},
		},
		{
			name:    "every full snapshot damaged: nothing is deleted",
			policy:  limit1,
			objs:    fourHours(keep, keep, keep, keep, keep, keep, keep, keep, keep, keep, keep, keep),
			damaged: []int{0, 3, 6, 9},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := listing(tc.objs)
			damagedKeys := map[string]bool{}
			if len(tc.damaged) > 0 {
				l.Damaged = map[string]catalog.Damage{}
				for _, i := range tc.damaged {
					s := tc.objs[i].snap
					l.Damaged[s.Key] = catalog.Damage{Version: 1, Key: s.Key, Size: s.Size, Found: now.Add(-time.Hour), By: "verify", Reason: "corrupt"}
					damagedKeys[s.Key] = true
				}
			}
			plan, err := catalog.PlanGC(l, tc.policy, now)
			if err != nil {
				t.Fatal(err)
			}
			checkDecisions(t, plan, tc.objs)
			for _, d := range plan.Kept() {
				if damagedKeys[d.Snapshot.Key] && !strings.Contains(d.Reason, "recorded as damaged") {
					t.Errorf("%s kept for %q, want the damage named", d.Snapshot.Key, d.Reason)
				}
			}
			if got, want := plan.KeptFulls+plan.KeptDeltas+len(plan.Delete), len(tc.objs); got != want {
				t.Errorf("kept %d + %d and deleted %d of %d objects", plan.KeptFulls, plan.KeptDeltas, len(plan.Delete), want)
			}
			// The newest point the intact objects restore is restored from what stays.
			var intactF, intactD, keptF, keptD []catalog.Snapshot
			kept := map[string]bool{}
			for _, d := range plan.Kept() {
				kept[d.Snapshot.Key] = true
			}
			for _, o := range tc.objs {
				if damagedKeys[o.snap.Key] {
					continue
				}
				add := func(list *[]catalog.Snapshot) { *list = append(*list, o.snap) }
				if o.snap.Kind == catalog.KindFull {
					add(&intactF)
					if kept[o.snap.Key] {
						add(&keptF)
					}
				} else {
					add(&intactD)
					if kept[o.snap.Key] {
						add(&keptD)
					}
				}
			}
			before, errBefore := catalog.PlanRestore(intactF, intactD, catalog.Target{}, nil)
			after, errAfter := catalog.PlanRestore(keptF, keptD, catalog.Target{}, nil)
			if (errBefore == nil) != (errAfter == nil) || before.Revision != after.Revision {
				t.Errorf("the newest intact point: revision %d (%v) before the deletions, %d (%v) after", before.Revision, errBefore, after.Revision, errAfter)
			}
		})
	}
}
