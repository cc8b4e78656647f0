package rebuild

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/server/v3/lease/leasepb"

	"github.com/etcdbr/etcdbr/embedded"
	"github.com/etcdbr/etcdbr/internal/embeddedtest"
	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// writeConverted stores a delta of format version 2 (converted from another tool's backup),
// with exactly the given records: leases first.
func writeConverted(t *testing.T, s *snapstore.Store, from, to int64, leases []snapstore.Lease, revs []snapstore.Revision) {
	t.Helper()
	w, err := s.Create(context.Background(), catalog.Snapshot{Kind: catalog.KindDelta, From: from, Revision: to, Time: time.Now()})
	require.NoError(t, err)
	defer w.Abort()
	enc, err := snapstore.NewConvertedDeltaEncoder(w, from, to)
	require.NoError(t, err)
	for _, l := range leases {
		require.NoError(t, enc.Lease(l))
	}
	for _, r := range revs {
		require.NoError(t, enc.Revision(r))
	}
	require.NoError(t, enc.Close())
	_, err = w.Commit()
	require.NoError(t, err)
}

// leaseTTLs reads the TTL of every lease in the db at path.
func leaseTTLs(t *testing.T, path string) map[int64]int64 {
	t.Helper()
	db, err := bolt.Open(path, 0o400, &bolt.Options{ReadOnly: true})
	require.NoError(t, err)
	defer db.Close()
	out := map[int64]int64{}
	require.NoError(t, db.View(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("lease")).ForEach(func(_, v []byte) error {
			var l leasepb.Lease
			if err := l.Unmarshal(v); err != nil {
				return err
			}
			out[l.ID] = l.TTL
			return nil
		})
	}))
	return out
}

// A lease whose TTL the deltas' source never recorded (a delta converted from
// etcd-backup-restore) keeps its keys and gets the longest TTL of the leases the db holds
// when the replay starts, or an hour when it holds none, or the TTL asked for; a TTL a
// later record knows wins over "not recorded".
func TestReplayUnrecordedLeaseTTL(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg := embeddedtest.NewConfig(t)
	e := embeddedtest.MustStart(t, embedded.Start, cfg)
	snap := filepath.Join(t.TempDir(), "full.db")
	require.NoError(t, saveSnapshot(ctx, cfg, snap))
	e.Close()
	raw, err := os.ReadFile(snap)
	require.NoError(t, err)
	put := func(key string, rev, lease int64) *mvccpb.Event {
		return &mvccpb.Event{Type: mvccpb.PUT, Kv: &mvccpb.KeyValue{Key: []byte(key), Value: []byte("v"), CreateRevision: rev, ModRevision: rev, Version: 1, Lease: lease}}
	}
	now := time.Now()
	// Revision 2 attaches a key to lease 0x61 (TTL 600, recorded by etcdbr); 3 and 4 come
	// from etcd-backup-restore: 0x62 and 0x63 without TTL, and 0x64 unrecorded in the first
	// record but known (90) in a later one before its grant.
	first := openStore(t)
	writeRaw(t, first, 2, 2, []snapstore.Lease{{ID: 0x61, TTL: 600}}, []snapstore.Revision{{Revision: 2, Time: now, Events: []*mvccpb.Event{put("/a", 2, 0x61)}}})
	noLease := openStore(t)
	writeRaw(t, noLease, 2, 2, nil, []snapstore.Revision{{Revision: 2, Time: now, Events: []*mvccpb.Event{put("/a", 2, 0)}}})
	second := openStore(t)
	writeConverted(t, second, 3, 4, []snapstore.Lease{{ID: 0x62, TTL: snapstore.UnrecordedTTL}, {ID: 0x64, TTL: snapstore.UnrecordedTTL}, {ID: 0x64, TTL: 90}},
		[]snapstore.Revision{
			{Revision: 3, Time: now, Events: []*mvccpb.Event{put("/b", 3, 0x62), put("/c", 3, 0x64)}},
			{Revision: 4, Time: now, Events: []*mvccpb.Event{put("/d", 4, 0x62)}},
		})
	db := func() string {
		path := filepath.Join(t.TempDir(), "db")
		require.NoError(t, os.WriteFile(path, raw[:len(raw)-32], 0o600))
		return path
	}
	replay := func(path string, store *snapstore.Store, ttl int64) ReplayResult {
		res, err := replayDeltas(ctx, path, ReplayOptions{Deltas: list(t, store), Open: store.Open, MinLeaseTTL: 2, UnrecordedLeaseTTL: ttl}, replayExtras{})
		require.NoError(t, err)
		return res
	}

	// Into a db without leases: an hour.
	path := db()
	replay(path, noLease, 0)
	res := replay(path, second, 0)
	assert.Equal(t, 1, res.Unrecorded)
	assert.Equal(t, int64(DefaultUnrecordedLeaseTTL), res.UnrecordedTTL)
	assert.Equal(t, map[int64]int64{0x62: DefaultUnrecordedLeaseTTL, 0x64: 90}, leaseTTLs(t, path))

	// Into a db that holds lease 0x61 (600 s): 600.
	path = db()
	replay(path, first, 0)
	res = replay(path, second, 0)
	assert.Equal(t, int64(600), res.UnrecordedTTL)
	assert.Equal(t, map[int64]int64{0x61: 600, 0x62: 600, 0x64: 90}, leaseTTLs(t, path))

	// Asked for.
	path = db()
	replay(path, noLease, 0)
	res = replay(path, second, 42)
	assert.Equal(t, int64(42), res.UnrecordedTTL)
	assert.Equal(t, map[int64]int64{0x62: 42, 0x64: 90}, leaseTTLs(t, path))
}
