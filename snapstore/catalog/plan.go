package catalog

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Target is the point a restore goes to: a revision, a time, or (zero value) the newest
// point the store holds.
type Target struct {
	Revision int64     // restore to exactly this revision
	Time     time.Time // restore to the last revision observed at or before this time
}

// Latest reports whether the target is the newest point the store holds.
func (t Target) Latest() bool { return t.Revision == 0 && t.Time.IsZero() }

func (t Target) String() string {
	switch {
	case t.Revision > 0:
		return fmt.Sprintf("revision %d", t.Revision)
	case !t.Time.IsZero():
		return "time " + t.Time.UTC().Format(time.RFC3339Nano)
	default:
		return "the latest point"
	}
}

// Validate checks that at most one of Revision and Time is set and Revision is not negative.
func (t Target) Validate() error {
	switch {
	case t.Revision < 0:
		return fmt.Errorf("restore target: revision %d: revisions start at 1", t.Revision)
	case t.Revision > 0 && !t.Time.IsZero():
		return fmt.Errorf("restore target: give a revision or a time, not both (revision %d, %s)", t.Revision, t.Time.UTC().Format(time.RFC3339))
	}
	return nil
}

// RestorePlan is what a restore reads: one full snapshot and the deltas that continue it, in order.
type RestorePlan struct {
	Full   Snapshot
	Deltas []Snapshot
	Target Target
	// Revision is the highest revision the restore can end at: the target revision; for the
	// latest point the newest revision in the store; for a time target the last revision of
	// the chain (the replay stops before the first revision observed after the time, so the
	// restore may end lower, but not below MinRevision).
	Revision int64
	// MinRevision is the lowest revision the restore may end at: Revision, except for a time
	// target, where it is the newest revision that the objects' names show was written at
	// or before the time. A restore that ends below it lost revisions and must fail.
	MinRevision int64
	// Newest reports that the chain reaches the newest revision in the store (for a
	// revision target: that the target is the newest revision).
	Newest bool
	// EndsAtGap (time targets only) reports that the chain ends at a gap or an overlap, after
	// a delta taken after the time: the replay must meet a revision observed after the time
	// before the chain ends, otherwise the state at that time is not in the store.
	EndsAtGap bool
}

// ErrNoChain is wrapped by every planning error: no full snapshot at or before the target,
// or no unbroken chain of deltas from it to the target.
var ErrNoChain = errors.New("no restorable chain")

// PlanRestore chooses what to read to restore to target, from listings of the store's full
// snapshots and deltas (as snapstore's Store.List returns them). Objects whose keys are in
// exclude (found bad while reading) are not used, but their names still count as evidence
// of what the store held: the latest point is the newest revision of any listed object, and
// a time target must reach every revision that a listed object taken at or before that time
// holds.
//
// It takes the newest usable full snapshot at or before the target and the deltas that
// continue it, one per revision, without a gap (a delta may start before the full snapshot:
// the restore skips what the full snapshot already holds). A delta's name carries the time
// it was uploaded: every revision in it was observed at or before that time, but revisions
// observed before it may be in the next delta. So for a time target the chain must reach
// MinRevision and a delta taken after the time, and then goes on as far as it runs without a
// gap, for the replay to stop at the first revision observed after the time (see EndsAtGap).
// Errors wrap ErrNoChain and name the objects around a gap or an overlap; an older full
// snapshot cannot help there, as its chain would have to cross the same revisions.
func PlanRestore(fulls, deltas []Snapshot, target Target, exclude map[string]bool) (RestorePlan, error) {
	if err := target.Validate(); err != nil {
		return RestorePlan{}, err
	}
	if len(fulls) == 0 {
		return RestorePlan{}, fmt.Errorf("%w: the store has no full snapshot", ErrNoChain)
	}
	newest := newestObject(fulls, deltas)
	if target.Revision > newest.Revision {
		return RestorePlan{}, fmt.Errorf("%w: revision %d is not in the store: the newest revision is %d (%s)",
			ErrNoChain, target.Revision, newest.Revision, newest.Key)
	}
	goal := GoalRevision(fulls, deltas, target) // the lowest revision the restore must reach

	var full *Snapshot
	for i := range fulls {
		f := &fulls[i]
		if exclude[f.Key] || f.Revision > goal || (!target.Time.IsZero() && f.Time.After(target.Time)) {
			continue
		}
		if full == nil || f.Revision > full.Revision {
			full = f
		}
	}
	if full == nil {
		return RestorePlan{}, noFull(fulls, target, goal, exclude)
	}
	return chain(*full, deltas, target, goal, newest, exclude)
}

