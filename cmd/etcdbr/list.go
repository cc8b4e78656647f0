package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/etcdbr/etcdbr/snapstore"
)

// ListCmd is `etcdbr list`.
type ListCmd struct {
	StoreFlags `embed:""`
	WindowOnly bool `help:"Print only the restorable window, gaps and overlaps, not every object." env:"ETCDBR_WINDOW_ONLY"`
}

// Run prints a table of the store's backups in revision order, then the restorable window:
// the revisions (and times) a restore can reach, and the gaps and overlaps that break it.
func (c *ListCmd) Run(ctx context.Context, env *Env) error {
	store, err := c.open(ctx)
	if err != nil {
		return err
	}
	defer store.Close()
	fulls, err := store.List(ctx, snapstore.KindFull)
	if err != nil {
		return err
	}
	deltas, err := store.List(ctx, snapstore.KindDelta)
	if err != nil {
		return err
	}
	if !c.WindowOnly {
		if err := printObjects(env.Stdout, fulls, deltas); err != nil {
			return err
		}
		fmt.Fprintln(env.Stdout)
	}
	printWindow(env.Stdout, snapstore.RestorableWindow(fulls, deltas))
	return nil
}

// printObjects prints every object, in the order of the revisions they start at.
func printObjects(out io.Writer, fulls, deltas []snapstore.Snapshot) error {
	all := slices.Concat(fulls, deltas)
	start := func(s snapstore.Snapshot) int64 {
		if s.Kind == snapstore.KindFull {
			return s.Revision
		}
		return s.From
	}
	slices.SortStableFunc(all, func(a, b snapstore.Snapshot) int {
		return cmp.Or(cmp.Compare(start(a), start(b)), cmp.Compare(a.Revision, b.Revision), a.Time.Compare(b.Time))
	})
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "KIND\tFROM\tREVISION\tTIME\tSIZE\tOBJECT")
	for _, s := range all {
		from := "-"
		if s.Kind == snapstore.KindDelta {
			from = fmt.Sprint(s.From)
		}
		fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%d\t%s\n", s.Kind, from, s.Revision, listTime(s.Time), s.Size, s.Key)
	}
	return w.Flush()
}

// printWindow prints the restorable window with its gaps and overlaps.
func printWindow(out io.Writer, w snapstore.Window) {
	if w.Oldest.Key == "" {
		fmt.Fprintln(out, "restorable: nothing (the store has no full snapshot)")
	} else {
		fmt.Fprintf(out, "restorable: revision %d (%s) to revision %d (%s)\n",
			w.Oldest.Revision, listTime(w.Oldest.Time), w.Newest.Revision, listTime(w.Newest.Time))
	}
	for _, g := range w.Gaps {
		fmt.Fprintf(out, "gap: revisions %d to %d cannot be restored: no delta holds revision %d after %s; next: %s\n",
			g.From, g.To, g.From, g.After, g.Before)
	}
	for _, o := range w.Overlaps {
		fmt.Fprintf(out, "overlap: %s and %s both hold revisions %d to %d: they cannot both belong to one history\n",
			o.A, o.B, o.From, o.To)
	}
}

func listTime(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05.000Z")
}
