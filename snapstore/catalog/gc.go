package catalog

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Decision is what garbage collection does with one object, and why.
type Decision struct {
	Snapshot Snapshot
	Keep     bool
	Reason   string
}

// GCPlan is what one garbage collection run deletes.
type GCPlan struct {
	Policy Policy
	Now    time.Time
	// Delete lists the objects to delete with the reason, in the order snapstore's Store.ApplyGC deletes
	// them: the deltas from the highest revision down, then the full snapshots likewise.
	// Whenever a run stops, every object left can still be restored: each delta left still
	// follows its full snapshot without a gap.
	Delete []Decision
	// KeptFulls and KeptDeltas count the objects that stay; Kept lists them.
	KeptFulls, KeptDeltas int
	// WindowFrom is when the point-in-time window starts (every point from then to the
	// newest stays restorable) and WindowBase the full snapshot a restore to it starts from.
	// Both are zero when the store has no full snapshot.
	WindowFrom time.Time
	WindowBase Snapshot
	// Paused says why nothing is deleted this time ("" when the plan deletes normally).
	Paused string
	// Locks are the live restore locks the plan honours. StaleLocks are lock objects
	// that stopped protecting over an hour ago, left by restores that died: Store.ApplyGC deletes
	// them.
	Locks, StaleLocks []RestoreLock

	st *gcState
}

// gcState is a plan's decisions with what is needed to explain them.
type gcState struct {
	retention
	// damaged are the listed objects recorded as damaged (damage their records, by key):
	// always kept, and left out of the retention, which sees only the others.
	damaged []Snapshot
	damage  map[string]Damage
	paused  string
	lockOf  map[string]string // object key -> the live lock that protects it
	neededF map[int]string    // full snapshot index -> the kept delta whose chain needs it
	neededD map[int]string    // likewise for deltas
}

// ErrUnsafeGC is wrapped by the error PlanGC returns when the objects it would delete are
// needed by a point it promises to keep (which would be a bug): nothing is deleted.
var ErrUnsafeGC = errors.New("garbage collection refused: it would break a restore")

// PlanGC decides, from a listing of the store and the time now, what garbage collection
// deletes under policy p. It is a pure function of its arguments (docs/retention.md).
//
// The objects l.Damaged records are never deleted and never count as backups: the policy
// and the checks below see only the others, as if the damaged ones were not listed.
//
// Besides what the policy keeps, it keeps every object a live restore lock names, and
// the chain (full snapshot and deltas) of every delta it keeps, so that a kept delta never
// lacks its full snapshot; while a lock is planning (names no object yet), or the store
// has no full snapshot, it deletes nothing (Paused says why). Before it returns a plan that
// deletes, it checks with PlanRestore that the newest restorable point and the start of
// the point-in-time window restore from what is kept exactly as from the whole listing;
// if not, it returns an error wrapping ErrUnsafeGC.
func PlanGC(l Listing, p Policy, now time.Time) (GCPlan, error) {
	if err := p.Validate(); err != nil {
		return GCPlan{}, err
	}
	fulls, deltas := sortedListing(withKeys(l.Fulls), withKeys(l.Deltas))
	var damaged []Snapshot
	if len(l.Damaged) > 0 {
		damaged = slices.Concat(onlyDamaged(fulls, l.Damaged), onlyDamaged(deltas, l.Damaged))
		fulls, deltas = WithoutDamaged(fulls, l.Damaged), WithoutDamaged(deltas, l.Damaged)
	}
	st := &gcState{retention: p.retain(fulls, deltas, now), damaged: damaged, damage: l.Damaged}
	plan := GCPlan{Policy: p, Now: now, st: st}
	if st.base >= 0 {
		plan.WindowFrom, plan.WindowBase = st.windowFrom(), fulls[st.base]
	}
	for _, lock := range l.Locks {
		switch {
		case lock.Live(now):
			plan.Locks = append(plan.Locks, lock)
		case lock.stale(now):
			plan.StaleLocks = append(plan.StaleLocks, lock)
		}
	}
	switch {
	case len(fulls) == 0 && len(damaged) > 0:
		st.paused = "the store has no intact full snapshot (the others are recorded as damaged): nothing can be restored from it, " +
			"and nothing is deleted until one is there"
	case len(fulls) == 0:
		st.paused = "the store has no full snapshot: nothing can be restored from it, and nothing is deleted until one is there"
	default:
		for _, lock := range plan.Locks {
			if lock.Pending() {
				st.paused = fmt.Sprintf("%s is planning (the lock ends at %s at the latest): nothing is deleted until it names what it reads",
					lock, gcTime(lock.End()))
				if lock.Malformed != "" {
					st.paused = fmt.Sprintf("the restore lock %s cannot be read (%s): nothing is deleted until %s, an hour after which it is removed",
						lock.Key, lock.Malformed, gcTime(lock.End()))
				}
				break
			}
		}
	}
	plan.Paused = st.paused
	if st.paused == "" {
		st.protect(plan.Locks)
		st.closeChains()
		plan.Delete = st.deletions()
		if len(plan.Delete) > 0 {
			if err := st.guard(); err != nil {
				return GCPlan{}, err
			}
		}
	}
	plan.KeptFulls, plan.KeptDeltas = len(fulls), len(deltas)
	for _, d := range damaged {
		if d.Kind == KindFull {
			plan.KeptFulls++
		} else {
			plan.KeptDeltas++
		}
	}
	for _, d := range plan.Delete {
		if d.Snapshot.Kind == KindFull {
			plan.KeptFulls--
		} else {
			plan.KeptDeltas--
		}
	}
	return plan, nil
}