// GoalRevision is the lowest revision a restore to target must reach, from the listed
// objects' names: the target revision; for a time target, the newest revision an object
// taken at or before the time holds (0: none); for the newest point, the newest revision of
// any object.
func GoalRevision(fulls, deltas []Snapshot, target Target) int64 {
	var goal int64
	switch {
	case target.Revision > 0:
		return target.Revision
	case !target.Time.IsZero():
		for _, list := range [2][]Snapshot{fulls, deltas} {
			for _, s := range list {
				if !s.Time.After(target.Time) {
					goal = max(goal, s.Revision)
				}
			}
		}
	default:
		for _, list := range [2][]Snapshot{fulls, deltas} {
			for _, s := range list {
				goal = max(goal, s.Revision)
			}
		}
	}
	return goal
}

// noFull explains why no full snapshot can start a restore to target.
func noFull(fulls []Snapshot, target Target, goal int64, exclude map[string]bool) error {
	oldest := slices.MinFunc(fulls, func(a, b Snapshot) int { return cmp.Compare(a.Revision, b.Revision) })
	var bad []string
	for _, f := range fulls {
		if exclude[f.Key] && f.Revision <= max(goal, oldest.Revision) {
			bad = append(bad, f.Key)
		}
	}
	if len(bad) > 0 && (target.Time.IsZero() || !oldest.Time.After(target.Time)) {
		return fmt.Errorf("%w to %s: every full snapshot at or before it failed verification (%s)",
			ErrNoChain, target, strings.Join(bad, ", "))
	}
	return fmt.Errorf("%w: %s is before the oldest full snapshot, %s (revision %d, taken %s)",
		ErrNoChain, target, oldest.Key, oldest.Revision, oldest.Time.UTC().Format(time.RFC3339))
}

// chain follows the deltas after full up to target; goal is the lowest revision it must
// reach and newest the newest object in the store.
func chain(full Snapshot, deltas []Snapshot, target Target, goal int64, newest Snapshot, exclude map[string]bool) (RestorePlan, error) {
	p := RestorePlan{Full: full, Target: target, Revision: full.Revision}
	byTime := !target.Time.IsZero()
	passed := false // (time target) the chain holds a delta taken after the time
	cover := newSweep(deltas, exclude)
	var picked []int // the chain's deltas, as indexes into cover.byFrom
	var prev *Snapshot
	for !byTime || p.Revision < newest.Revision {
		if !byTime && p.Revision >= goal {
			break
		}
		next := p.Revision + 1
		found, bad := cover.at(next)
		var d *Snapshot
		var err error
		switch {
		case len(found) > 1:
			err = overlapError(cover.byFrom[found[0]], cover.byFrom[found[1]], next)
		case len(found) == 0:
			err = gapError(p, prev, deltas, next, cover.snaps(bad), target, goal)
		default:
			d = &cover.byFrom[found[0]]
			end := d.Revision
			if target.Revision > 0 {
				end = min(end, target.Revision)
			}
			if prev != nil && d.From <= prev.Revision {
				err = overlapError(*prev, *d, d.From)
			} else if inside := cover.startingIn(next, end, d); inside != nil {
				err = overlapError(*d, *inside, inside.From)
			}
		}
		if err != nil {
			if byTime && passed && p.Revision >= goal {
				// Deltas are named when they are uploaded, so the revisions observed after
				// the time may start in a later delta than the first one named after it: the
				// chain goes on as far as it can, and the replay stops where it passes the time.
				p.EndsAtGap = true
				break
			}
			return RestorePlan{}, err
		}
		picked = append(picked, found[0])
		p.Revision = d.Revision
		prev = d
		passed = passed || d.Time.After(target.Time)
	}
	if len(picked) > 0 {
		p.Deltas = make([]Snapshot, len(picked))
		for i, j := range picked {
			p.Deltas[i] = cover.byFrom[j]
		}
	}
	p.MinRevision = goal
	switch {
	case target.Revision > 0:
		p.Revision, p.MinRevision = target.Revision, target.Revision
		p.Newest = target.Revision >= newest.Revision
	default:
		p.Newest = p.Revision >= newest.Revision
	}
	return p, nil
}

