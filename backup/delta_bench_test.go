package backup

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3client"

	"github.com/etcdbr/etcdbr/internal/embeddedtest"
	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// Measurements of the delta taker (not run by `go test` without -bench):
//
//	go test -run XXX -bench Delta -benchtime 3x ./backup/

// BenchmarkDeltaCatchUp measures how fast the taker turns etcd's history into deltas: the
// revisions are written first, then a taker starts from the beginning of the chain and
// catches up (watch from the backend, buffering, encoding, upload to a mem:// store).
func BenchmarkDeltaCatchUp(b *testing.B) {
	e := startEtcdB(b)
	cli := inProcessB(b, e)
	ctx := context.Background()
	const revisions, perTxn = 20000, 5
	value := strings.Repeat("v", 100)
	for i := 0; i < revisions; i++ {
		ops := make([]clientv3.Op, perTxn)
		for j := range ops {
			ops[j] = clientv3.OpPut(fmt.Sprintf("/bench/%d/%d", i%1000, j), value)
		}
		_, err := cli.Txn(ctx).Then(ops...).Commit()
		require.NoError(b, err)
	}
	last := revisionOfB(b, cli)
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		store, err := snapstore.Open(ctx, "mem://", snapstore.Options{})
		require.NoError(b, err)
		// Anchor the chain at revision 1 so that the taker replays the whole history.
		w, err := store.Create(ctx, catalog.Snapshot{Kind: catalog.KindFull, Revision: 1, Time: time.Now()})
		require.NoError(b, err)
		_, err = w.Commit()
		require.NoError(b, err)
		cfg := DeltaConfig{Store: store, Client: cli, Period: time.Second, Log: slog.New(slog.DiscardHandler),
			Full: func(context.Context) (catalog.Snapshot, error) { return catalog.Snapshot{}, fmt.Errorf("not used") }}
		start := time.Now()
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- RunDeltas(rctx, cfg) }()
		waitDeltaB(b, store, last)
		took := time.Since(start)
		cancel()
		<-done
		deltas, err := store.List(ctx, catalog.KindDelta)
		require.NoError(b, err)
		var size int64
		for _, d := range deltas {
			size += d.Size
		}
		b.ReportMetric(float64(last-1)/took.Seconds(), "revisions/s")
		b.ReportMetric(float64((last-1)*perTxn)/took.Seconds(), "events/s")
		b.ReportMetric(float64(len(deltas)), "deltas")
		b.ReportMetric(float64(size)/float64(len(deltas)), "bytes/delta")
		store.Close()
	}
}

// BenchmarkDeltaLive measures whether the taker keeps up with etcd's write rate: writers
// put as fast as the member accepts for a few seconds while the taker runs with a 1s
// period; reported are the write rate and how long after the last write the store held it.
func BenchmarkDeltaLive(b *testing.B) {
	for _, writers := range []int{1, 4, 16} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			e := startEtcdB(b)
			cli := inProcessB(b, e)
			ctx := context.Background()
			for n := 0; n < b.N; n++ {
				store, err := snapstore.Open(ctx, "file://"+b.TempDir(), snapstore.Options{})
				require.NoError(b, err)
				var uploads atomic.Int64
				var upTime atomic.Int64
				log := slog.New(&countHandler{uploads: &uploads, took: &upTime})
				cfg := DeltaConfig{Store: store, Client: cli, Period: time.Second, Log: log,
					Full: func(ctx context.Context) (catalog.Snapshot, error) {
						return FullFromBackend(ctx, e.Server.Backend(), store)
					}}
				rctx, cancel := context.WithCancel(ctx)
				done := make(chan error, 1)
				go func() { done <- RunDeltas(rctx, cfg) }()
				time.Sleep(200 * time.Millisecond)
				start := revisionOfB(b, cli)
				value := strings.Repeat("v", 100)
				stop := time.Now().Add(5 * time.Second)
				var wg sync.WaitGroup
				for w := 0; w < writers; w++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for i := 0; time.Now().Before(stop); i++ {
							_, err := cli.Put(ctx, fmt.Sprintf("/live/%d/%d", w, i%500), value)
							require.NoError(b, err)
						}
					}()
				}
				wg.Wait()
				wrote := time.Now()
				last := revisionOfB(b, cli)
				waitDeltaB(b, store, last)
				lag := time.Since(wrote)
				cancel()
				<-done
				b.ReportMetric(float64(last-start)/5, "writes/s")
				b.ReportMetric(lag.Seconds(), "s-lag")
				if n := uploads.Load(); n > 0 {
					b.ReportMetric(float64(upTime.Load())/float64(n)/1e6, "ms/upload")
				}
				store.Close()
			}
		})
	}
}

