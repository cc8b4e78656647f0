package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/etcdbr/etcdbr/internal/diskspace"
	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// GcCmd is `etcdbr gc`: deletes old backups by the retention policy.
type GcCmd struct {
	StoreFlags    `embed:""`
	GCPolicyFlags `embed:""`
	DryRun        bool `help:"Print what would be deleted and why; delete nothing." env:"ETCDBR_GC_DRY_RUN"`
}

// Help says what gc keeps whatever the policy says, and how it deletes.
func (c *GcCmd) Help() string {
	return "Lists the store once, prints what the policy keeps and what it deletes and why, then deletes " +
		"(with --dry-run, only prints). Whatever the policy says, it never deletes what the newest point or " +
		"a kept point needs to be restored, nor anything a restore in progress reads (restores announce " +
		"themselves in the store). Deltas go first, newest first, then full snapshots, so that if it is " +
		"interrupted, everything left still restores; running it again finishes the job. " +
		"`etcdbr run` collects garbage by itself with the same flags (and --gc-period). See docs/retention.md."
}

// Run collects garbage.
func (c *GcCmd) Run(ctx context.Context, env *Env) error {
	policy, err := c.policy()
	if err != nil {
		return err
	}
	store, err := c.openExisting(ctx, env.Log)
	if err != nil {
		return err
	}
	defer store.Close()
	listing, err := store.ListForGC(ctx)
	if err != nil {
		return err
	}
	now := time.Now()
	plan, err := catalog.PlanGC(listing, policy, now)
	if err != nil {
		return err
	}
	out := env.Stdout
	printPlan(out, store.URL(), listing, plan)
	if plan.Paused != "" {
		fmt.Fprintf(out, "nothing is deleted: %s\n", plan.Paused)
		return nil
	}
	if c.DryRun {
		for _, d := range plan.Delete {
			fmt.Fprintf(out, "would delete %s: %s\n", d.Snapshot.Key, d.Reason)
		}
		for _, l := range plan.StaleLocks {
			fmt.Fprintf(out, "would delete %s: the lock of a restore that ended without removing it (it stopped protecting at %s)\n",
				l.Key, listTime(l.End()))
		}
		fmt.Fprintf(out, "would delete %s; would keep %s and %s\n", countObjects(plan.Delete),
			count(plan.KeptFulls, "full snapshot"), count(plan.KeptDeltas, "delta"))
		return nil
	}
	res, err := store.ApplyGC(ctx, plan, snapstore.ApplyOptions{
		Log:     env.Log,
		Deleted: func(d catalog.Decision) { fmt.Fprintf(out, "deleted %s: %s\n", d.Snapshot.Key, d.Reason) },
	})
	fmt.Fprintf(out, "deleted %s and %s (%s)", count(res.DeletedFulls, "full snapshot"), count(res.DeletedDeltas, "delta"), diskspace.Bytes(res.Bytes))
	if res.StaleLocks > 0 {
		fmt.Fprintf(out, " and %s", count(res.StaleLocks, "dead restore lock"))
	}
	if res.AbandonedTemps > 0 {
		fmt.Fprintf(out, " and %s of uploads that never finished (%s)", count(res.AbandonedTemps, "temporary file"), diskspace.Bytes(res.AbandonedTempBytes))
	}
	fmt.Fprintf(out, "; kept %s and %s\n", count(plan.KeptFulls, "full snapshot"), count(plan.KeptDeltas, "delta"))
	switch {
	case err != nil:
		return fmt.Errorf("%w (%d objects left; everything in the store still restores: run etcdbr gc again)", err, res.Left)
	case res.Stopped != "":
		fmt.Fprintf(out, "stopped: %s (%d objects left)\n", res.Stopped, res.Left)
	}
	return nil
}

// printPlan prints the store, the policy, the window and what is kept.
func printPlan(out io.Writer, url string, l catalog.Listing, plan catalog.GCPlan) {
	fmt.Fprintf(out, "store %s: %d full snapshots, %d deltas\n", url, len(l.Fulls), len(l.Deltas))
	fmt.Fprintf(out, "policy: %s\n", plan.Policy)
	fmt.Fprintf(out, "now: %s\n", listTime(plan.Now))
	if plan.WindowBase.Key != "" {
		fmt.Fprintf(out, "point-in-time window: every point from %s to the newest, restored from %s\n",
			listTime(plan.WindowFrom), plan.WindowBase.Key)
	}
	for _, l := range plan.Locks {
		what := fmt.Sprintf("%d objects", len(l.Keys))
		if l.Pending() {
			what = "everything, while it plans"
		}
		fmt.Fprintf(out, "restore in progress: %s, until %s at the latest: keeps %s\n", l, listTime(l.End()), what)
	}
	if plan.Paused != "" {
		return // everything is kept, for the reason Run prints
	}
	// The full snapshots and anything kept for a reason of its own, one per line; the
	// deltas of the window, counted.
	windowDeltas := 0
	for _, d := range plan.Kept() {
		if d.Snapshot.Kind == catalog.KindDelta && isWindowReason(d.Reason) {
			windowDeltas++
			continue
		}
		fmt.Fprintf(out, "keep %s: %s\n", d.Snapshot.Key, d.Reason)
	}
	if windowDeltas > 0 {
		fmt.Fprintf(out, "keep %s: in the point-in-time window\n", count(windowDeltas, "delta"))
	}
}

// isWindowReason reports whether a delta is kept only for the point-in-time window.
func isWindowReason(reason string) bool {
	return strings.HasPrefix(reason, "in the point-in-time window from ") && !strings.Contains(reason, ";")
}

// countObjects says how many objects of each kind, and how many bytes.
func countObjects(ds []catalog.Decision) string {
	var fulls, deltas int
	var bytes int64
	for _, d := range ds {
		if d.Snapshot.Kind == catalog.KindFull {
			fulls++
		} else {
			deltas++
		}
		bytes += d.Snapshot.Size
	}
	return fmt.Sprintf("%s and %s (%s)", count(fulls, "full snapshot"), count(deltas, "delta"), diskspace.Bytes(bytes))
}

// count is "1 delta", "2 deltas".
func count(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}
