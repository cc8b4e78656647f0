package catalog

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCheckChain(t *testing.T) {
	full := func(rev int64) Snapshot {
		return Snapshot{Kind: KindFull, Revision: rev, Time: testTime, Key: FullName(rev, testTime, false)}
	}
	delta := func(from, to int64, sec int) Snapshot {
		at := testTime.Add(time.Duration(sec) * time.Second)
		return Snapshot{Kind: KindDelta, From: from, Revision: to, Time: at, Key: DeltaName(from, to, at, false)}
	}
	for _, tc := range []struct {
		name   string
		fulls  []Snapshot
		deltas []Snapshot
		want   []string // substrings of the problems, in order
	}{
		{"empty", nil, nil, []string{"the store is empty"}},
		{"deltas without a full", nil, []Snapshot{delta(1, 5, 0)}, []string{"no full snapshot"}},
		{"fulls only", []Snapshot{full(10), full(20)}, nil, nil},
		{"continuous", []Snapshot{full(10), full(25)}, []Snapshot{delta(11, 20, 0), delta(21, 30, 1), delta(31, 31, 2)}, nil},
		{"a delta straddles a full", []Snapshot{full(10), full(15)}, []Snapshot{delta(11, 20, 0), delta(21, 22, 1)}, nil},
		{"retried upload of one range", []Snapshot{full(10)}, []Snapshot{delta(11, 20, 0), delta(11, 20, 5), delta(21, 30, 6)}, nil},
		{"deltas before the oldest full are ignored", []Snapshot{full(10)}, []Snapshot{delta(1, 3, 0), delta(7, 10, 0), delta(11, 12, 1)}, nil},
		{"gap", []Snapshot{full(10)}, []Snapshot{delta(11, 20, 0), delta(26, 30, 1)},
			[]string{"gap: no delta covers revisions 21..25 (after delta/00000000000000000011-00000000000000000020"}},
		{"gap right after the full", []Snapshot{full(10)}, []Snapshot{delta(12, 20, 0)},
			[]string{"gap: no delta covers revisions 11..11 (after the full snapshot at revision 10)"}},
		{"a later full bridges a revision bump", []Snapshot{full(10), full(1000)}, []Snapshot{delta(11, 20, 0), delta(1001, 1010, 1)}, nil},
		{"deltas pruned between two kept fulls", []Snapshot{full(100), full(300)}, []Snapshot{delta(101, 150, 0), delta(295, 320, 1)}, nil},
		{"no delta left before the newer full", []Snapshot{full(100), full(300)}, []Snapshot{delta(295, 320, 1)}, nil},
		{"a stranded delta between two fulls", []Snapshot{full(100), full(300)}, []Snapshot{delta(150, 160, 0), delta(295, 320, 1)},
			[]string{"gap: no delta covers revisions 101..149 (after the full snapshot at revision 100)"}},
		{"a delta ends right before the newer full", []Snapshot{full(100), full(300)}, []Snapshot{delta(280, 299, 0), delta(301, 320, 1)},
			[]string{"gap: no delta covers revisions 101..279"}},
		{"overlap", []Snapshot{full(10)}, []Snapshot{delta(11, 20, 0), delta(15, 25, 1)},
			[]string{"overlaps delta/00000000000000000011-00000000000000000020"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			problems := CheckChain(tc.fulls, tc.deltas)
			require.Len(t, problems, len(tc.want), "%v", problems)
			for i, want := range tc.want {
				assert.Contains(t, problems[i].String(), want)
			}
		})
	}
}
