package catalog_test

import (
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// The simulation runs a member's backups through garbage collection on a fake clock, on
// names only (a year of 10-second deltas is 3 million objects; the store is the listing in
// memory): a full snapshot 200 ms after every hour, a delta every 10 s (a few skipped, as an
// idle member uploads none), garbage collection every minute and after each full snapshot,
// and every fourth day a restore that plans across an hour (when the policy deletes the
// previous hour's chain) and then holds a lock on an older chain for half an hour.
//
// After every garbage collection:
//   - the kept full snapshots must be exactly those the policy promises, computed here
//     independently from the schedule (simOracle), and the oldest delta kept must continue
//     the window's base (or be read by a restore);
//   - nothing a restore in progress reads is deleted, and nothing at all while a restore is
//     still planning;
//   - whenever the kept objects changed other than by deltas appended after the newest
//     revision (garbage collection deleted something, a full snapshot or a lock came or
//     went), every point the policy promises is restored with catalog.PlanRestore: the
//     newest point, every kept full snapshot, and the whole point-in-time window (a restore
//     to its start must chain to the newest revision). Appending deltas after the newest
//     revision cannot change a plan to an earlier point, and a garbage collection that
//     deletes nothing changes nothing. The window that `etcdbr list` shows then has no gap
//     (catalog.RestorableWindow: what garbage collection leaves is pruned, not a gap).

// simConfig is one simulation.
type simConfig struct {
	policy   catalog.Policy
	start    time.Time // a whole hour
	duration time.Duration
	locks    bool // restores hold locks now and then
}

// simStats is what a simulation saw.
type simStats struct {
	steps, gcRuns          int
	deleted                int
	maxObjects             int
	maxFulls, maxDeltas    int
	steadyMin, steadyMax   int // object counts after the first five weeks (or half the run)
	steadySum, steadySteps int
	fullChecks             int
	windowDue              bool // the window is to be checked
}

// simStore is the store's listing.
type simStore struct {
	fulls, deltas []catalog.Snapshot // as Store.List sorts them
}

func (s *simStore) count() int { return len(s.fulls) + len(s.deltas) }

// remove deletes the plan's objects.
func (s *simStore) remove(dels []catalog.Decision) {
	gone := make(map[string]bool, len(dels))
	for _, d := range dels {
		gone[d.Snapshot.Key] = true
	}
	keep := func(snaps []catalog.Snapshot) []catalog.Snapshot {
		return slices.DeleteFunc(snaps, func(s catalog.Snapshot) bool { return gone[s.Key] })
	}
	s.fulls, s.deltas = keep(s.fulls), keep(s.deltas)
}

// simKey builds the name of an object like FullName and DeltaName, faster.
func simKey(buf []byte, kind catalog.Kind, from, to int64, t time.Time) string {
	buf = append(buf[:0], kind...)
	buf = append(buf, '/')
	pad := func(rev int64) {
		var digits [20]byte
		s := strconv.AppendInt(digits[:0], rev, 10)
		for range 20 - len(s) {
			buf = append(buf, '0')
		}
		buf = append(buf, s...)
		buf = append(buf, '-')
	}
	if kind == catalog.KindDelta {
		pad(from)
	}
	pad(to)
	buf = t.UTC().AppendFormat(buf, "20060102T150405.000Z")
	if kind == catalog.KindDelta {
		buf = append(buf, ".delta.zst"...)
	} else {
		buf = append(buf, ".db.zst"...)
	}
	return string(buf)
}

// simLock is a restore in progress.
type simLock struct {
	lock  catalog.RestoreLock
	keys  map[string]bool
	full  time.Time // the time of the full snapshot it reads
	until time.Time // when the restore ends (it releases the lock)
}

func runSim(t *testing.T, cfg simConfig) simStats {
	t.Helper()
	var (
		st      simStats
		store   simStore
		buf     = make([]byte, 0, 128)
		rev     int64 // the last revision written
		lastTo  int64 // the last revision uploaded in a delta
		slot    int   // delta slots so far
		hours   int
		locks   []*simLock
		reading time.Time // when the restore that plans starts reading
		oracle  simOracle
	)
	const fullDelay = 200 * time.Millisecond
	steady := cfg.start.Add(min(35*24*time.Hour, cfg.duration/2)) // the policy's reach, or half the run
	end := cfg.start.Add(cfg.duration)

	gc := func(now time.Time, changed bool) {
		st.gcRuns++
		l := catalog.Listing{Fulls: store.fulls, Deltas: store.deltas}
		for _, sl := range locks {
			sl.lock.ModTime = now // refreshed by its holder
			l.Locks = append(l.Locks, sl.lock)
		}
		plan, err := catalog.PlanGC(l, cfg.policy, now)
		if err != nil {
			t.Fatalf("%s: %v", now, err)
		}
		for _, sl := range locks {
			if sl.lock.Pending() && len(plan.Delete) > 0 {
				t.Fatalf("%s: a restore is planning, yet garbage collection deletes %d objects", now, len(plan.Delete))
			}
			for _, d := range plan.Delete {
				if sl.keys[d.Snapshot.Key] {
					t.Fatalf("%s: garbage collection deletes %s, which a restore in progress reads", now, d.Snapshot.Key)
				}
			}
		}
		if len(plan.Delete) > 0 {
			store.remove(plan.Delete)
			st.deleted += len(plan.Delete)
			changed = true
		}
		checkSim(t, cfg, &st, &store, now, rev, lastTo, plan, changed, &oracle, locks)
		n := store.count()
		st.maxObjects = max(st.maxObjects, n)
		st.maxFulls, st.maxDeltas = max(st.maxFulls, len(store.fulls)), max(st.maxDeltas, len(store.deltas))
		if !now.Before(steady) {
			if st.steadySteps == 0 || n < st.steadyMin {
				st.steadyMin = n
			}
			st.steadyMax = max(st.steadyMax, n)
			st.steadySum += n
			st.steadySteps++
		}
	}

	for now := cfg.start; now.Before(end); now = now.Add(time.Minute) {
		st.steps++
		lockChanged := false
		// The deltas of the minute up to now: 3 revisions every 10 s; every 97th slot
		// has no writes and uploads nothing.
		for s := 5; s >= 0; s-- {
			at := now.Add(-time.Duration(s) * 10 * time.Second)
			slot++
			if !at.After(cfg.start) || slot%97 == 0 {
				continue
			}
			rev += 3
			store.deltas = append(store.deltas, catalog.Snapshot{
				Kind: catalog.KindDelta, From: lastTo + 1, Revision: rev, Time: at,
				Key: simKey(buf, catalog.KindDelta, lastTo+1, rev, at),
			})
			lastTo = rev
		}
		// Restores, every fourth day at a later hour: from hh:59 one plans (its lock names
		// nothing), across the hour at which the policy deletes the chain of hh-1; from
		// hh+1:01 it reads what a restore to hh-1:30 needs, until hh+1:30.
		if cfg.locks {
			locks = slices.DeleteFunc(locks, func(sl *simLock) bool {
				lockChanged = lockChanged || !now.Before(sl.until)
				return !now.Before(sl.until)
			})
			day := int(now.Sub(cfg.start) / (24 * time.Hour))
			if day%4 == 1 && now.Hour() == day%24 && now.Minute() == 59 {
				lockChanged = true
				reading = now.Add(2 * time.Minute)
				locks = append(locks, &simLock{until: reading,
					lock: catalog.RestoreLock{ID: "planning-" + now.Format(time.RFC3339), TTLSeconds: 600}})
			}
			if !reading.IsZero() && !now.Before(reading) {
				lockChanged = true
				reading = time.Time{}
				target := catalog.Target{Time: now.Truncate(time.Hour).Add(-90 * time.Minute)}
				p, err := catalog.PlanRestore(store.fulls, store.deltas, target, nil)
				if err != nil {
					t.Fatalf("%s: plan a restore to %s: %v", now, target, err)
				}
				keys := catalog.PlanKeys(p)
				sl := &simLock{until: now.Add(29 * time.Minute), keys: map[string]bool{}, full: p.Full.Time,
					lock: catalog.RestoreLock{ID: "reading-" + now.Format(time.RFC3339), TTLSeconds: 600, Keys: keys}}
				for _, k := range keys {
					sl.keys[k] = true
				}
				locks = append(locks, sl)
			}
		}
		gc(now, lockChanged)
		if now.Minute() == 0 {
			// The hourly full snapshot, 200 ms after the hour, at a revision up to two
			// after the last delta's (so that the next delta starts at or before it).
			hours++
			at := now.Add(fullDelay)
			rev += int64(hours % 3)
			store.fulls = append(store.fulls, catalog.Snapshot{
				Kind: catalog.KindFull, Revision: rev, Time: at, Key: simKey(buf, catalog.KindFull, 0, rev, at),
			})
			gc(at.Add(100*time.Millisecond), true)
		}
	}
	return st
}

// checkSim checks the store after a garbage collection at now.
func checkSim(t *testing.T, cfg simConfig, st *simStats, store *simStore, now time.Time, rev, lastTo int64,
	plan catalog.GCPlan, changed bool, oracle *simOracle, locks []*simLock) {
	t.Helper()
	fatal := func(format string, args ...any) {
		t.Helper()
		loc := cfg.policy.Location
		if loc == nil {
			loc = time.UTC
		}
		t.Fatalf("%s (%s): %s", now.Format(time.RFC3339Nano), now.In(loc).Format("Mon 15:04 MST"), fmt.Sprintf(format, args...))
	}
	if rev == 0 {
		return // the store is empty until the first full snapshot
	}
	// The kept full snapshots are those promised (while a restore plans, nothing is deleted:
	// the run after it catches up).
	want := oracle.promised(cfg, store, now, locks)
	if plan.Paused == "" && (len(want) != len(store.fulls) ||
		!slices.EqualFunc(want, store.fulls, func(w time.Time, f catalog.Snapshot) bool { return w.Equal(f.Time) })) {
		got := make([]time.Time, len(store.fulls))
		for i, f := range store.fulls {
			got[i] = f.Time
		}
		fatal("kept full snapshots %v, want %v", times(got), times(want))
	}
	// No delta older than the window stays, unless a restore reads it (or plans): the
	// oldest delta kept is the one that continues the window's base.
	if len(store.deltas) == 0 {
		return // the first full snapshot, before any delta
	}
	if d := store.deltas[0]; plan.Paused == "" && !slices.ContainsFunc(locks, func(sl *simLock) bool { return sl.keys[d.Key] }) &&
		(d.Revision <= plan.WindowBase.Revision || d.From > plan.WindowBase.Revision+1) {
		fatal("the oldest delta kept, %s, does not continue the window's base %s", d.Key, plan.WindowBase.Key)
	}
	if changed {
		st.windowDue = true
		// The newest point: every revision written is uploaded.
		newest, err := catalog.PlanRestore(store.fulls, store.deltas, catalog.Target{}, nil)
		if err != nil || newest.Revision != rev {
			fatal("the newest point, revision %d, does not restore: reached %d: %v", rev, newest.Revision, err)
		}
		// Every kept full snapshot (a restore to its revision reads it alone: the deltas
		// cannot change that plan, so they are left out to keep this fast).
		for _, f := range store.fulls {
			p, err := catalog.PlanRestore(store.fulls, nil, catalog.Target{Revision: f.Revision}, nil)
			if err != nil || p.Full.Key != f.Key || len(p.Deltas) != 0 {
				fatal("the kept full snapshot %s does not restore alone: %v", f.Key, err)
			}
		}
	}
	if !st.windowDue || rev > lastTo {
		// Just after a full snapshot the revisions between the last delta and it are in no
		// delta until the next one: a restore to a time cannot tell whether they were
		// written before it, with or without garbage collection. The next step checks.
		return
	}
	st.windowDue = false
	st.fullChecks++
	// Every point of the window, from its start to the newest revision.
	from := catalog.Target{Time: plan.WindowFrom}
	p, err := catalog.PlanRestore(store.fulls, store.deltas, from, nil)
	if err != nil || !p.Newest || p.EndsAtGap {
		fatal("the point-in-time window from %s does not restore to the newest revision %d: reached %d from %s: %v",
			plan.WindowFrom.Format(time.RFC3339Nano), rev, p.Revision, p.Full.Key, err)
	}
	if p.Full.Key != plan.WindowBase.Key {
		fatal("a restore to the window's start uses %s, the plan says %s", p.Full.Key, plan.WindowBase.Key)
	}
	// What garbage collection leaves is what `etcdbr list` shows as pruned, never as a gap:
	// a gap means a break in the backups.
	if w := catalog.RestorableWindow(store.fulls, store.deltas); len(w.Gaps) > 0 || w.Newest.Revision != rev {
		fatal("the restorable window after garbage collection shows gaps %v (pruned %d), newest %d: want no gap, newest %d",
			w.Gaps, len(w.Pruned), w.Newest.Revision, rev)
	}
}

func times(ts []time.Time) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = t.UTC().Format("01-02T15:04:05.000")
	}
	return out
}

