package supervisor

import (
	"bytes"
	"compress/gzip"
	"compress/lzw"
	"compress/zlib"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdbr/etcdbr/embedded"
	"github.com/etcdbr/etcdbr/embedded/rebuild"
	"github.com/etcdbr/etcdbr/internal/deltatest"
	"github.com/etcdbr/etcdbr/internal/embeddedtest"
	"github.com/etcdbr/etcdbr/internal/etcdtest"
	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// ebrWrite writes data as the object key of an etcd-backup-restore store in dir, compressed
// as its name's suffix says, as etcd-backup-restore's compressor does.
func ebrWrite(t *testing.T, dir, key string, data []byte) {
	t.Helper()
	var buf bytes.Buffer
	var w io.WriteCloser
	switch filepath.Ext(key) {
	case ".gz":
		w = gzip.NewWriter(&buf)
	case ".zlib":
		w = zlib.NewWriter(&buf)
	case ".Z":
		w = lzw.NewWriter(&buf, lzw.LSB, 8)
	default:
		buf.Write(data)
	}
	if w != nil {
		_, err := w.Write(data)
		require.NoError(t, err)
		require.NoError(t, w.Close())
	}
	path := filepath.Join(dir, filepath.FromSlash(key))
	require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o700))
	require.NoError(t, os.WriteFile(path, buf.Bytes(), 0o600))
}

// ebrDelta is the payload of an etcd-backup-restore delta snapshot of the given revisions:
// their watch events as JSON ({"etcdEvent": clientv3.Event, "time": ...}), then the JSON's
// SHA-256.
func ebrDelta(t *testing.T, revs [][]*mvccpb.Event, at time.Time) []byte {
	t.Helper()
	type event struct {
		EtcdEvent *mvccpb.Event `json:"etcdEvent"`
		Time      time.Time     `json:"time"`
	}
	var buf bytes.Buffer
	for _, rev := range revs {
		for _, ev := range rev {
			if buf.Len() == 0 {
				buf.WriteByte('[')
			} else {
				buf.WriteByte(',')
			}
			b, err := json.Marshal(event{ev, at})
			require.NoError(t, err)
			buf.Write(b)
		}
	}
	buf.WriteByte(']')
	sum := sha256.Sum256(buf.Bytes())
	return append(buf.Bytes(), sum[:]...)
}

