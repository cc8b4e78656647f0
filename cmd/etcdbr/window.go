package main

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// windowHole is a range of revisions inside the restorable window that does not restore:
// pruned by retention, a gap, or between two histories.
type windowHole struct {
	kind          string // "pruned", "gap", "history"
	from, to      int64
	after, before string // the keys of the objects on either side
	note          string
}

// windowView is the restorable window as the compact views print it: its ends and its
// holes (from GET /v1/backups or from a listing of the store).
type windowView struct {
	empty                  bool
	oldest, newest         int64
	oldestTime, newestTime time.Time
	holes                  []windowHole
}

// viewOfWindow builds the compact view of a store's window.
func viewOfWindow(w catalog.Window) windowView {
	v := windowView{empty: w.Oldest.Key == "", oldest: w.Oldest.Revision, newest: w.Newest.Revision,
		oldestTime: w.Oldest.Time, newestTime: w.Newest.Time}
	for _, g := range w.Pruned {
		v.holes = append(v.holes, windowHole{kind: "pruned", from: g.From, to: g.To, after: g.After, before: g.Before,
			note: "deltas pruned by retention (expected)"})
	}
	for _, g := range w.Gaps {
		v.holes = append(v.holes, windowHole{kind: "gap", from: g.From, to: g.To, after: g.After, before: g.Before,
			note: "points lost: no delta holds these revisions"})
	}
	for _, b := range w.Boundaries {
		v.holes = append(v.holes, windowHole{kind: "history", from: b.From, to: b.To, after: b.After, before: b.Before,
			note: historyNote(b.History.Start, b.History.Revision, b.History.Trigger, b.History.Began)})
	}
	return v
}

// historyNote says what started a new history.
func historyNote(start, restored int64, trigger string, began time.Time) string {
	by := "a restore"
	if trigger != "" {
		by = fmt.Sprintf("a restore (%s)", trigger)
	}
	return fmt.Sprintf("between histories: %s at %s went back to revision %d and started a new history at revision %d",
		by, listTime(began), restored, start)
}

// keyTime is the time in a backup object's name (zero when the key is not one).
func keyTime(key string) time.Time {
	s, _ := catalog.ParseName(key)
	return s.Time
}

// printCompactWindow prints the window one line per range, in revision order: the ranges
// that restore, and between them the pruned ranges, gaps and the ranges between histories,
// each with its revisions and times.
func printCompactWindow(out io.Writer, v windowView) error {
	if v.empty {
		_, err := fmt.Fprintln(out, "restorable: nothing (the store has no full snapshot)")
		return err
	}
	fmt.Fprintf(out, "restorable: revision %d (%s) to revision %d (%s)\n",
		v.oldest, listTime(v.oldestTime), v.newest, listTime(v.newestTime))
	holes := slices.Clone(v.holes)
	slices.SortStableFunc(holes, func(a, b windowHole) int { return cmp.Compare(a.from, b.from) })
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	line := func(kind string, from, to int64, t0, t1 time.Time, note string) {
		revs := fmt.Sprintf("%d-%d", from, to)
		if from == to {
			revs = fmt.Sprint(from)
		}
		if note != "" {
			note = "\t" + note
		}
		fmt.Fprintf(w, "  %s\t%s\t%s .. %s%s\n", kind, revs, listTime(t0), listTime(t1), note)
	}
	next, nextTime := v.oldest, v.oldestTime
	for _, h := range holes {
		if h.from > next && next <= v.newest {
			end, endTime := min(h.from-1, v.newest), keyTime(h.after)
			if end == v.newest {
				endTime = v.newestTime
			}
			line("restorable", next, end, nextTime, endTime, "")
		}
		line(h.kind, h.from, h.to, keyTime(h.after), keyTime(h.before), h.note)
		if h.to+1 > next {
			next, nextTime = h.to+1, keyTime(h.before)
		}
	}
	if next <= v.newest {
		line("restorable", next, v.newest, nextTime, v.newestTime, "")
	}
	return w.Flush()
}
