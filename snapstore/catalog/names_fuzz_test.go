package catalog

import (
	"testing"
	"time"
)

// FuzzName checks object names both ways.
//
// key: a key ParseName accepts is exactly the name its fields format to (Name(Encrypted)),
// its fields pass Validate, and nothing else is read from it (Size 0, never RevisionAtLeast).
//
// kind, from, rev, unixMilli, encrypted: the fields of a snapshot that Validate accepts
// format to a name that ParseName reads back to the same fields.
func FuzzName(f *testing.F) {
	at := time.Date(2026, 11, 25, 15, 45, 0, 123_000_000, time.UTC)
	f.Add(FullName(12345, at, false), false, int64(0), int64(12345), at.UnixMilli(), false)
	f.Add(DeltaName(10, 20, at, true), true, int64(10), int64(20), at.UnixMilli(), true)
	f.Add("full/00000000000000012345-20261125T154500.123Z.db.zst.tmp", false, int64(0), int64(1), int64(0), false)
	f.Add("delta/00000000000000000001-00000000000000000001-99991231T235959.999Z.delta.zst.age", true,
		int64(1), int64(1), int64(253402300799999), false)
	f.Add("full/09223372036854775807-00000101T000000.000Z.db.zst", false, int64(0), int64(9223372036854775807),
		int64(-62167219200000), true)
	f.Fuzz(func(t *testing.T, key string, delta bool, from, rev, unixMilli int64, encrypted bool) {
		if snap, ok := ParseName(key); ok {
			if err := snap.Validate(); err != nil {
				t.Fatalf("ParseName(%q) = %+v, which fails Validate: %v", key, snap, err)
			}
			if name := snap.Name(snap.Encrypted); name != key {
				t.Fatalf("ParseName(%q) = %+v, which formats to %q", key, snap, name)
			}
			if snap.Key != key || snap.Size != 0 || snap.RevisionAtLeast || snap.Time.Location() != time.UTC ||
				!snap.Time.Equal(snap.Time.Truncate(time.Millisecond)) {
				t.Fatalf("ParseName(%q) = %+v", key, snap)
			}
		}

		snap := Snapshot{Kind: KindFull, From: from, Revision: rev, Time: time.UnixMilli(unixMilli).UTC()}
		if delta {
			snap.Kind = KindDelta
		}
		if snap.Validate() != nil {
			return
		}
		name := snap.Name(encrypted)
		got, ok := ParseName(name)
		if !ok {
			t.Fatalf("ParseName does not read %q, the name of %+v", name, snap)
		}
		if got.Kind != snap.Kind || got.From != snap.From || got.Revision != snap.Revision || !got.Time.Equal(snap.Time) ||
			got.Encrypted != encrypted || got.Key != name {
			t.Fatalf("%+v is named %q, which ParseName reads as %+v", snap, name, got)
		}
	})
}