// TestRestoreFromEtcdBackupRestoreLayout restores an etcd-backup-restore store, made from a
// real member by a generator that follows etcd-backup-restore's format (its names, v1 and
// v2 layouts, compressions and JSON deltas; testsuite/migrate_test.go uses the real tool):
// every key equals the source's at the target. The newer full snapshot is named by a
// revision two below the one inside (etcd-backup-restore reads the revision before it takes
// the snapshot): restored to the revision in between, the older full snapshot and the deltas
// are used instead. Leases granted after the full snapshot, whose TTL the deltas do not
// hold, get the longest TTL of the full snapshot's leases. Converted into an etcdbr store by
// a copy, it restores the same.
func TestRestoreFromEtcdBackupRestoreLayout(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	src := embeddedtest.NewConfig(t)
	e, err := embedded.Start(ctx, src, nil)
	require.NoError(t, err)
	defer e.Close()
	cli := e.Client()
	dir := filepath.Join(t.TempDir(), "etcd-main")
	at := time.Unix(1700000000, 0)
	name := func(kind string, from, to int64, secs int, suffix string) string {
		return fmt.Sprintf("%s-%08d-%08d-%d%s", kind, from, to, at.Unix()+int64(secs), suffix)
	}

	// Leases of 3600, 3601 and 3602 s, before the first full snapshot.
	_, err = etcdtest.Workload{Seed: 5, Keys: 200, LeasedKeys: 10}.Run(ctx, cli)
	require.NoError(t, err)
	fullA, err := os.ReadFile(embeddedtest.WriteSnapshotFile(t, src))
	require.NoError(t, err)
	revA := e.Server().KV().Rev()
	leasesA := leaseIDs(ctx, t, cli)
	ebrWrite(t, dir, fmt.Sprintf("v1/Backup-%d/%s", at.Unix(), name("Full", 0, revA, 0, ".gz")), fullA)

	// More keys and leases; the second full snapshot, named two revisions low.
	_, err = etcdtest.Workload{Seed: 6, Keys: 100, Overwrites: 50, Deletes: 20, LeasedKeys: 10}.Run(ctx, cli)
	require.NoError(t, err)
	fullB, err := os.ReadFile(embeddedtest.WriteSnapshotFile(t, src))
	require.NoError(t, err)
	revB := e.Server().KV().Rev()
	leasesB := leaseIDs(ctx, t, cli)
	ebrWrite(t, dir, "v2/"+name("Full", 0, revB-2, 20, ".zlib"), fullB)
	_, err = etcdtest.Workload{Seed: 7, Keys: 30, Overwrites: 20, LeasedKeys: 5}.Run(ctx, cli)
	require.NoError(t, err)
	revC := e.Server().KV().Rev()

	revs := deltatest.WatchRevisions(ctx, t, cli, revA+1, revC)
	mid := (revA + revB) / 2
	idx := func(rev int64) int64 { return rev - revA - 1 }
	ebrWrite(t, dir, "v2/"+name("Incr", revA+1, mid, 10, ".Z"), ebrDelta(t, revs[:idx(mid)+1], at.Add(10*time.Second)))
	ebrWrite(t, dir, "v2/"+name("Incr", mid+1, revB-2, 15, ""), ebrDelta(t, revs[idx(mid)+1:idx(revB-2)+1], at.Add(15*time.Second)))
	ebrWrite(t, dir, "v2/"+name("Incr", revB-1, revC, 30, ".gz"), ebrDelta(t, revs[idx(revB-1):], at.Add(30*time.Second)))

	dumps := map[int64]etcdtest.Dump{}
	for _, rev := range []int64{revB - 1, revB, revC} {
		if dumps[rev], err = etcdtest.Take(ctx, cli, rev); err != nil {
			t.Fatal(err)
		}
	}
	all, err := etcdtest.Take(ctx, cli, 0)
	require.NoError(t, err)
	// Every lease the source granted has one of the workload's TTLs; those the deltas do not
	// hold the TTL of are restored with the longest of the full snapshot's, 3602.
	unrecorded := func(inFull map[int64]bool) deltatest.LeaseTTLs {
		ttls := deltatest.LeaseTTLs{Granted: map[int64]int64{}}
		for id, ttl := range all.Leases {
			ttls.Granted[id] = ttl
			if !inFull[id] {
				ttls.Granted[id] = 3602
			}
		}
		return ttls
	}

	store, err := snapstore.Open(ctx, "file://"+dir, snapstore.Options{MustExist: true})
	require.NoError(t, err)
	defer store.Close()
	layout, err := store.Detect(ctx)
	require.NoError(t, err)
	require.Equal(t, snapstore.LayoutEtcdBackupRestore, layout)

	for _, tc := range []struct {
		name   string
		store  *snapstore.Store
		target catalog.Target
		full   int64 // the revision inside the full snapshot the restore starts from
		want   etcdtest.Dump
		ttls   deltatest.LeaseTTLs
		logs   string
	}{
		{name: "latest", target: catalog.Target{}, full: revB, want: dumps[revC], ttls: unrecorded(leasesB)},
		{name: "inside the newer full snapshot's name and content", target: catalog.Target{Revision: revB - 1}, full: revA,
			want: dumps[revB-1], ttls: unrecorded(leasesA), logs: "holds revisions after the target"},
		{name: "the newer full snapshot's revision", target: catalog.Target{Revision: revB}, full: revB, want: dumps[revB], ttls: unrecorded(leasesB)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := embeddedtest.NewConfig(t)
			var logs embeddedtest.SyncBuffer
			res, err := Restore(ctx, store, cfg, tc.target, rebuild.RestoreOptions{}, slog.New(slog.NewTextHandler(&logs, nil)))
			require.NoError(t, err, logs.String())
			assert.Equal(t, tc.want.Revision, res.Revision)
			assert.Equal(t, tc.full, res.Replay.FromRevision)
			assert.Contains(t, logs.String(), tc.logs)
			if tc.full < tc.want.Revision {
				// Leases granted after the full snapshot: the workload's last run granted three.
				assert.Positive(t, res.Replay.Unrecorded)
				assert.Equal(t, int64(3602), res.Replay.UnrecordedTTL)
			}
			checkData(t, cfg, tc.want, tc.ttls)
		})
	}

	t.Run("converted by a copy", func(t *testing.T) {
		dst, err := snapstore.Open(ctx, "file://"+filepath.Join(t.TempDir(), "etcdbr"), snapstore.Options{})
		require.NoError(t, err)
		defer dst.Close()
		sel, err := snapstore.SelectBackupCopies(ctx, store, dst, time.Time{})
		require.NoError(t, err)
		_, err = snapstore.CopyBackups(ctx, store, dst, sel, nil, nil)
		require.NoError(t, err)
		l, err := dst.ListBackups(ctx)
		require.NoError(t, err)
		require.Len(t, l.Fulls, 2)
		assert.Equal(t, revB, l.Fulls[1].Revision, "named by the revision inside")
		cfg := embeddedtest.NewConfig(t)
		res, err := Restore(ctx, dst, cfg, catalog.Target{}, rebuild.RestoreOptions{}, nil)
		require.NoError(t, err)
		assert.Equal(t, revC, res.Revision)
		checkData(t, cfg, dumps[revC], unrecorded(leasesB))
	})
}

// leaseIDs returns the leases the member holds.
func leaseIDs(ctx context.Context, t *testing.T, cli *clientv3.Client) map[int64]bool {
	t.Helper()
	resp, err := cli.Leases(ctx)
	require.NoError(t, err)
	out := map[int64]bool{}
	for _, l := range resp.Leases {
		out[int64(l.ID)] = true
	}
	return out
}