// sweep finds the deltas that hold a revision, for revisions asked in increasing order. It
// allocates nothing per step that holds pointers: a plan over n deltas allocates O(log n)
// times, and copies each delta of its chain once.
type sweep struct {
	byFrom  []Snapshot // the deltas sorted by From (the caller's slice when it already is)
	i       int        // byFrom[:i] start at or before the last revision asked
	active  []int      // of those, the ones that end at or after it
	exclude map[string]bool
	// found and bad are the buffers at returns, reused by the next call.
	found, bad []int
}

func newSweep(deltas []Snapshot, exclude map[string]bool) *sweep {
	byFrom := deltas
	byStart := func(a, b Snapshot) int { return cmp.Compare(a.From, b.From) }
	if !slices.IsSortedFunc(byFrom, byStart) { // a listing is sorted by From unless deltas overlap
		byFrom = slices.Clone(deltas)
		slices.SortStableFunc(byFrom, byStart)
	}
	return &sweep{byFrom: byFrom, exclude: exclude}
}

// at returns the usable deltas that hold revision rev (one of several over the same range,
// an upload retried under a new time) and the excluded ones that hold it, as indexes into
// byFrom. The slices are valid until the next call.
func (s *sweep) at(rev int64) (found, bad []int) {
	for ; s.i < len(s.byFrom) && s.byFrom[s.i].From <= rev; s.i++ {
		if s.byFrom[s.i].Revision >= rev { // a delta that ends before rev is never asked for again
			s.active = append(s.active, s.i)
		}
	}
	s.active = slices.DeleteFunc(s.active, func(j int) bool { return s.byFrom[j].Revision < rev })
	found, bad = s.found[:0], s.bad[:0]
	for _, j := range s.active {
		d := &s.byFrom[j]
		switch {
		case s.exclude[d.Key]:
			bad = append(bad, j)
		case !slices.ContainsFunc(found, func(k int) bool { return s.byFrom[k].From == d.From && s.byFrom[k].Revision == d.Revision }):
			found = append(found, j)
		}
	}
	s.found, s.bad = found, bad
	return found, bad
}

// snaps returns the deltas at indexes idx.
func (s *sweep) snaps(idx []int) []Snapshot {
	var out []Snapshot
	for _, j := range idx {
		out = append(out, s.byFrom[j])
	}
	return out
}

// startingIn returns a usable delta, other than a copy of d, that starts after rev and at or
// before end (the revisions d holds that the chain uses), if any. It does not advance the
// sweep.
func (s *sweep) startingIn(rev, end int64, d *Snapshot) *Snapshot {
	for j := s.i; j < len(s.byFrom) && s.byFrom[j].From <= end; j++ {
		o := &s.byFrom[j]
		if o.From > rev && !s.exclude[o.Key] && (o.From != d.From || o.Revision != d.Revision) {
			return o
		}
	}
	return nil
}

func overlapError(a, b Snapshot, rev int64) error {
	return fmt.Errorf("%w: deltas %s and %s overlap at revision %d: they cannot both belong to one history; "+
		"move the one that does not belong to this cluster out of the store, or restore to a revision before %d",
		ErrNoChain, a.Key, b.Key, rev, min(a.From, b.From))
}

