package rebuild

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/etcdbr/etcdbr/embedded"
	"github.com/etcdbr/etcdbr/internal/embeddedtest"
	"github.com/etcdbr/etcdbr/internal/progress"
	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
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
// counting the stored bytes and the revisions and a Logger ticking it ("on"). Each iteration
// runs both, in alternating order, so that both see the same machine; it reports the
// revisions/s of each over all iterations and the cost of progress in percent of wall time
// and of CPU time (on/off - 1: negative when "on" happened to be cheaper).
//
//	go test -run '^$' -bench ReplayProgress -benchtime 10x -count 3 ./embedded/
func BenchmarkReplayProgress(b *testing.B) {
	ctx := context.Background()
	cfg := embeddedtest.NewConfig(b)
	e := embeddedtest.MustStart(b, embedded.Start, cfg)
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
		w, err := store.Create(ctx, catalog.Snapshot{Kind: catalog.KindDelta, From: from, Revision: to, Time: now})
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
	deltas, err := store.List(ctx, catalog.KindDelta)
	require.NoError(b, err)

	// replay replays the deltas into a fresh copy of the empty db and returns how long the
	// replay took and the CPU time the process used meanwhile (the copy and the watcher's
	// start and stop are not counted). On a shared machine the CPU time is the steadier
	// figure: wall time moves with the other processes' load.
	replay := func(b *testing.B, watched bool) (wall, cpu time.Duration) {
		path := filepath.Join(b.TempDir(), "db")
		require.NoError(b, os.WriteFile(path, raw, 0o600))
		opts := ReplayOptions{Deltas: deltas, Open: store.Open, MinLeaseTTL: 2}
		stop := func() {}
		if watched {
			p := progress.New("replay")
			opts.Progress = p
			opts.Open = func(ctx context.Context, d catalog.Snapshot) (io.ReadCloser, error) {
				r, err := store.OpenReaderProgress(ctx, d, p)
				if err != nil {
					return nil, err
				}
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
		start, startCPU := time.Now(), processCPU(b)
		res, err := replayDeltas(ctx, path, opts, replayExtras{})
		wall, cpu = time.Since(start), processCPU(b)-startCPU
		stop()
		require.NoError(b, err)
		require.Equal(b, int64(benchRevisions), res.Revisions)
		if watched {
			require.Equal(b, progress.Counts{Phase: "replay", Bytes: sumSizes(deltas),
				Revisions: benchRevisions, RevisionsTotal: benchRevisions, Revision: 1 + benchRevisions}, opts.Progress.Load())
		}
		require.NoError(b, os.Remove(path))
		return wall, cpu
	}
	var off, on, offCPU, onCPU time.Duration
	add := func(watched bool) {
		wall, cpu := replay(b, watched)
		if watched {
			on, onCPU = on+wall, onCPU+cpu
		} else {
			off, offCPU = off+wall, offCPU+cpu
		}
	}
	n := 0
	for b.Loop() {
		add(n%2 == 1)
		add(n%2 == 0)
		n++
	}
	revs := float64(n * benchRevisions)
	b.ReportMetric(revs/off.Seconds(), "rev/s-off")
	b.ReportMetric(revs/on.Seconds(), "rev/s-on")
	b.ReportMetric(100*(on.Seconds()/off.Seconds()-1), "%-wall-cost")
	b.ReportMetric(100*(onCPU.Seconds()/offCPU.Seconds()-1), "%-cpu-cost")
}

// processCPU is the user and system CPU time the process used so far.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	require.NoError(b, syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func sumSizes(snaps []catalog.Snapshot) int64 {
	var n int64
	for _, s := range snaps {
		n += s.Size
	}
	return n
}
