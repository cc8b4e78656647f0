package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// putObjects writes backup objects (names only matter to list) into the file store at dir.
func putObjects(t *testing.T, dir string, snaps ...catalog.Snapshot) []catalog.Snapshot {
	t.Helper()
	ctx := context.Background()
	s, err := snapstore.Open(ctx, "file://"+dir, snapstore.Options{})
	require.NoError(t, err)
	defer s.Close()
	var out []catalog.Snapshot
	for _, snap := range snaps {
		w, err := s.Create(ctx, snap)
		require.NoError(t, err)
		_, err = w.Write([]byte("payload"))
		require.NoError(t, err)
		done, err := w.Commit()
		require.NoError(t, err)
		out = append(out, done)
	}
	return out
}

// etcdbr list tells the holes that retention leaves between the full snapshots it keeps
// (expected) from breaks in a chain of deltas (a warning).
func TestListPrunedAndGaps(t *testing.T) {
	t0 := time.Date(2026, 11, 25, 10, 0, 0, 200e6, time.UTC)
	full := func(rev int64, h int) catalog.Snapshot {
		return catalog.Snapshot{Kind: catalog.KindFull, Revision: rev, Time: t0.Add(time.Duration(h) * time.Hour)}
	}
	delta := func(from, to int64, h, m int) catalog.Snapshot {
		return catalog.Snapshot{Kind: catalog.KindDelta, From: from, Revision: to,
			Time: t0.Add(time.Duration(h)*time.Hour + time.Duration(m)*time.Minute)}
	}
	// What garbage collection leaves: full snapshots an hour apart, the deltas between the
	// first two deleted, the second's chain cut short (a restore's lock kept its
	// beginning), and the chain of the newest, whose first delta starts before it.
	dir := t.TempDir()
	kept := putObjects(t, dir, full(100, 0), full(200, 1), delta(201, 230, 1, 10), full(300, 2),
		delta(295, 320, 2, 1), delta(321, 340, 2, 2))
	f100, f200, d230, f300, d340 := kept[0], kept[1], kept[2], kept[3], kept[5]
	store := "file://" + dir

	code, out := etcdbr(t, "list", "--store", store, "--objects")
	require.Equal(t, exitOK, code, out)
	t.Log(out)
	for _, s := range []string{f100.Key, d340.Key, "restorable: revision 100 (2026-11-25T10:00:00.200Z) to revision 340 (",
		"pruned: not restorable between revision 100 (2026-11-25T10:00:00.200Z, " + f100.Key + ") and revision 200 (2026-11-25T11:00:00.200Z, " +
			f200.Key + "): deltas pruned by retention (expected); restorable to the full snapshots themselves",
		"pruned: not restorable between revision 230 (2026-11-25T11:10:00.200Z, " + d230.Key + ") and revision 300 (2026-11-25T12:00:00.200Z, " +
			f300.Key + "): deltas pruned by retention (expected); restorable to every revision up to 230 and to the full snapshot at revision 300",
	} {
		assert.Contains(t, out, s)
	}
	assert.NotContains(t, out, "gap")
	assert.Less(t, strings.Index(out, "between revision 100"), strings.Index(out, "between revision 230"), "in revision order")

	// A delta inside a pruned range that no chain reaches: a break in a chain, not pruning.
	stray := putObjects(t, dir, delta(250, 260, 1, 30))[0]
	code, out = etcdbr(t, "list", "--store", store, "--window-only")
	require.Equal(t, exitOK, code, out)
	t.Log(out)
	assert.NotContains(t, out, stray.Key, "--window-only lists no objects")
	assert.Contains(t, out, "pruned: not restorable between revision 100 ")
	assert.Contains(t, out, fmt.Sprintf("gap: revisions 231 to 299 cannot be restored: no delta holds revision 231 after %s; next: %s "+
		"(a break in a chain of deltas: the store holds deltas in it that no restore can reach; points were lost)", d230.Key, f300.Key))
	assert.NotContains(t, out, "between revision 230")

	// A break after the newest full snapshot loses the newest points: a gap.
	dir2 := t.TempDir()
	snaps := putObjects(t, dir2, full(100, 0), full(200, 1), delta(201, 230, 1, 10), delta(241, 250, 1, 20), delta(251, 260, 1, 30))
	code, out = etcdbr(t, "list", "--store", "file://"+dir2, "--window-only")
	require.Equal(t, exitOK, code, out)
	t.Log(out)
	assert.Contains(t, out, "restorable: revision 100 (2026-11-25T10:00:00.200Z) to revision 230 (")
	assert.Contains(t, out, "pruned: not restorable between revision 100 ")
	assert.Contains(t, out, fmt.Sprintf("gap: revisions 231 to 260 cannot be restored: no delta holds revision 231 after %s; next: %s "+
		"(a break in the chain of deltas after the newest full snapshot: nothing after it restores until the next full snapshot)",
		snaps[2].Key, snaps[3].Key))
}

// By default etcdbr list prints the window compactly: one line per range that restores and
// per hole, in revision order, with revisions and times, and no object table.
func TestListCompact(t *testing.T) {
	t0 := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	at := func(m int) time.Time { return t0.Add(time.Duration(m) * time.Minute) }
	dir := t.TempDir()
	s := putObjects(t, dir,
		catalog.Snapshot{Kind: catalog.KindFull, Revision: 100, Time: at(0)},
		catalog.Snapshot{Kind: catalog.KindFull, Revision: 200, Time: at(60)},
		catalog.Snapshot{Kind: catalog.KindDelta, From: 201, Revision: 230, Time: at(70)},
		catalog.Snapshot{Kind: catalog.KindDelta, From: 241, Revision: 250, Time: at(80)},
		catalog.Snapshot{Kind: catalog.KindFull, Revision: 300, Time: at(120)},
		catalog.Snapshot{Kind: catalog.KindDelta, From: 301, Revision: 340, Time: at(130)},
	)
	code, out := etcdbr(t, "list", "--store", "file://"+dir)
	require.Equal(t, exitOK, code, out)
	t.Log(out)
	for _, k := range s {
		assert.NotContains(t, out, k.Key, "the compact view lists no objects")
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		lines = append(lines, strings.Join(strings.Fields(l), " "))
	}
	assert.Equal(t, []string{
		"restorable: revision 100 (2026-11-25T10:00:00.000Z) to revision 340 (2026-11-25T12:10:00.000Z)",
		"restorable 100 2026-11-25T10:00:00.000Z .. 2026-11-25T10:00:00.000Z",
		"pruned 101-199 2026-11-25T10:00:00.000Z .. 2026-11-25T11:00:00.000Z deltas pruned by retention (expected)",
		"restorable 200-230 2026-11-25T11:00:00.000Z .. 2026-11-25T11:10:00.000Z",
		"gap 231-299 2026-11-25T11:10:00.000Z .. 2026-11-25T12:00:00.000Z points lost: no delta holds these revisions",
		"restorable 300-340 2026-11-25T12:00:00.000Z .. 2026-11-25T12:10:00.000Z",
	}, lines)

	// The sentences stay behind --window-only, the objects behind --objects.
	code, out = etcdbr(t, "list", "--store", "file://"+dir, "--window-only")
	require.Equal(t, exitOK, code, out)
	assert.Contains(t, out, "gap: revisions 231 to 299 cannot be restored")
	code, out = etcdbr(t, "list", "--store", "file://"+dir, "--objects")
	require.Equal(t, exitOK, code, out)
	assert.Contains(t, out, s[3].Key)
	code, out = etcdbr(t, "list", "--store", "file://"+dir, "--objects", "--window-only")
	require.Equal(t, exitUsage, code, out)
}
