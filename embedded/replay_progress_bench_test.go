package embedded

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/etcdbr/etcdbr/embedded/embeddedtest"
	"github.com/etcdbr/etcdbr/internal/progress"
	"github.com/etcdbr/etcdbr/snapstore"
)

// Sizes of BenchmarkReplayProgress: small events, so that the replay's cost per revision,
// and any cost of reporting progress per batch, weighs the most.
const (
	benchRevisions      = 200_000
	benchDeltaRevisions = 10_000
	benchKeys           = 10_000
	benchValueSize      = 100
)

// BenchmarkReplayProgress replays 200,000 revisions of one small put each from 20 deltas
// into an empty snapshot db, with nobody watching ("off": no Progress) and with a Progress
// counting the stored bytes and the revisions and a Logger ticking it ("on"), alternately
// with -count. It reports revisions/s; the cost of progress is the ratio of the two.
//
//	go test -run '^$' -bench ReplayProgress -benchtime 3x -count 6 ./embedded/
func BenchmarkReplayProgress(b *testing.B) {
	ctx := context.Background()
	cfg := embeddedtest.NewConfig(b)
	e := mustStart(b, cfg)
	snap := filepath.Join(b.TempDir(), "full.db")
	require.NoError(b, saveSnapshot(ctx, cfg, snap))
	e.Close()
	raw, err := os.ReadFile(snap)
	require.NoError(b, err)
	raw = raw[:len(raw)-32]

	store, err := snapstore.Open(ctx, "file://"+b.TempDir(), snapstore.Options{})
	require.NoError(b, err)
	defer store.Close()
	value := make([]byte, benchValueSize)
	versions := map[int]int64{}
	created := map[int]int64{}
	now := time.Now()
	for from := int64(2); from < 2+benchRevisions; from += benchDeltaRevisions {
		to := from + benchDeltaRevisions - 1
		w, err := store.Create(ctx, snapstore.Snapshot{Kind: snapstore.KindDelta, From: from, Revision: to, Time: now})
		require.NoError(b, err)
		enc, err := snapstore.NewDeltaEncoder(w, from, to)
		require.NoError(b, err)
		for rev := from; rev <= to; rev++ {
			k := int(rev) % benchKeys
			if versions[k] == 0 {
				created[k] = rev
			}
			versions[k]++
			kv := &mvccpb.KeyValue{Key: fmt.Appendf(nil, "/bench/%06d", k), Value: value,
				CreateRevision: created[k], ModRevision: rev, Version: versions[k]}
			require.NoError(b, enc.Revision(snapstore.Revision{Revision: rev, Time: now, Events: []*mvccpb.Event{{Type: mvccpb.PUT, Kv: kv}}}))
		}
		require.NoError(b, enc.Close())
		_, err = w.Commit()
		require.NoError(b, err)
	}
	deltas, err := store.List(ctx, snapstore.KindDelta)
	require.NoError(b, err)

	run := func(b *testing.B, watched bool) {
		var revs int64
		var took time.Duration
		for b.Loop() {
			b.StopTimer()
			path := filepath.Join(b.TempDir(), "db")
			require.NoError(b, os.WriteFile(path, raw, 0o600))
			opts := ReplayOptions{Deltas: deltas, Open: store.Open, MinLeaseTTL: 2}
			stop := func() {}
			if watched {
				p := progress.New("replay")
				opts.Progress = p
				opts.Open = func(ctx context.Context, d snapstore.Snapshot) (io.ReadCloser, error) {
					r, err := store.OpenReader(ctx, d)
					if err != nil {
						return nil, err
					}
					r.Report(p)
					return r, nil
				}
				lctx, cancel := context.WithCancel(ctx)
				ticker := time.NewTicker(progress.LogEvery)
				done := make(chan struct{})
				go func() {
					defer close(done)
					progress.NewLogger(p, slog.New(slog.DiscardHandler), time.Now()).Run(lctx, ticker.C)
				}()
				stop = func() { cancel(); <-done; ticker.Stop() }
			}
			b.StartTimer()
			start := time.Now()
			res, err := replayDeltas(ctx, path, opts, replayExtras{})
			took += time.Since(start)
			b.StopTimer()
			stop()
			require.NoError(b, err)
			require.Equal(b, int64(benchRevisions), res.Revisions)
			if watched {
				require.Equal(b, progress.Counts{Phase: "replay", Bytes: sumSizes(deltas), BytesTotal: 0,
					Revisions: benchRevisions, RevisionsTotal: benchRevisions, Revision: 1 + benchRevisions}, opts.Progress.Load())
			}
			revs += res.Revisions
			b.StartTimer()
		}
		b.ReportMetric(float64(revs)/took.Seconds(), "rev/s")
	}
	b.Run("off", func(b *testing.B) { run(b, false) })
	b.Run("on", func(b *testing.B) { run(b, true) })
}

func sumSizes(snaps []snapstore.Snapshot) int64 {
	var n int64
	for _, s := range snaps {
		n += s.Size
	}
	return n
}