// BenchmarkDeltaUpload measures the cost of uploading one delta of 1000 revisions of one
// 100-byte put each (a 10s period at 100 writes/s) to mem:// and file:// (fsync) stores.
func BenchmarkDeltaUpload(b *testing.B) {
	batch := &deltaBatch{leases: []snapstore.Lease{{ID: 7, TTL: 60}}}
	rng := rand.New(rand.NewPCG(1, 2))
	for r := int64(1); r <= 1000; r++ {
		value := make([]byte, 100)
		for i := range value {
			value[i] = byte('a' + rng.IntN(26)) // compresses like text, not like zeros
		}
		batch.add(snapstore.Revision{Revision: r, Time: time.Now(), Events: []*mvccpb.Event{{
			Type: mvccpb.PUT,
			Kv: &mvccpb.KeyValue{Key: []byte(fmt.Sprintf("/registry/pods/default/pod-%d", r%300)), Value: value,
				CreateRevision: r, ModRevision: r, Version: 1, Lease: 7},
		}}})
	}
	for _, url := range []string{"mem://", "file://" + b.TempDir()} {
		scheme, _, _ := strings.Cut(url, ":")
		b.Run(scheme, func(b *testing.B) {
			store, err := snapstore.Open(context.Background(), url, snapstore.Options{})
			require.NoError(b, err)
			defer store.Close()
			var size int64
			for n := 0; n < b.N; n++ {
				snap, err := writeDelta(context.Background(), store, batch, nil)
				require.NoError(b, err)
				size = snap.Size
			}
			b.ReportMetric(float64(size), "bytes/delta")
			b.ReportMetric(float64(batch.bytes), "buffered-bytes")
		})
	}
}

// countHandler counts "delta taken" records and sums their durations.
type countHandler struct {
	uploads, took *atomic.Int64
}

func (h *countHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Message == "delta taken" {
		h.uploads.Add(1)
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "duration" {
				h.took.Add(int64(a.Value.Duration()))
			}
			return true
		})
	}
	return nil
}
func (h *countHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countHandler) WithGroup(string) slog.Handler      { return h }

// startEtcdB runs a real etcd for a benchmark.
func startEtcdB(b *testing.B) *embed.Etcd {
	b.Helper()
	e, err := embed.StartEtcd(embeddedtest.NewConfig(b))
	require.NoError(b, err)
	b.Cleanup(e.Close)
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(time.Minute):
		b.Fatal("etcd did not become ready")
	}
	return e
}

func inProcessB(b *testing.B, e *embed.Etcd) *clientv3.Client {
	cli := v3client.New(e.Server)
	b.Cleanup(func() { cli.Close() })
	return cli
}

// waitDeltaB waits until the store's newest delta reaches revision last, looking every
// 10ms; it fails the benchmark after ten minutes.
func waitDeltaB(b *testing.B, store *snapstore.Store, last int64) {
	b.Helper()
	deadline := time.Now().Add(10 * time.Minute)
	for {
		snap, ok, err := store.Latest(context.Background(), catalog.KindDelta)
		require.NoError(b, err)
		if ok && snap.Revision >= last {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("the deltas did not reach revision %d within ten minutes", last)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func revisionOfB(b *testing.B, cli *clientv3.Client) int64 {
	resp, err := cli.Get(context.Background(), "probe", clientv3.WithCountOnly())
	require.NoError(b, err)
	return resp.Header.Revision
}
