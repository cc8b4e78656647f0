package snapstore

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// A damage record applies to the object it names while it has the size it had; an object
// replaced by another of another size, or gone, is not taken for damaged.
func TestDamageRecords(t *testing.T) {
	ctx := context.Background()
	s := openMemStore(t, Options{})
	at := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	bad := catalog.Snapshot{Kind: catalog.KindDelta, From: 11, Revision: 20, Time: at, Key: catalog.DeltaName(11, 20, at, false), Size: 300}
	good := catalog.Snapshot{Kind: catalog.KindDelta, From: 21, Revision: 30, Time: at, Key: catalog.DeltaName(21, 30, at, false), Size: 400}
	full := catalog.Snapshot{Kind: catalog.KindFull, Revision: 10, Time: at, Key: catalog.FullName(10, at, false), Size: 1000}
	require.NoError(t, s.RecordDamage(ctx, bad, "restore", errors.New("corrupt backup object: sha256 mismatch")))

	got, err := s.DamagedIn(ctx, []catalog.Snapshot{full}, []catalog.Snapshot{bad, good})
	require.NoError(t, err)
	require.Len(t, got, 1)
	d := got[bad.Key]
	require.Equal(t, bad.Key, d.Key)
	require.Equal(t, "restore", d.By)
	require.Contains(t, d.Reason, "sha256 mismatch")
	require.Equal(t, []catalog.Snapshot{good}, catalog.WithoutDamaged([]catalog.Snapshot{bad, good}, got))

	// Found again (by verify), the damage keeps its first record.
	require.NoError(t, s.RecordDamage(ctx, bad, "verify", errors.New("found again")))
	got, err = s.DamagedIn(ctx, []catalog.Snapshot{bad})
	require.NoError(t, err)
	require.Equal(t, d, got[bad.Key], "a second finding replaced the first record")

	replaced := bad
	replaced.Size = 301
	got, err = s.DamagedIn(ctx, []catalog.Snapshot{replaced, good})
	require.NoError(t, err)
	require.Empty(t, got, "an object of another size than the damaged one")
	got, err = s.DamagedIn(ctx, []catalog.Snapshot{good})
	require.NoError(t, err)
	require.Empty(t, got, "an object no longer listed")

	// Snapshot listings ignore damage records.
	deltas, err := s.List(ctx, catalog.KindDelta)
	require.NoError(t, err)
	require.Empty(t, deltas)
}

// DamageRecords finds the records that apply without a listing of the backups: the object
// is there with the size it had when it was found damaged.
func TestDamageRecordsWithoutListing(t *testing.T) {
	ctx := context.Background()
	s := openMemStore(t, Options{})
	at := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	var snaps []catalog.Snapshot
	for i := range int64(3) {
		snaps = append(snaps, writeObject(t, s, catalog.Snapshot{Kind: catalog.KindDelta, From: 10*i + 1, Revision: 10*i + 10, Time: at},
			randomBytes(300, uint64(i))))
	}
	got, err := s.DamageRecords(ctx)
	require.NoError(t, err)
	require.Empty(t, got)
	for _, snap := range snaps {
		require.NoError(t, s.RecordDamage(ctx, snap, "verify", ErrCorrupt))
	}
	// The second replaced by an object of another size, the third gone: only the first applies.
	require.NoError(t, s.bucket.WriteAll(ctx, snaps[1].Key, []byte("another object"), nil))
	require.NoError(t, s.Delete(ctx, snaps[2]))
	got, err = s.DamageRecords(ctx)
	require.NoError(t, err)
	require.Len(t, got, 1)
	require.Equal(t, snaps[0].Key, got[0].Key)
	require.Equal(t, "verify", got[0].By)
}