// gapError explains why the chain p cannot continue at revision next.
func gapError(p RestorePlan, prev *Snapshot, deltas []Snapshot, next int64, bad []Snapshot, target Target, goal int64) error {
	last := p.Full
	if prev != nil {
		last = *prev
	}
	var b strings.Builder
	fmt.Fprintf(&b, "after %s the chain ends at revision %d", last.Key, next-1)
	for _, d := range bad {
		fmt.Fprintf(&b, "; %s holds revision %d but failed verification", d.Key, next)
	}
	if later := firstAfter(deltas, next); later != nil {
		fmt.Fprintf(&b, "; gap: no delta holds revision %d, the next delta, %s, starts at revision %d", next, later.Key, later.From)
	}
	switch {
	case target.Revision > 0 || target.Latest():
		fmt.Fprintf(&b, "; revision %d cannot be reached", goal)
	case p.Revision < goal:
		fmt.Fprintf(&b, "; the store shows that revision %d was written by then", goal)
	default:
		b.WriteString("; the store holds later revisions, and some of them may have been written by then")
	}
	return fmt.Errorf("%w to %s: %s (the newest point this chain reaches is revision %d)", ErrNoChain, target, b.String(), next-1)
}

// firstAfter returns the first delta that starts after rev.
func firstAfter(deltas []Snapshot, rev int64) *Snapshot {
	var best *Snapshot
	for i := range deltas {
		if deltas[i].From > rev && (best == nil || deltas[i].From < best.From) {
			best = &deltas[i]
		}
	}
	return best
}

// newestObject returns the object with the highest revision (fulls first on a tie).
func newestObject(fulls, deltas []Snapshot) Snapshot {
	n := fulls[0]
	for _, list := range [2][]Snapshot{fulls, deltas} {
		for _, s := range list {
			if s.Revision > n.Revision {
				n = s
			}
		}
	}
	return n
}

// Point is a restorable point: a revision, and the backup object that reaches it with the
// time in its name (for a delta, when it was cut: the revision was observed at or before).
type Point struct {
	Revision int64
	Time     time.Time
	Key      string
}

// Gap is a range of revisions that cannot be restored: no delta holds revision From after
// the object After, and the next point a restore can reach again is Before (a full
// snapshot at revision To+1), or nothing after the gap can be restored (Before is the first
// delta after it, To its last revision).
type Gap struct {
	From, To      int64
	After, Before string
}

// Overlap is two deltas that hold the same revisions From..To: they cannot both belong to
// one history.
type Overlap struct {
	A, B     string
	From, To int64
}

// Window is the restorable window of a store: every revision from Oldest to Newest can be
// restored, except those in Gaps and Pruned.
type Window struct {
	Oldest, Newest Point // zero when the store has no full snapshot
	// Gaps are breaks in the history the deltas hold: revisions after the last point a
	// chain reaches for which the store holds deltas that cannot be reached (a delta lies
	// wholly inside the range), or which end at no full snapshot (nothing after them
	// restores: the break is after the newest full snapshot). Points were lost.
	Gaps []Gap
	// Pruned are the ranges between two full snapshots that no delta holds, as garbage
	// collection leaves them when it deletes the deltas between two full snapshots it keeps
	// outside the point-in-time window: the full snapshots on either side restore, the
	// revisions between them do not. Expected with retention (docs/retention.md); the
	// listing alone cannot tell them from deltas that were never uploaded.
	Pruned   []Gap
	Overlaps []Overlap
	// Damaged are the objects the store records as damaged (snapstore's Store.DamagedIn), sorted by key; the
	// window leaves them out (Store.Window).
	Damaged []Damage
	// Boundaries are the ranges between two histories (WithHistories): a restore to an
	// earlier point started a new history at Boundary.History.Start, and the revisions
	// between the old history's last backed-up one and the new history's first full
	// snapshot were never served, or were served by the old history and never backed up.
	Boundaries []Boundary
}

// Boundary is a range From..To of revisions between the end of one history's backups
// (After) and the first full snapshot of the next (Before), which History started.
type Boundary struct {
	From, To      int64
	After, Before string
	History       History
}