// withKeys returns snaps with every empty Key set to the object's name.
func withKeys(snaps []Snapshot) []Snapshot {
	for i := range snaps {
		if snaps[i].Key == "" {
			out := append([]Snapshot(nil), snaps...)
			for j := i; j < len(out); j++ {
				if out[j].Key == "" {
					out[j].Key = out[j].Name(out[j].Encrypted)
				}
			}
			return out
		}
	}
	return snaps
}

// protect keeps the objects the live locks name.
func (st *gcState) protect(locks []RestoreLock) {
	for _, lock := range locks {
		for _, key := range lock.Keys {
			if st.lockOf == nil {
				st.lockOf = map[string]string{}
			}
			st.lockOf[key] = lock.String()
		}
	}
	if st.lockOf == nil {
		return
	}
	for i, f := range st.fulls {
		if _, ok := st.lockOf[f.Key]; ok {
			st.keepF[i] |= keepLock
		}
	}
	for i, d := range st.deltas {
		if _, ok := st.lockOf[d.Key]; ok {
			st.keepD[i] |= keepLock
		}
	}
}

// closeChains keeps the chain of every kept delta outside the window's revisions (kept by a
// lock, or taken in the window's time in a store whose history went back): the full
// snapshot and deltas that a restore to its revision reads. Deltas after the window's base
// have their chain from the base, which is kept.
func (st *gcState) closeChains() {
	baseRev := st.fulls[st.base].Revision
	var fullAt, deltaAt map[string]int
	var covered map[int]bool
	// The deltas after the base's revision (a suffix of the listing) have their chain.
	end, _ := slices.BinarySearchFunc(st.deltas, baseRev, func(s Snapshot, rev int64) int {
		if s.Revision <= rev {
			return -1
		}
		return 1
	})
	for i := end - 1; i >= 0; i-- {
		if st.keepD[i] == 0 || covered[i] {
			continue
		}
		d := st.deltas[i]
		p, err := PlanRestore(st.fulls, st.deltas, Target{Revision: d.Revision}, nil)
		if err != nil {
			continue // nothing restores it in the whole store either
		}
		if fullAt == nil {
			fullAt, deltaAt = indexByKey(st.fulls), indexByKey(st.deltas)
			st.neededF, st.neededD, covered = map[int]string{}, map[int]string{}, map[int]bool{}
		}
		if j := fullAt[p.Full.Key]; st.keepF[j] == 0 {
			st.keepF[j] |= keepNeeded
			st.neededF[j] = d.Key
		}
		for _, pd := range p.Deltas {
			j := deltaAt[pd.Key]
			covered[j] = true
			if st.keepD[j] == 0 {
				st.keepD[j] |= keepNeeded
				st.neededD[j] = d.Key
			}
		}
	}
}