// simOracle computes the full snapshots the policy promises to keep, from the schedule (a
// full snapshot 200 ms after every UTC hour since the start): what docs/retention.md says,
// written out plainly. It computes again only when what it depends on changed.
type simOracle struct {
	key  simOracleKey
	want []time.Time
}

type simOracleKey struct {
	hour, base     time.Time // the current hour's start; the window's base
	fulls          int
	oldest, newest time.Time
	locks, lockd0  int
}

func (o *simOracle) promised(cfg simConfig, store *simStore, now time.Time, locks []*simLock) []time.Time {
	const fullDelay = 200 * time.Millisecond
	first := cfg.start.Add(fullDelay)
	// newestBefore is the last full snapshot taken before t (zero: none).
	newestBefore := func(t time.Time) time.Time {
		f := t.Add(-fullDelay - time.Nanosecond).Truncate(time.Hour).Add(fullDelay)
		if f.Before(first) || !f.Before(t) {
			return time.Time{}
		}
		return f
	}
	hourStart := now.Truncate(time.Hour) // the zones simulated have whole-hour offsets
	// The window starts at the current hour (exponential) or at the oldest of the newest
	// MaxBackups full snapshots (limit), or earlier with keep-within; it is restored from
	// the newest full snapshot taken at or before its start, or from the oldest.
	var windowFrom time.Time
	switch cfg.policy.Kind {
	case catalog.PolicyExponential:
		windowFrom = hourStart
	case catalog.PolicyLimit:
		windowFrom = store.fulls[max(0, len(store.fulls)-cfg.policy.MaxBackups)].Time
	}
	if cfg.policy.KeepWithin > 0 {
		if w := now.Add(-cfg.policy.KeepWithin); w.Before(windowFrom) {
			windowFrom = w
		}
	}
	base := newestBefore(windowFrom.Add(time.Nanosecond))
	if base.IsZero() {
		base = first
	}
	key := simOracleKey{hour: hourStart, base: base, fulls: len(store.fulls), locks: len(locks)}
	if len(store.fulls) > 0 {
		key.oldest, key.newest = store.fulls[0].Time, store.fulls[len(store.fulls)-1].Time
	}
	if len(locks) > 0 {
		key.lockd0 = len(locks[0].lock.Keys)
	}
	if key == o.key && o.want != nil {
		return o.want
	}
	o.key = key

	set := map[time.Time]bool{}
	add := func(t time.Time) {
		if !t.IsZero() && !t.After(now) {
			set[t.UTC()] = true
		}
	}
	// newestIn adds the newest full snapshot taken in [from, to).
	newestIn := func(from, to time.Time) {
		if f := newestBefore(to); !f.Before(from) {
			add(f)
		}
	}
	switch cfg.policy.Kind {
	case catalog.PolicyExponential:
		loc := cfg.policy.Location
		y, m, d := now.In(loc).Date()
		day := func(n int) time.Time { return time.Date(y, m, d+n, 0, 0, 0, 0, loc) }
		// Each earlier hour of today (every UTC hour starts a local one in these zones).
		for h := day(0); h.Before(hourStart); h = h.Add(time.Hour) {
			newestIn(h, h.Add(time.Hour))
		}
		// Each of the 7 days before today.
		for n := -7; n < 0; n++ {
			newestIn(day(n), day(n+1))
		}
		// Each of the 4 calendar weeks (from Monday) before this one, up to the days.
		monday := day(-((int(now.In(loc).Weekday()) + 6) % 7))
		for w := 4; w >= 1; w-- {
			from := monday.AddDate(0, 0, -7*w)
			to := from.AddDate(0, 0, 7)
			if to.After(day(-7)) {
				to = day(-7)
			}
			if from.Before(to) {
				newestIn(from, to)
			}
		}
	case catalog.PolicyLimit:
		for i := max(0, len(store.fulls)-cfg.policy.MaxBackups); i < len(store.fulls); i++ {
			add(store.fulls[i].Time)
		}
	}
	// The window: its base and every full snapshot after it.
	for f := base; !f.After(now); f = f.Add(time.Hour) {
		add(f)
	}
	// What restores in progress read.
	for _, sl := range locks {
		add(sl.full)
	}
	o.want = o.want[:0]
	for t := range set {
		o.want = append(o.want, t)
	}
	slices.SortFunc(o.want, time.Time.Compare)
	return o.want
}

