package catalog

import (
	"errors"
	"fmt"
	"slices"
)

// Problem is something wrong in a store, found by Verify or CheckChain.
type Problem struct {
	// Key is the object concerned, or "" for the store as a whole.
	Key string
	// Err says what is wrong.
	Err error
}

func (p Problem) String() string {
	if p.Key == "" {
		return p.Err.Error()
	}
	return p.Key + ": " + p.Err.Error()
}

// CheckChain checks, from the names alone, that the objects of a store (its
// listings, sorted by CompareSnapshots as snapstore's Store.List sorts them) form a
// restorable history:
//
//   - there is a full snapshot;
//   - deltas leave no gap: from the oldest full snapshot on, each delta
//     starts right after the revision reached by the full snapshots and
//     deltas before it. A full snapshot may start past that revision (after
//     a restore to a past point the revision is bumped, and the revisions
//     in between never existed);
//   - no two deltas overlap, except copies of the same range (an upload
//     retried under a new time).
//
// A range between two full snapshots that no delta holds is not a gap when no delta lies
// wholly inside it: retention deletes the deltas between full snapshots it keeps, and the
// first delta of the later one usually starts a little before it (RestorableWindow calls
// such a range Pruned).
//
// Deltas older than the oldest full snapshot are ignored: nothing can
// restore them, and retention removes them.
func CheckChain(fulls, deltas []Snapshot) []Problem {
	if len(fulls) == 0 {
		if len(deltas) == 0 {
			return []Problem{{Err: errors.New("the store is empty: there is nothing to restore")}}
		}
		return []Problem{{Err: fmt.Errorf("the store has %d deltas but no full snapshot: nothing can be restored", len(deltas))}}
	}
	var problems []Problem
	reach := fulls[0].Revision // the highest revision restorable so far
	var last *Snapshot         // the delta that reached it, if one did
	for _, item := range MergeByRevision(fulls, deltas) {
		if item.Kind == KindFull {
			reach = max(reach, item.Revision)
			continue
		}
		if item.From > reach+1 && item.Revision > fulls[0].Revision {
			// A delta that starts before a later full snapshot and ends after it continues
			// that snapshot: the hole before it is a range retention pruned, not a break.
			if f, ok := fullWithin(fulls, max(reach, item.From-1), item.Revision); ok {
				reach = f
			}
		}
		switch {
		case item.Revision <= fulls[0].Revision:
			continue
		case item.From > reach+1:
			after := "the full snapshot at revision " + fmt.Sprint(reach)
			if last != nil && last.Revision == reach {
				after = last.Key
			}
			problems = append(problems, Problem{Key: item.Key, Err: fmt.Errorf(
				"gap: no delta covers revisions %d..%d (after %s)", reach+1, item.From-1, after)})
		case last != nil && item.From <= last.Revision && (item.From != last.From || item.Revision != last.Revision):
			problems = append(problems, Problem{Key: item.Key, Err: fmt.Errorf(
				"overlaps %s at revisions %d..%d: they cannot both belong to one history", last.Key, item.From, min(item.Revision, last.Revision))})
		}
		reach = max(reach, item.Revision)
		if last == nil || item.Revision >= last.Revision {
			d := item
			last = &d
		}
	}
	return problems
}

// fullWithin returns the revision of a full snapshot of fulls (sorted by revision) in
// from..to, the lowest one.
func fullWithin(fulls []Snapshot, from, to int64) (int64, bool) {
	i, _ := slices.BinarySearchFunc(fulls, from, func(f Snapshot, rev int64) int { return cmpInt(f.Revision, rev) })
	if i < len(fulls) && fulls[i].Revision <= to {
		return fulls[i].Revision, true
	}
	return 0, false
}

// MergeByRevision merges full snapshots and deltas (each sorted by
// CompareSnapshots) into one list ordered by first revision (a full snapshot's is its
// revision), full snapshots first.
func MergeByRevision(fulls, deltas []Snapshot) []Snapshot {
	all := slices.Concat(fulls, deltas)
	start := func(s Snapshot) int64 {
		if s.Kind == KindFull {
			return s.Revision
		}
		return s.From
	}
	slices.SortStableFunc(all, func(a, b Snapshot) int {
		switch {
		case start(a) != start(b):
			return cmpInt(start(a), start(b))
		case a.Kind != b.Kind:
			if a.Kind == KindFull {
				return -1
			}
			return 1
		}
		return CompareSnapshots(a, b)
	})
	return all
}
