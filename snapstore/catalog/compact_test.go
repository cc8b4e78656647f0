package catalog

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPlanCompaction(t *testing.T) {
	f100, f300 := full(100, 0), full(300, 60)
	d1, d2, d3 := delta(90, 150, 10), delta(151, 200, 20), delta(201, 310, 65)
	d4, d5 := delta(311, 400, 70), delta(401, 401, 80)
	fulls, deltas := sorted(f100, f300), sorted(d1, d2, d3, d4, d5)
	for _, d := range []*Snapshot{&d1, &d2, &d3, &d4, &d5} {
		d.Size = 1000
	}
	deltas = sorted(d1, d2, d3, d4, d5)
	damaged := func(s Snapshot, by string) map[string]Damage {
		return map[string]Damage{s.Key: {Version: 1, Key: s.Key, Size: s.Size, Found: at(90), By: by, Reason: "corrupt backup object"}}
	}
	// A new history that a restore to revision 150 started at 1,000,200: its full snapshot
	// and deltas follow the old history's.
	fNew := full(1_000_200, 100)
	dNew := delta(1_000_201, 1_000_300, 110)
	newHistory := []History{{Version: 1, Start: 1_000_200, Began: at(95), Revision: 150, Served: 999_200}}

	tests := []struct {
		name          string
		fulls, deltas []Snapshot
		target        Target
		damaged       map[string]Damage
		hs            []History
		want          Chain
		nothing       bool
		err           []string
		is            error
	}{
		{name: "the newest point: the newest full and its deltas", fulls: fulls, deltas: deltas,
			want: Chain{Full: f300, Revision: 401, Deltas: 3, Bytes: 3000, Revisions: 101}},
		{name: "a revision inside the chain", fulls: fulls, deltas: deltas, target: Target{Revision: 180},
			want: Chain{Full: f100, Revision: 180, Deltas: 2, Bytes: 2000, Revisions: 80}},
		{name: "a full snapshot's own revision: nothing to compact", fulls: fulls, deltas: deltas, target: Target{Revision: 300},
			want: Chain{Full: f300, Revision: 300}, nothing: true},
		{name: "a full snapshot alone: nothing to compact", fulls: sorted(f100),
			want: Chain{Full: f100, Revision: 100}, nothing: true},
		{name: "a damaged full snapshot: an older one and a longer chain", fulls: fulls, deltas: deltas, damaged: damaged(f300, "verify"),
			want: Chain{Full: f100, Revision: 401, Deltas: 5, Bytes: 5000, Revisions: 301}},
		{name: "no full snapshot", deltas: deltas, err: []string{"no full snapshot"}, is: ErrNoChain},
		{name: "a revision after the newest", fulls: fulls, deltas: deltas, target: Target{Revision: 402},
			err: []string{"revision 402 is not in the store"}, is: ErrNoChain},
		{name: "a revision before the oldest full snapshot", fulls: fulls, deltas: deltas, target: Target{Revision: 99},
			err: []string{"before the oldest full snapshot"}, is: ErrNoChain},
		{name: "a time", fulls: fulls, deltas: deltas, target: Target{Time: at(30)}, err: []string{"give a revision"}},
		{name: "a damaged delta the chain needs", fulls: fulls, deltas: deltas, damaged: damaged(d4, "restore"),
			err: []string{"no delta holds revision 311", d4.Key + " (found by restore at", "corrupt backup object"}, is: ErrNoChain},
		{name: "across the start of a history", fulls: sorted(f100, f300), deltas: sorted(d1, d2, d3, d4, d5,
			delta(402, 1_000_300, 120)), hs: newHistory,
			err: []string{"would cross revision 1000200", "restore at 2026-11-25T11:35:00Z to revision 150", "up to revision 1000199"}, is: ErrHistoryBoundary},
		{name: "inside the new history", fulls: sorted(f100, f300, fNew), deltas: sorted(d1, d2, d3, d4, d5, dNew), hs: newHistory,
			want: Chain{Full: fNew, Revision: 1_000_300, Deltas: 1, Revisions: 100}},
		{name: "inside the old history", fulls: sorted(f100, f300, fNew), deltas: sorted(d1, d2, d3, d4, d5, dNew), hs: newHistory,
			target: Target{Revision: 350}, want: Chain{Full: f300, Revision: 350, Deltas: 2, Bytes: 2000, Revisions: 50}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := PlanCompaction(tc.fulls, tc.deltas, tc.target, tc.damaged, tc.hs)
			if len(tc.err) > 0 {
				require.Error(t, err)
				for _, s := range tc.err {
					assert.Contains(t, err.Error(), s)
				}
				if tc.is != nil {
					assert.True(t, errors.Is(err, tc.is), "%v does not wrap %v", err, tc.is)
				}
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, p.Chain)
			assert.Equal(t, tc.nothing, p.Nothing != "", p.Nothing)
		})
	}
}

func TestCompactBound(t *testing.T) {
	c := Chain{Revisions: 1000, Bytes: 5 << 20}
	tests := []struct {
		bound CompactBound
		due   bool
		why   string
	}{
		{CompactBound{}, false, ""},
		{CompactBound{Revisions: 1001}, false, ""},
		{CompactBound{Revisions: 1000}, true, "1000 revisions since the full snapshot"},
		{CompactBound{Bytes: 5 << 20}, true, "5242880 bytes of deltas"},
		{CompactBound{Revisions: 5000, Bytes: 6 << 20}, false, ""},
		{CompactBound{Revisions: 5000, Bytes: 1 << 20}, true, "bytes of deltas"},
	}
	for _, tc := range tests {
		why, due := tc.bound.Due(c)
		assert.Equal(t, tc.due, due, "%+v", tc.bound)
		assert.Contains(t, why, tc.why)
		assert.Equal(t, tc.bound.Revisions <= 0 && tc.bound.Bytes <= 0, tc.bound.Off())
	}
}
