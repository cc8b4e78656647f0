package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// ListCmd is `etcdbr list`.
type ListCmd struct {
	StoreFlags `embed:""`
	Objects    bool `help:"Print every object in a table, then the restorable window in full sentences." env:"ETCDBR_OBJECTS" xor:"view"`
	WindowOnly bool `help:"Print only the restorable window in full sentences (with what retention pruned, gaps and overlaps), not every object." env:"ETCDBR_WINDOW_ONLY" xor:"view"`
}

// Run prints the restorable window: by default compactly, one line per range that
// restores, per range retention pruned between full snapshots, per gap and per range
// between two histories; with --objects a table of the store's backups in revision order
// first, and the window in full sentences (--window-only: the sentences alone). Overlaps
// and damaged objects follow in every view.
func (c *ListCmd) Run(ctx context.Context, env *Env) error {
	store, err := c.openExisting(ctx, env.Log)
	if err != nil {
		return err
	}
	defer store.Close()
	listing, err := store.ListBackups(ctx)
	if err != nil {
		return err
	}
	fulls, deltas := listing.Fulls, listing.Deltas
	if c.Objects {
		if err := printObjects(env.Stdout, fulls, deltas); err != nil {
			return err
		}
		fmt.Fprintln(env.Stdout)
	}
	w, err := store.Window(ctx, fulls, deltas)
	if err != nil {
		return err
	}
	if c.Objects || c.WindowOnly {
		printWindow(env.Stdout, w)
	} else {
		if err := printCompactWindow(env.Stdout, viewOfWindow(w)); err != nil {
			return fmt.Errorf("print the window: %w", err)
		}
		printOverlaps(env.Stdout, w.Overlaps)
	}
	for _, d := range w.Damaged {
		fmt.Fprintf(env.Stdout, "damaged: %s failed verification in a %s at %s (%s): left out of the window; "+
			"it is still in the store: replace it from a copy if there is one\n", d.Key, d.By, listTime(d.Found), d.Reason)
	}
	return nil
}

// printObjects prints every object, in the order of the revisions they start at.
func printObjects(out io.Writer, fulls, deltas []catalog.Snapshot) error {
	all := slices.Concat(fulls, deltas)
	start := func(s catalog.Snapshot) int64 {
		if s.Kind == catalog.KindFull {
			return s.Revision
		}
		return s.From
	}
	slices.SortStableFunc(all, func(a, b catalog.Snapshot) int {
		return cmp.Or(cmp.Compare(start(a), start(b)), cmp.Compare(a.Revision, b.Revision), a.Time.Compare(b.Time))
	})
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "KIND\tFROM\tREVISION\tTIME\tSIZE\tOBJECT")
	for _, s := range all {
		from := "-"
		if s.Kind == catalog.KindDelta {
			from = fmt.Sprint(s.From)
		}
		fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%d\t%s\n", s.Kind, from, s.Revision, listTime(s.Time), s.Size, s.Key)
	}
	return w.Flush()
}

// printWindow prints the restorable window, then its holes in revision order: the ranges
// that retention pruned (expected) and the gaps that break the backups (a warning), then the
// overlaps. docs/retention.md says how the two kinds of holes are told apart.
func printWindow(out io.Writer, w catalog.Window) {
	if w.Oldest.Key == "" {
		fmt.Fprintln(out, "restorable: nothing (the store has no full snapshot)")
	} else {
		fmt.Fprintf(out, "restorable: revision %d (%s) to revision %d (%s)\n",
			w.Oldest.Revision, listTime(w.Oldest.Time), w.Newest.Revision, listTime(w.Newest.Time))
	}
	type hole struct {
		catalog.Gap
		pruned  bool
		history *catalog.History
	}
	var holes []hole
	for _, g := range w.Pruned {
		holes = append(holes, hole{Gap: g, pruned: true})
	}
	for _, g := range w.Gaps {
		holes = append(holes, hole{Gap: g})
	}
	for _, b := range w.Boundaries {
		holes = append(holes, hole{Gap: catalog.Gap{From: b.From, To: b.To, After: b.After, Before: b.Before}, history: &b.History})
	}
	slices.SortStableFunc(holes, func(a, b hole) int { return cmp.Compare(a.From, b.From) })
	for _, h := range holes {
		if h.history != nil {
			fmt.Fprintln(out, historyLine(h.Gap, *h.history))
			continue
		}
		if h.pruned {
			fmt.Fprintln(out, prunedLine(h.Gap))
			continue
		}
		fmt.Fprintf(out, "gap: revisions %d to %d cannot be restored: no delta holds revision %d after %s; next: %s (%s)\n",
			h.From, h.To, h.From, h.After, h.Before, gapMeaning(h.Gap))
	}
	printOverlaps(out, w.Overlaps)
}

// printOverlaps prints the objects that hold the same revisions.
func printOverlaps(out io.Writer, overlaps []catalog.Overlap) {
	for _, o := range overlaps {
		fmt.Fprintf(out, "overlap: %s and %s both hold revisions %d to %d: they cannot both belong to one history\n",
			o.A, o.B, o.From, o.To)
	}
}

// prunedLine describes a range between two full snapshots that no delta holds: what
// garbage collection leaves between the full snapshots it keeps.
func prunedLine(g catalog.Gap) string {
	after, _ := catalog.ParseName(g.After)
	before, _ := catalog.ParseName(g.Before)
	reach := "the full snapshots themselves"
	if after.Kind == catalog.KindDelta {
		reach = fmt.Sprintf("every revision up to %d and to the full snapshot at revision %d", after.Revision, before.Revision)
	}
	return fmt.Sprintf("pruned: not restorable between revision %d (%s, %s) and revision %d (%s, %s): "+
		"deltas pruned by retention (expected); restorable to %s",
		after.Revision, listTime(after.Time), g.After, before.Revision, listTime(before.Time), g.Before, reach)
}

// historyLine describes the range between two histories.
func historyLine(g catalog.Gap, h catalog.History) string {
	after, _ := catalog.ParseName(g.After)
	before, _ := catalog.ParseName(g.Before)
	by := "a restore"
	if h.Trigger != "" {
		by = fmt.Sprintf("a restore (%s)", h.Trigger)
	}
	return fmt.Sprintf("new history: %s at %s went back to revision %d and started a new history at revision %d; "+
		"revisions %d to %d are in neither (the old history is restorable up to revision %d (%s), the new one from "+
		"revision %d (%s))", by, listTime(h.Began), h.Revision, h.Start, g.From, g.To, after.Revision, g.After,
		before.Revision, g.Before)
}

// gapMeaning says what a gap breaks.
func gapMeaning(g catalog.Gap) string {
	if next, _ := catalog.ParseName(g.Before); next.Kind == catalog.KindFull {
		return "a break in a chain of deltas: the store holds deltas in it that no restore can reach; points were lost"
	}
	return "a break in the chain of deltas after the newest full snapshot: nothing after it restores until the next full snapshot"
}

func listTime(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05.000Z")
}
