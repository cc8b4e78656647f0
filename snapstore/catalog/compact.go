package catalog

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Chain is what a restore replays after its full snapshot: the deltas from the full
// snapshot to the chain's end. A compaction of the backup chain builds one full snapshot at
// the chain's end from them, so that the next restore replays nothing.
type Chain struct {
	// Full is the full snapshot the chain starts from, Revision the chain's end.
	Full     Snapshot
	Revision int64
	// Deltas counts the deltas, Bytes their stored size, Revisions the revisions after the
	// full snapshot up to Revision (what a restore replays).
	Deltas    int
	Bytes     int64
	Revisions int64
}

// ChainOf returns the chain a restore plan replays.
func ChainOf(p RestorePlan) Chain {
	c := Chain{Full: p.Full, Revision: p.Revision, Deltas: len(p.Deltas), Revisions: max(p.Revision-p.Full.Revision, 0)}
	for _, d := range p.Deltas {
		c.Bytes += d.Size
	}
	return c
}

// CompactBound says when the chain since the newest full snapshot is long enough for etcdbr
// run to compact it: when it passes either bound (0: no bound of that kind).
type CompactBound struct {
	// Revisions bounds the revisions a restore of the newest point replays: about its
	// replay time (etcdbr replays about 200,000 revisions/s on 2 cores; docs/bench.md).
	// Revisions, not events: the names of the deltas say how many revisions they hold,
	// while counting events would mean reading them.
	Revisions int64
	// Bytes bounds the stored size of the chain's deltas: what a restore fetches and
	// decodes besides the full snapshot.
	Bytes int64
}

// Off reports whether the bound never passes.
func (b CompactBound) Off() bool { return b.Revisions <= 0 && b.Bytes <= 0 }

// Due reports whether c passes the bound, and which bound it passes.
func (b CompactBound) Due(c Chain) (why string, due bool) {
	switch {
	case b.Revisions > 0 && c.Revisions >= b.Revisions:
		return fmt.Sprintf("%d revisions since the full snapshot, at least %d", c.Revisions, b.Revisions), true
	case b.Bytes > 0 && c.Bytes >= b.Bytes:
		return fmt.Sprintf("%d bytes of deltas since the full snapshot, at least %d", c.Bytes, b.Bytes), true
	}
	return "", false
}

// CompactPlan is what a compaction of the backup chain reads: the restore plan of its
// target (one full snapshot and the deltas after it) and its chain.
type CompactPlan struct {
	RestorePlan
	Chain Chain
	// Nothing, when not "", says why there is nothing to compact: the plan's full snapshot
	// is at the target already.
	Nothing string
}

// ErrHistoryBoundary is wrapped by the error of a compaction whose chain would cross the
// start of a history (a restore to an earlier point started it).
var ErrHistoryBoundary = errors.New("the chain crosses the start of a history")

// PlanCompaction chooses what a compaction to target reads, from a listing of the store's
// full snapshots and deltas, the objects the store records as damaged and its history
// records: the restore plan of target (PlanRestore) without the damaged objects. The target
// is a revision, or the newest point (the zero Target); a time is refused, since a
// compacted snapshot holds a revision.
//
// Planning fails (wrapping ErrNoChain) when no chain without damaged objects reaches the
// target; the error then names the damaged objects left out. It also fails (wrapping
// ErrHistoryBoundary) when a history starts after the plan's full snapshot and at or before
// the target: a chain never continues across a restore's new history, so such a plan would
// mean the store mixes histories.
func PlanCompaction(fulls, deltas []Snapshot, target Target, damaged map[string]Damage, hs []History) (CompactPlan, error) {
	if err := target.Validate(); err != nil {
		return CompactPlan{}, err
	}
	if !target.Time.IsZero() {
		return CompactPlan{}, fmt.Errorf("compaction target %s: a compacted full snapshot holds one revision: give a revision, or none for the newest point", target)
	}
	if len(fulls) == 0 {
		return CompactPlan{}, fmt.Errorf("%w: the store has no full snapshot to start the compaction from", ErrNoChain)
	}
	exclude := make(map[string]bool, len(damaged))
	for k := range damaged {
		exclude[k] = true
	}
	p, err := PlanRestore(fulls, deltas, target, exclude)
	if err != nil {
		if len(damaged) > 0 {
			err = fmt.Errorf("%w; left out because the store records them as damaged: %s", err, damagedList(damaged))
		}
		return CompactPlan{}, err
	}
	c := CompactPlan{RestorePlan: p, Chain: ChainOf(p)}
	if p.Revision <= p.Full.Revision {
		c.Nothing = fmt.Sprintf("the full snapshot %s holds revision %d already", p.Full.Key, p.Full.Revision)
		return c, nil
	}
	for _, h := range hs {
		if h.Start > p.Full.Revision && h.Start <= p.Revision {
			return CompactPlan{}, fmt.Errorf("%w: compacting from %s (revision %d) to revision %d would cross revision %d, where "+
				"a restore at %s to revision %d started a new history; the deltas cannot belong to both: compact up to "+
				"revision %d at most, or from a full snapshot of the new history",
				ErrHistoryBoundary, p.Full.Key, p.Full.Revision, p.Revision, h.Start, h.Began.UTC().Format(time.RFC3339),
				h.Revision, h.Start-1)
		}
	}
	return c, nil
}

// damagedList names damage records, sorted by key.
func damagedList(damaged map[string]Damage) string {
	keys := make([]string, 0, len(damaged))
	for k := range damaged {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		d := damaged[k]
		parts[i] = fmt.Sprintf("%s (found by %s at %s: %s)", k, d.By, d.Found.UTC().Format(time.RFC3339), d.Reason)
	}
	return strings.Join(parts, ", ")
}