func indexByKey(snaps []Snapshot) map[string]int {
	m := make(map[string]int, len(snaps))
	for i, s := range snaps {
		m[s.Key] = i
	}
	return m
}

// deletions lists what is not kept, in deletion order.
func (st *gcState) deletions() []Decision {
	var del []Decision
	deltaReason := ""
	for i := len(st.deltas) - 1; i >= 0; i-- {
		if st.keepD[i] == 0 {
			if deltaReason == "" {
				deltaReason = st.deltaDeleted()
			}
			del = append(del, Decision{Snapshot: st.deltas[i], Reason: deltaReason})
		}
	}
	for i := len(st.fulls) - 1; i >= 0; i-- {
		if st.keepF[i] == 0 {
			del = append(del, Decision{Snapshot: st.fulls[i], Reason: st.fullDeleted(i)})
		}
	}
	return del
}

// guard checks that the newest restorable point and the start of the point-in-time window
// restore from the kept objects as they do from the whole listing. Usually one plan shows
// it: from the window's start, the kept chain reaches the newest revision in the store.
func (st *gcState) guard() error {
	var keptF, keptD []Snapshot
	var newestRev int64
	for i, f := range st.fulls {
		newestRev = max(newestRev, f.Revision)
		if st.keepF[i] != 0 {
			keptF = append(keptF, f)
		}
	}
	for i, d := range st.deltas {
		newestRev = max(newestRev, d.Revision)
		if st.keepD[i] != 0 {
			keptD = append(keptD, d)
		}
	}
	from := Target{Time: st.windowFrom()}
	if p, err := PlanRestore(keptF, keptD, from, nil); err == nil && p.Full.Key == st.fulls[st.base].Key &&
		!p.EndsAtGap && p.Revision == newestRev {
		return nil
	}
	// The store itself may not restore there (a gap; the revisions just before a new full
	// snapshot that no delta holds yet): compare with the whole listing.
	if before, err := PlanRestore(st.fulls, st.deltas, from, nil); err == nil {
		if err := sameRestore(keptF, keptD, from, before); err != nil {
			return err
		}
	}
	newest := Target{}
	before, err := PlanRestore(st.fulls, st.deltas, newest, nil)
	if err != nil {
		// The store's newest objects do not restore (a gap or an overlap): the newest point
		// that does is the end of the restorable window.
		if w := RestorableWindow(st.fulls, st.deltas); w.Newest.Key != "" {
			newest = Target{Revision: w.Newest.Revision}
			before, err = PlanRestore(st.fulls, st.deltas, newest, nil)
		}
	}
	if err == nil {
		return sameRestore(keptF, keptD, newest, before)
	}
	return nil
}

// sameRestore checks that a restore to target from the kept objects reaches what before,
// the plan from the whole listing, reaches.
func sameRestore(keptF, keptD []Snapshot, target Target, before RestorePlan) error {
	after, err := PlanRestore(keptF, keptD, target, nil)
	switch {
	case err != nil:
		return fmt.Errorf("%w: a restore to %s would fail: %w (a bug in etcdbr: please report it; nothing was deleted)", ErrUnsafeGC, target, err)
	case after.Revision != before.Revision || after.MinRevision != before.MinRevision:
		return fmt.Errorf("%w: a restore to %s would reach revision %d instead of %d (a bug in etcdbr: please report it; nothing was deleted)",
			ErrUnsafeGC, target, after.Revision, before.Revision)
	}
	return nil
}

