package catalog

import "time"

// SelectCopies chooses, from the source's listings (sorted by CompareSnapshots),
// the objects to copy to a destination that has the listed objects: those
// the destination lacks (the same kind, revisions and time, encrypted or
// not). With a non-zero since, it keeps only what restoring to any point
// from since on needs: the newest full snapshot taken at or before since
// (or the oldest one, if none was), and every full snapshot and delta after
// its revision. The result is in revision order, full snapshots first at
// equal revisions; skipped lists the selected objects the destination has.
func SelectCopies(fulls, deltas, dstFulls, dstDeltas []Snapshot, since time.Time) (toCopy, skipped []Snapshot) {
	base := int64(0)
	if !since.IsZero() && len(fulls) > 0 {
		base = fulls[0].Revision
		for _, f := range fulls {
			if !f.Time.After(since) {
				base = max(base, f.Revision)
			}
		}
	}
	have := map[string]bool{}
	for _, s := range append(append([]Snapshot(nil), dstFulls...), dstDeltas...) {
		have[s.Name(false)] = true
	}
	pick := func(s Snapshot, keep bool) {
		if !keep {
			return
		}
		if have[s.Name(false)] {
			skipped = append(skipped, s)
		} else {
			toCopy = append(toCopy, s)
		}
	}
	i, j := 0, 0
	for i < len(fulls) || j < len(deltas) {
		if j == len(deltas) || (i < len(fulls) && fulls[i].Revision <= deltas[j].Revision) {
			pick(fulls[i], fulls[i].Revision >= base)
			i++
		} else {
			pick(deltas[j], deltas[j].Revision > base)
			j++
		}
	}
	return toCopy, skipped
}