// WithHistories returns w with each range of w.Pruned that holds the start of one of hs
// moved to w.Boundaries: not backups that retention deleted, but the jump between two
// histories.
func (w Window) WithHistories(hs []History) Window {
	if len(hs) == 0 || len(w.Pruned) == 0 {
		return w
	}
	var pruned []Gap
	for _, g := range w.Pruned {
		i := slices.IndexFunc(hs, func(h History) bool { return h.Start > g.From && h.Start <= g.To+1 })
		if i < 0 {
			pruned = append(pruned, g)
			continue
		}
		w.Boundaries = append(w.Boundaries, Boundary{From: g.From, To: g.To, After: g.After, Before: g.Before, History: hs[i]})
	}
	w.Pruned = pruned
	return w
}

// RestorableWindow computes the restorable window from listings of the store's full
// snapshots and deltas. It reads only names, so it does not know which objects would fail
// verification.
func RestorableWindow(fulls, deltas []Snapshot) Window {
	var w Window
	ds := slices.Clone(deltas)
	slices.SortStableFunc(ds, func(a, b Snapshot) int {
		return cmp.Or(cmp.Compare(a.From, b.From), cmp.Compare(a.Revision, b.Revision))
	})
	w.Overlaps = overlaps(ds)
	if len(fulls) == 0 {
		return w
	}
	fs := slices.Clone(fulls)
	slices.SortStableFunc(fs, func(a, b Snapshot) int { return cmp.Compare(a.Revision, b.Revision) })
	point := func(s Snapshot) Point { return Point{Revision: s.Revision, Time: s.Time, Key: s.Key} }

	reach := point(fs[0])
	w.Oldest = reach
	fi := 1
	for {
		// Extend with every delta that continues the reach.
		for extended := true; extended; {
			extended = false
			for _, d := range ds {
				if d.From <= reach.Revision+1 && d.Revision > reach.Revision {
					reach, extended = point(d), true
				}
			}
		}
		for fi < len(fs) && fs[fi].Revision <= reach.Revision {
			fi++
		}
		if fi == len(fs) {
			if d := firstAfter(ds, reach.Revision+1); d != nil {
				last := slices.MaxFunc(ds, func(a, b Snapshot) int { return cmp.Compare(a.Revision, b.Revision) })
				w.Gaps = append(w.Gaps, Gap{From: reach.Revision + 1, To: last.Revision, After: reach.Key, Before: d.Key})
			}
			break
		}
		f := fs[fi]
		if f.Revision > reach.Revision+1 {
			g := Gap{From: reach.Revision + 1, To: f.Revision - 1, After: reach.Key, Before: f.Key}
			if strandedIn(ds, g.From, g.To) {
				w.Gaps = append(w.Gaps, g)
			} else {
				w.Pruned = append(w.Pruned, g)
			}
		}
		reach = point(f)
	}
	w.Newest = reach
	return w
}

// strandedIn reports whether a delta of ds (sorted by From) holds only revisions from..to:
// a delta no chain reaches. A delta that starts in the range and ends after it continues the
// full snapshot at to+1 (the restore skips what that holds) and is no sign of a break.
func strandedIn(ds []Snapshot, from, to int64) bool {
	i, _ := slices.BinarySearchFunc(ds, from, func(d Snapshot, rev int64) int { return cmp.Compare(d.From, rev) })
	for ; i < len(ds) && ds[i].From <= to; i++ {
		if ds[i].Revision <= to {
			return true
		}
	}
	return false
}

// overlaps finds deltas (sorted by From) that hold the same revisions, other than copies
// over the same range.
func overlaps(ds []Snapshot) []Overlap {
	var out []Overlap
	var widest *Snapshot // the delta reaching furthest so far
	for i := range ds {
		d := &ds[i]
		if widest != nil && d.From <= widest.Revision && (d.From != widest.From || d.Revision != widest.Revision) {
			out = append(out, Overlap{A: widest.Key, B: d.Key, From: d.From, To: min(d.Revision, widest.Revision)})
		}
		if widest == nil || d.Revision > widest.Revision {
			widest = d
		}
	}
	return out
}

// PlanKeys returns the keys of the objects a restore plan reads, for snapstore's
// LockHolder.Protect.
func PlanKeys(p RestorePlan) []string {
	keys := make([]string, 0, 1+len(p.Deltas))
	keys = append(keys, p.Full.Key)
	for _, d := range p.Deltas {
		keys = append(keys, d.Key)
	}
	return keys
}