func logSim(t *testing.T, cfg simConfig, st simStats) {
	t.Helper()
	avg := 0
	if st.steadySteps > 0 {
		avg = st.steadySum / st.steadySteps
	}
	t.Logf("%v of backups from %s, policy %s: %d steps, %d garbage collections (%d with every promised point checked), "+
		"%d objects deleted; objects at most %d (full snapshots at most %d, deltas at most %d); "+
		"after the first %v between %d and %d, %d on average",
		cfg.duration, cfg.start.Format(time.RFC3339), cfg.policy, st.steps, st.gcRuns, st.fullChecks,
		st.deleted, st.maxObjects, st.maxFulls, st.maxDeltas, min(35*24*time.Hour, cfg.duration/2), st.steadyMin, st.steadyMax, avg)
}

// A year of the default policy, in UTC.
func TestRetentionSimulatedYear(t *testing.T) {
	t.Parallel()
	cfg := simConfig{
		policy:   catalog.Policy{Kind: catalog.PolicyExponential, Location: time.UTC},
		start:    ts("2026-01-01T00:00:00Z"),
		duration: 365 * 24 * time.Hour,
		locks:    true,
	}
	logSim(t, cfg, runSim(t, cfg))
}

// Six weeks of the exponential policy counted in New York, across the end of summer time
// (2026-11-01), with keep-within.
func TestRetentionSimulatedSummerTimeEnd(t *testing.T) {
	t.Parallel()
	cfg := simConfig{
		policy:   catalog.Policy{Kind: catalog.PolicyExponential, Location: zone("America/New_York"), KeepWithin: 3 * time.Hour},
		start:    ts("2026-10-01T00:00:00Z"),
		duration: 6 * 7 * 24 * time.Hour,
		locks:    true,
	}
	logSim(t, cfg, runSim(t, cfg))
}

// Three weeks of the limit policy with keep-within.
func TestRetentionSimulatedLimit(t *testing.T) {
	t.Parallel()
	cfg := simConfig{
		policy:   catalog.Policy{Kind: catalog.PolicyLimit, MaxBackups: 6, KeepWithin: 2 * time.Hour},
		start:    ts("2026-11-01T00:00:00Z"),
		duration: 3 * 7 * 24 * time.Hour,
		locks:    true,
	}
	logSim(t, cfg, runSim(t, cfg))
}

func TestSimKey(t *testing.T) {
	at := ts("2026-11-25T14:00:00.2Z")
	if got, want := simKey(nil, catalog.KindDelta, 12, 345, at), catalog.DeltaName(12, 345, at, false); got != want {
		t.Fatalf("simKey %q, DeltaName %q", got, want)
	}
	if got, want := simKey(nil, catalog.KindFull, 0, 345, at), catalog.FullName(345, at, false); got != want {
		t.Fatalf("simKey %q, FullName %q", got, want)
	}
}
