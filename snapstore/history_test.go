package snapstore

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

func TestHistoryRecords(t *testing.T) {
	ctx := context.Background()
	s := openMemStore(t, Options{})
	hs, err := s.Histories(ctx)
	require.NoError(t, err)
	require.Empty(t, hs)

	began := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	second := catalog.History{Start: 2_000_001_400, Began: began.Add(time.Hour), Revision: 1_000_000_500, Served: 2_000_000_400, Trigger: "start"}
	first := catalog.History{Start: 1_400, Began: began, Revision: 80, RevisionTime: began.Add(-time.Minute), Served: 400, Trigger: "request"}
	require.NoError(t, s.RecordHistory(ctx, second))
	require.NoError(t, s.RecordHistory(ctx, first))
	// A restart records the same history again: the first record stays.
	again := first
	again.Trigger = "offline"
	require.NoError(t, s.RecordHistory(ctx, again))

	hs, err = s.Histories(ctx)
	require.NoError(t, err)
	first.Version, second.Version = historyVersion, historyVersion
	require.Equal(t, []catalog.History{first, second}, hs)

	// Listings of snapshots ignore history records, and the reverse.
	fulls, err := s.List(ctx, catalog.KindFull)
	require.NoError(t, err)
	require.Empty(t, fulls)
	require.Error(t, s.RecordHistory(ctx, catalog.History{Start: 0}))

	// A record that is not etcdbr's is named.
	require.NoError(t, s.bucket.WriteAll(ctx, HistoryKey(5), []byte("not json"), nil))
	_, err = s.Histories(ctx)
	require.ErrorContains(t, err, HistoryKey(5))
}
