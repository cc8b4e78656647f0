package catalog

import (
	"math"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var testTime = time.Date(2026, 11, 25, 15, 45, 0, 123_000_000, time.UTC)

func TestNames(t *testing.T) {
	tests := []struct {
		name string
		key  string
		want Snapshot
	}{
		{"full", FullName(12345, testTime, false), Snapshot{Kind: KindFull, Revision: 12345, Time: testTime}},
		{"full encrypted", FullName(1, testTime, true), Snapshot{Kind: KindFull, Revision: 1, Time: testTime, Encrypted: true}},
		{"full max revision", FullName(math.MaxInt64, testTime, false), Snapshot{Kind: KindFull, Revision: math.MaxInt64, Time: testTime}},
		{"delta", DeltaName(12346, 12400, testTime, false), Snapshot{Kind: KindDelta, From: 12346, Revision: 12400, Time: testTime}},
		{"delta single revision", DeltaName(7, 7, testTime, true), Snapshot{Kind: KindDelta, From: 7, Revision: 7, Time: testTime, Encrypted: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := ParseName(tt.key)
			require.True(t, ok, "ParseName(%q)", tt.key)
			tt.want.Key = tt.key
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestNameFormat(t *testing.T) {
	assert.Equal(t, "full/00000000000000012345-20261125T154500.123Z.db.zst", FullName(12345, testTime, false))
	assert.Equal(t, "delta/00000000000000000010-00000000000000000020-20261125T154500.123Z.delta.zst.age", DeltaName(10, 20, testTime, true))
	// Other zones are written in UTC; sub-millisecond digits are cut.
	local := testTime.Add(999 * time.Microsecond).In(time.FixedZone("CET", 3600))
	assert.Equal(t, "full/00000000000000000001-20261125T154500.123Z.db.zst", FullName(1, local, false))
}

func TestParseNameRejects(t *testing.T) {
	full := FullName(12345, testTime, false)
	delta := DeltaName(10, 20, testTime, false)
	for _, key := range []string{
		"",
		"full/",
		"delta/",
		"junk",
		"README.md",
		".etcdbr-cluster",
		full + ".1a2b3c4d5e6f.tmp", // fileblob temporary file
		full + ".attrs",            // fileblob metadata sidecar
		full + ".age.attrs",        // sidecar of an encrypted object
		"/" + full,                 // leading slash
		"prefix/" + full,           // not relative to the prefix
		"full/0000000000000012345-20261125T154500.123Z.db.zst",   // 19 digits
		"full/000000000000000012345-20261125T154500.123Z.db.zst", // 21 digits
		"full/00000000000000012345-20261125T154500Z.db.zst",      // no milliseconds
		"full/00000000000000012345-20261125T154500.12Z.db.zst",   // 2 fraction digits
		"full/00000000000000012345-20261125T154500.123.db.zst",   // no Z
		"full/00000000000000012345-20261325T154500.123Z.db.zst",  // month 13
		"full/00000000000000012345-20261125T154500.123Z.db",      // not compressed
		"full/00000000000000012345-20261125T154500.123Z.db.gz",
		"full/00000000000000012345-20261125T154500.123Z.delta.zst", // wrong extension for kind
		"full/+0000000000000012345-20261125T154500.123Z.db.zst",    // sign
		"full/-0000000000000012345-20261125T154500.123Z.db.zst",
		"full/0000000000000001234a-20261125T154500.123Z.db.zst",
		"full/99999999999999999999-20261125T154500.123Z.db.zst", // overflows int64
		"full/00000000000000000000-20261125T154500.123Z.db.zst", // revision 0
		"full/00000000000000012345_20261125T154500.123Z.db.zst",
		"full/x/00000000000000012345-20261125T154500.123Z.db.zst",
		"full/00000000000000012345-20261125T154500.123Z.db.zst.age.age",
		"delta/00000000000000000020-00000000000000000010-20261125T154500.123Z.delta.zst", // from > to
		"delta/00000000000000000000-00000000000000000010-20261125T154500.123Z.delta.zst", // from 0
		"delta/0000000000000000010-00000000000000000020-20261125T154500.123Z.delta.zst",
		"delta/00000000000000000010-00000000000000000020-20261125T154500.123Z.db.zst",
		"delta/00000000000000000010-20261125T154500.123Z.delta.zst",
		delta + ".tmp",
		delta + ".attrs",
		"delta/" + full[len("full/"):],
		"FULL/" + full[len("full/"):],
	} {
		_, ok := ParseName(key)
		assert.False(t, ok, "ParseName(%q) accepted it", key)
	}
}

func TestLexicalOrderIsRevisionOrder(t *testing.T) {
	revs := []int64{1, 9, 10, 99, 100, 12345, 1 << 31, 1 << 40, math.MaxInt64}
	var fulls, deltas []string
	for i, rev := range revs {
		// Later revisions get earlier times: the order must come from the revision.
		at := testTime.Add(-time.Duration(i) * time.Hour)
		fulls = append(fulls, FullName(rev, at, false))
		deltas = append(deltas, DeltaName(rev, rev, at, false))
	}
	assert.True(t, sort.StringsAreSorted(fulls), "%q", fulls)
	assert.True(t, sort.StringsAreSorted(deltas), "%q", deltas)

	// Deltas with the same <from> order by <to>.
	a, b := DeltaName(100, 199, testTime, false), DeltaName(100, 1000, testTime, false)
	assert.Less(t, a, b)

	shuffled := slices.Clone(fulls)
	slices.Reverse(shuffled)
	slices.Sort(shuffled)
	for i, key := range shuffled {
		snap, ok := ParseName(key)
		require.True(t, ok)
		assert.Equal(t, revs[i], snap.Revision)
	}
}

func TestSnapshotValidate(t *testing.T) {
	bad := []Snapshot{
		{Kind: "", Revision: 1, Time: testTime},
		{Kind: "incremental", Revision: 1, Time: testTime},
		{Kind: KindFull, Revision: 0, Time: testTime},
		{Kind: KindFull, Revision: -1, Time: testTime},
		{Kind: KindFull, From: 3, Revision: 5, Time: testTime},
		{Kind: KindFull, Revision: 5},
		{Kind: KindFull, Revision: 5, Time: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)},
		{Kind: KindDelta, From: 0, Revision: 5, Time: testTime},
		{Kind: KindDelta, From: 6, Revision: 5, Time: testTime},
	}
	for _, snap := range bad {
		assert.Error(t, snap.Validate(), "%+v", snap)
	}
	good := []Snapshot{
		{Kind: KindFull, Revision: 1, Time: testTime},
		{Kind: KindDelta, From: 5, Revision: 5, Time: testTime},
	}
	for _, snap := range good {
		require.NoError(t, snap.Validate(), "%+v", snap)
		_, ok := ParseName(snap.Name(false))
		assert.True(t, ok)
	}
}