// Kept lists the objects the plan keeps, full snapshots first, each in revision order,
// then the objects recorded as damaged, with the reasons.
func (p GCPlan) Kept() []Decision {
	if p.st == nil {
		return nil
	}
	st := p.st
	var kept []Decision
	for i, f := range st.fulls {
		if st.paused != "" || st.keepF[i] != 0 {
			kept = append(kept, Decision{Snapshot: f, Keep: true, Reason: st.keptReason(f, st.keepF[i], i, st.neededF)})
		}
	}
	for i, d := range st.deltas {
		if st.paused != "" || st.keepD[i] != 0 {
			kept = append(kept, Decision{Snapshot: d, Keep: true, Reason: st.keptReason(d, st.keepD[i], i, st.neededD)})
		}
	}
	for _, s := range st.damaged {
		d := st.damage[s.Key]
		kept = append(kept, Decision{Snapshot: s, Keep: true, Reason: fmt.Sprintf("recorded as damaged (found by %s at %s): "+
			"never counted as a backup, and kept as the evidence of what it held until a person replaces it or removes "+
			"its record (%s)", d.By, gcTime(d.Found), d.Reason)})
	}
	return kept
}

// onlyDamaged returns the objects of list that damaged records.
func onlyDamaged(list []Snapshot, damaged map[string]Damage) []Snapshot {
	var out []Snapshot
	for _, s := range list {
		if _, bad := damaged[s.Key]; bad {
			out = append(out, s)
		}
	}
	return out
}

// keptReason says why an object is kept.
func (st *gcState) keptReason(s Snapshot, bits uint8, i int, needed map[int]string) string {
	if st.paused != "" {
		return st.paused
	}
	var why []string
	from := gcTime(st.windowFrom())
	if bits&keepLock != 0 {
		why = append(why, st.lockOf[s.Key]+" reads it")
	}
	if bits&keepBase != 0 {
		why = append(why, "a restore to any point from "+from+" on starts from it")
	}
	if bits&keepBucket != 0 {
		switch {
		case st.policy.Kind == PolicyLimit && st.policy.MaxBackups == 1:
			why = append(why, "the newest full snapshot")
		case st.policy.Kind == PolicyLimit:
			why = append(why, "one of "+newestFulls(st.policy.MaxBackups))
		default:
			why = append(why, "the newest full snapshot of "+st.cal.describe(st.bucket[i]))
		}
	}
	if bits&keepWindow != 0 && bits&keepBase == 0 {
		why = append(why, "in the point-in-time window from "+from)
	}
	if bits&keepNeeded != 0 {
		why = append(why, "restoring "+needed[i]+", which is kept, needs it")
	}
	if bits&keepNoFull != 0 {
		why = append(why, "the store has no full snapshot")
	}
	return strings.Join(why, "; ")
}

// deltaDeleted says why the deltas that go are deleted (the same for all).
func (st *gcState) deltaDeleted() string {
	return fmt.Sprintf("older than the point-in-time window (from %s, restored from %s), and no kept point needs it",
		gcTime(st.windowFrom()), st.fulls[st.base].Key)
}

// fullDeleted says why the full snapshot i is deleted.
func (st *gcState) fullDeleted(i int) string {
	if st.policy.Kind == PolicyLimit {
		if st.policy.MaxBackups == 1 {
			return "not the newest full snapshot, and older than the point-in-time window"
		}
		return "not one of " + newestFulls(st.policy.MaxBackups) + ", and older than the point-in-time window"
	}
	b := st.bucket[i]
	if b.tier == tierOlder {
		return fmt.Sprintf("older than the 4 weeks before this one, which the exponential policy keeps (they start on Monday %s, %s)",
			dayString(st.cal.thisWeek-28), st.cal.loc)
	}
	return fmt.Sprintf("not the newest full snapshot of %s (%s is kept)", st.cal.describe(b), st.fulls[st.rep[i]].Key)
}

func gcTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }
