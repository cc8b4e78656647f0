package backup

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3client"
	"go.uber.org/zap"

	"github.com/etcdbr/etcdbr/internal/embeddedtest"
	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// startEtcd runs a real etcd for the test.
func startEtcd(t *testing.T) *embed.Etcd {
	t.Helper()
	e, err := embed.StartEtcd(embeddedtest.NewConfig(t))
	require.NoError(t, err)
	t.Cleanup(e.Close)
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(time.Minute):
		t.Fatal("etcd did not become ready")
	}
	return e
}

func memStore(t *testing.T) *snapstore.Store {
	t.Helper()
	s, err := snapstore.Open(context.Background(), "mem://", snapstore.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s
}

// readPayload fetches a snapshot's verified payload into a file and returns its path.
func readPayload(t *testing.T, store *snapstore.Store, snap catalog.Snapshot) string {
	t.Helper()
	r, err := store.Open(context.Background(), snap)
	require.NoError(t, err)
	defer r.Close()
	path := filepath.Join(t.TempDir(), "snapshot.db")
	f, err := os.Create(path)
	require.NoError(t, err)
	_, err = io.Copy(f, r)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	return path
}

// checkPayload checks that a payload is a db followed by its sha256, and returns the revision
// inside the db.
func checkPayload(t *testing.T, path string) int64 {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Greater(t, len(b), sha256.Size)
	require.Equal(t, sha256.Size, len(b)%512, "etcd snapshot streams are pages plus a 32-byte hash")
	sum := sha256.Sum256(b[:len(b)-sha256.Size])
	require.True(t, bytes.Equal(sum[:], b[len(b)-sha256.Size:]), "trailing sha256 does not match the db")
	db := filepath.Join(t.TempDir(), "db")
	require.NoError(t, os.WriteFile(db, b[:len(b)-sha256.Size], 0o600))
	rev, err := spooledRevision(db)
	require.NoError(t, err)
	return rev
}

// writeWhile writes keys until stop is closed and returns how many writes were made.
func writeWhile(t *testing.T, cli *clientv3.Client, stop <-chan struct{}) *atomic.Int64 {
	var n atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := cli.Put(context.Background(), fmt.Sprintf("/load/%d", i%500), "value"); err == nil {
				n.Add(1)
			}
		}
	}()
	t.Cleanup(wg.Wait)
	return &n
}

// The revision in a full snapshot's name is the revision inside it, even while writes go on.
func TestFullFromBackendNamesExactRevision(t *testing.T) {
	e := startEtcd(t)
	cli := v3client.New(e.Server)
	defer cli.Close()
	ctx := context.Background()
	for i := 0; i < 2000; i++ {
		_, err := cli.Put(ctx, fmt.Sprintf("/k/%04d", i), "v")
		require.NoError(t, err)
	}
	store := memStore(t)

	stop := make(chan struct{})
	writes := writeWhile(t, cli, stop)
	var snaps []catalog.Snapshot
	for i := 0; i < 5; i++ {
		snap, err := FullFromBackend(ctx, e.Server.Backend(), store)
		require.NoError(t, err)
		snaps = append(snaps, snap)
	}
	close(stop)
	require.Positive(t, writes.Load())

	for _, snap := range snaps {
		require.Equal(t, catalog.KindFull, snap.Kind)
		require.Positive(t, snap.Size)
		got := checkPayload(t, readPayload(t, store, snap))
		require.Equal(t, got, snap.Revision, "object %s", snap.Key)
	}
	listed, err := store.List(ctx, catalog.KindFull)
	require.NoError(t, err)
	require.Len(t, listed, len(snaps))
}

// A snapshot whose context ends mid-stream leaves nothing in the store.
func TestFullFromBackendCancelled(t *testing.T) {
	e := startEtcd(t)
	cli := v3client.New(e.Server)
	defer cli.Close()
	ctx := context.Background()
	big := string(bytes.Repeat([]byte("x"), 64<<10))
	for i := 0; i < 300; i++ {
		_, err := cli.Put(ctx, fmt.Sprintf("/big/%d", i), big)
		require.NoError(t, err)
	}
	store := memStore(t)
	cctx, cancel := context.WithCancel(ctx)
	cw := &cancelAfter{n: 1 << 20, cancel: cancel}
	_, err := upload(cctx, store, 1, time.Now(), nil, func(w io.Writer) error {
		snap := e.Server.Backend().Snapshot()
		defer snap.Close()
		_, err := snap.WriteTo(io.MultiWriter(cw, w))
		return err
	})
	require.Error(t, err)
	listed, err := store.List(ctx, catalog.KindFull)
	require.NoError(t, err)
	require.Empty(t, listed)
}

// cancelAfter cancels a context once n bytes went through it.
type cancelAfter struct {
	n      int
	cancel func()
}

func (c *cancelAfter) Write(p []byte) (int, error) {
	c.n -= len(p)
	if c.n <= 0 {
		c.cancel()
	}
	return len(p), nil
}

// A full snapshot of an external member through its client API names the exact revision and
// matches what the member holds.
func TestFullFromClient(t *testing.T) {
	e := startEtcd(t)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{e.Clients[0].Addr().String()}, Logger: zap.NewNop(), DialOptions: SnapshotDialOptions()})
	require.NoError(t, err)
	defer cli.Close()
	ctx := context.Background()
	for i := 0; i < 1000; i++ {
		_, err := cli.Put(ctx, fmt.Sprintf("/k/%04d", i), "v")
		require.NoError(t, err)
	}
	store := memStore(t)
	spool := t.TempDir()

	stop := make(chan struct{})
	writeWhile(t, cli, stop)
	snap, err := FullFromClient(ctx, cli, store, spool)
	close(stop)
	require.NoError(t, err)
	require.Equal(t, checkPayload(t, readPayload(t, store, snap)), snap.Revision)
	left, err := os.ReadDir(spool)
	require.NoError(t, err)
	require.Empty(t, left, "spool files left behind")
}

func TestParseSchedule(t *testing.T) {
	now := time.Date(2026, 11, 25, 15, 30, 0, 0, time.UTC)
	for _, c := range []struct {
		expr   string
		period time.Duration
		err    string // a substring of the error; "" for a valid schedule
	}{
		{"0 * * * *", time.Hour, ""},
		{"@hourly", time.Hour, ""},
		{"*/5 * * * *", 5 * time.Minute, ""},
		{"@every 10s", 10 * time.Second, ""},
		{"@every 1s", time.Second, ""}, // the floor: what the end-to-end tests use
		{"CRON_TZ=Europe/Berlin @every 1m", time.Minute, ""},
		{"CRON_TZ=UTC 0 3 * * *", 24 * time.Hour, ""},
		{"every hour", 0, "five cron fields"},
		{"61 * * * *", 0, "five cron fields"},
		{"", 0, "five cron fields"},
		{"@every soon", 0, "five cron fields"},
		// cron would run each of these every second.
		{"@every 0s", 0, "shorter than 1s"},
		{"@every 1ms", 0, "shorter than 1s"},
		{"@every 999ms", 0, "shorter than 1s"},
		{"@every -1h", 0, "shorter than 1s"},
		{"TZ=UTC @every 0s", 0, "shorter than 1s"},
		// and this one every 1s.
		{"@every 1500ms", 0, "whole seconds (@every 1500ms would run every 1s); give whole seconds, e.g. @every 2s"},
	} {
		s, err := ParseSchedule(c.expr)
		if c.err != "" {
			require.Error(t, err, c.expr)
			require.Contains(t, err.Error(), c.err, c.expr)
			continue
		}
		require.NoError(t, err, c.expr)
		require.Equal(t, c.period, s.Period(now), c.expr)
	}
}

// The runner takes a snapshot at start when the store has none, and not when the newest is
// younger than the schedule's period.
func TestRunnerStartupSnapshot(t *testing.T) {
	e := startEtcd(t)
	store := memStore(t)
	sched, err := ParseSchedule("@daily")
	require.NoError(t, err)
	r := &Runner{Store: store, Schedule: sched, Take: func(ctx context.Context) (catalog.Snapshot, error) {
		return FullFromBackend(ctx, e.Server.Backend(), store)
	}}
	ctx := context.Background()
	require.True(t, r.due(ctx), "an empty store is due")

	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- r.Run(rctx) }()
	waitFor(t, "the startup snapshot", func() bool { return len(listKind(t, store, catalog.KindFull)) == 1 })
	cancel()
	require.NoError(t, <-done)
	require.False(t, r.due(ctx), "a store with a fresh full snapshot is not due")

	// The same snapshot, named as taken two periods ago.
	fresh := listKind(t, store, catalog.KindFull)[0]
	r.Store = memStore(t)
	_, err = upload(ctx, r.Store, fresh.Revision, fresh.Time.Add(-2*sched.Period(fresh.Time)), nil, func(w io.Writer) error {
		snap := e.Server.Backend().Snapshot()
		defer snap.Close()
		_, err := snap.WriteTo(w)
		return err
	})
	require.NoError(t, err)
	require.True(t, r.due(ctx), "a full snapshot older than the period is due")
}
