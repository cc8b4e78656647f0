package catalog

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// etcd accepts a watch at exactly its compacted revision and answers "compacted" below it: a
// watcher that saw revision n resumes at n+1, so the history a restore starts must be
// compacted above n+1 for every n a client may have seen. A restore's data dir is compacted
// at its own revision, restored + bump.
func TestRevisionBump(t *testing.T) {
	const unbacked = DefaultUnbackedRevisions
	for _, c := range []struct {
		name               string
		restored, served   int64
		newHistory         bool
		watchersResumingAt []int64 // each must be told "compacted"
	}{
		{name: "the newest point: the same history", restored: 100, served: 100},
		{name: "past everything served (cannot happen)", restored: 120, served: 100},
		{name: "one revision back, live: a caught-up watcher", restored: 99, served: 100, newHistory: true,
			watchersResumingAt: []int64{100, 101}},
		{name: "far back, live", restored: 1, served: 5000, newHistory: true, watchersResumingAt: []int64{2, 4999, 5000, 5001}},
		{name: "offline: a watcher at the store's newest", restored: 700, served: 900 + unbacked, newHistory: true,
			watchersResumingAt: []int64{901}},
		{name: "offline: revisions served but not backed up", restored: 900, served: 900 + unbacked, newHistory: true,
			watchersResumingAt: []int64{901, 900 + unbacked/2, 900 + unbacked + 1}},
		{name: "near the top of int64", restored: 1 << 61, served: 1<<61 + unbacked, newHistory: true,
			watchersResumingAt: []int64{1<<61 + unbacked + 1}},
	} {
		t.Run(c.name, func(t *testing.T) {
			bump := RevisionBump(c.restored, c.served)
			if !c.newHistory {
				require.Zero(t, bump)
				return
			}
			compacted := c.restored + int64(bump)
			require.Greater(t, compacted, c.served+1, "a watcher that saw the newest served revision resumes at served+1")
			for _, at := range c.watchersResumingAt {
				require.Less(t, at, compacted, "a watcher resuming at %d is accepted, not told it was compacted", at)
			}
			require.Equal(t, c.served+BumpMargin, compacted)
		})
	}
}

// The range between two histories is a boundary, not a range retention pruned; a pruned
// range elsewhere stays pruned.
func TestWindowWithHistories(t *testing.T) {
	fulls := []Snapshot{full(10, 0), full(60, 10), full(1_300, 20)}
	deltas := []Snapshot{delta(11, 30, 1), delta(61, 300, 11), delta(1_301, 1_400, 21)}
	w := RestorableWindow(fulls, deltas)
	require.Len(t, w.Pruned, 2)
	h := History{Start: 1_300, Revision: 40, Served: 300}
	w = w.WithHistories([]History{h})
	require.Equal(t, []Gap{{From: 31, To: 59, After: deltas[0].Key, Before: fulls[1].Key}}, w.Pruned)
	require.Equal(t, []Boundary{{From: 301, To: 1_299, After: deltas[1].Key, Before: fulls[2].Key, History: h}}, w.Boundaries)
	require.Equal(t, int64(1_400), w.Newest.Revision)
}
