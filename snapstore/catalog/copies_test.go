package catalog

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestSelectCopies(t *testing.T) {
	at := func(min int) time.Time { return testTime.Add(time.Duration(min) * time.Minute) }
	full := func(rev int64, min int) Snapshot {
		return Snapshot{Kind: KindFull, Revision: rev, Time: at(min), Key: FullName(rev, at(min), false)}
	}
	delta := func(from, to int64, min int, enc bool) Snapshot {
		return Snapshot{Kind: KindDelta, From: from, Revision: to, Time: at(min), Encrypted: enc, Key: DeltaName(from, to, at(min), enc)}
	}
	fulls := []Snapshot{full(10, 0), full(100, 60), full(200, 120)}
	deltas := []Snapshot{delta(11, 50, 30, false), delta(51, 100, 59, false), delta(101, 150, 90, false), delta(151, 210, 125, false)}
	keys := func(snaps []Snapshot) []string {
		var out []string
		for _, s := range snaps {
			out = append(out, s.Key)
		}
		return out
	}

	all, skipped := SelectCopies(fulls, deltas, nil, nil, time.Time{})
	assert.Empty(t, skipped)
	// Revision order, a full snapshot before a delta that ends at its revision.
	assert.Equal(t, keys([]Snapshot{fulls[0], deltas[0], fulls[1], deltas[1], deltas[2], fulls[2], deltas[3]}), keys(all))

	// Since 1:30: the full snapshot of 1:00 and everything after it.
	got, _ := SelectCopies(fulls, deltas, nil, nil, at(90))
	assert.Equal(t, keys([]Snapshot{fulls[1], deltas[2], fulls[2], deltas[3]}), keys(got))
	// Since before the oldest full snapshot: everything from it.
	got, _ = SelectCopies(fulls, deltas, nil, nil, at(-10))
	assert.Equal(t, keys(all), keys(got))

	// What the destination has (also encrypted there) is skipped.
	got, skipped = SelectCopies(fulls, deltas, []Snapshot{fulls[2]}, []Snapshot{delta(151, 210, 125, true)}, at(90))
	assert.Equal(t, keys([]Snapshot{fulls[1], deltas[2]}), keys(got))
	assert.Equal(t, keys([]Snapshot{fulls[2], deltas[3]}), keys(skipped))
}
