package backup

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// recorder is an Observer that keeps what it is told.
type recorder struct {
	mu       sync.Mutex
	taken    []Taken
	failures []Failure
	progress []DeltaProgress
	fenced   []catalog.Kind
}

func (r *recorder) Taken(t Taken) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.taken = append(r.taken, t)
}

func (r *recorder) Failed(f Failure) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failures = append(r.failures, f)
}

func (r *recorder) DeltaProgress(p DeltaProgress) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.progress = append(r.progress, p)
}

func (r *recorder) Fenced(kind catalog.Kind, _ error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fenced = append(r.fenced, kind)
}

func (r *recorder) snapshot() ([]Taken, []Failure, []DeltaProgress) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Taken(nil), r.taken...), append([]Failure(nil), r.failures...), append([]DeltaProgress(nil), r.progress...)
}

// A flush uploads at once, long before the period ends, every revision the member had
// applied; the deltas hold exactly the source's events, and the observer saw them and the
// taker's position.
func TestFlushUploadsAtOnce(t *testing.T) {
	eachSource(t, func(t *testing.T, src eventSource) {
		e := startEtcd(t)
		cli := inProcess(t, e)
		store := memStore(t)
		log, logs := testLog(t)
		obs := &recorder{}
		cfg := deltaConfig(src, e, cli, store, log)
		cfg.Period = time.Hour
		cfg.Flusher = NewFlusher()
		cfg.Observer = obs
		start := revisionOf(t, cli)
		startDeltasReady(t, cfg, logs)
		want := newLeaseWant()

		last := churn(t, cli, "/a", 80, want)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		res, err := cfg.Flusher.Flush(ctx)
		require.NoError(t, err)
		require.Equal(t, last, res.Revision)
		require.NotEmpty(t, res.Deltas)
		require.Equal(t, res.Deltas, listKind(t, store, catalog.KindDelta), "the flush answers with the objects in the store")
		checkChain(t, store, cli, start+1, last, *want)

		taken, failures, progress := obs.snapshot()
		require.Empty(t, failures)
		var observed []catalog.Snapshot
		events := 0
		for _, tk := range taken {
			observed = append(observed, tk.Snapshot)
			events += tk.Events
			require.Equal(t, int(tk.Snapshot.Revision-tk.Snapshot.From+1), tk.Revisions, tk.Snapshot.Key)
		}
		require.Equal(t, res.Deltas, observed)
		hist := history(t, cli, start+1, last)
		n := 0
		for _, evs := range hist {
			n += len(evs)
		}
		require.Equal(t, n, events, "the observer counts every event of the deltas")
		require.Equal(t, DeltaProgress{Stored: last, Last: last}, progress[len(progress)-1], "all in the store, nothing held")

		// Nothing new: nothing uploaded.
		again, err := cfg.Flusher.Flush(ctx)
		require.NoError(t, err)
		require.Equal(t, FlushResult{Revision: last}, again)
	})
}

// A flush while the store fails answers with the store's error at once (the upload goes on
// being retried in the background, with the same range); once the store works, the next
// flush uploads everything without waiting for the backoff, and the chain has no gap.
func TestFlushWhileStoreFails(t *testing.T) {
	eachSource(t, func(t *testing.T, src eventSource) {
		e := startEtcd(t)
		cli := inProcess(t, e)
		store := newBreakableStore(t)
		log, logs := testLog(t)
		obs := &recorder{}
		cfg := deltaConfig(src, e, cli, store.Store, log)
		cfg.Period = time.Hour
		cfg.RetryMin, cfg.RetryMax = time.Hour, time.Hour // only flushes try again
		cfg.Flusher = NewFlusher()
		cfg.Observer = obs
		start := revisionOf(t, cli)
		startDeltasReady(t, cfg, logs)
		want := newLeaseWant()

		store.breakDeltas(t)
		churn(t, cli, "/broken", 40, want)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, err := cfg.Flusher.Flush(ctx)
		require.Error(t, err)
		require.Equal(t, ReasonStore, ReasonOf(err), "%v", err)
		_, failures, progress := obs.snapshot()
		require.NotEmpty(t, failures)
		require.Equal(t, Failure{Kind: catalog.KindDelta, Op: OpSnapshot, Reason: ReasonStore, Err: failures[0].Err}, failures[0])
		p := progress[len(progress)-1]
		require.LessOrEqual(t, p.Stored, start, "nothing reached the store")
		require.False(t, p.Oldest.IsZero(), "the oldest revision not in the store is reported")
		require.Positive(t, p.Buffered)

		store.repair(t)
		last := churn(t, cli, "/after", 40, want)
		res, err := cfg.Flusher.Flush(ctx)
		require.NoError(t, err)
		require.Equal(t, last, res.Revision)
		checkChain(t, store.Store, cli, start+1, last, *want)
	})
}

// The runner tells its observer about the snapshots it takes, with their trigger, and
// classifies a failed upload as the store's.
func TestRunnerObserver(t *testing.T) {
	e := startEtcd(t)
	dir := t.TempDir()
	store, err := snapstore.Open(context.Background(), "file://"+dir, snapstore.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { store.Close() })
	sched, err := ParseSchedule("@daily")
	require.NoError(t, err)
	obs := &recorder{}
	r := &Runner{Store: store, Schedule: sched, Observer: obs, Take: func(ctx context.Context) (catalog.Snapshot, error) {
		return FullFromBackend(ctx, e.Server.Backend(), store)
	}}
	ctx := context.Background()
	snap, err := r.TakeNow(ctx)
	require.NoError(t, err)
	taken, _, _ := obs.snapshot()
	require.Len(t, taken, 1)
	require.Equal(t, snap, taken[0].Snapshot)
	require.Equal(t, "request", taken[0].Trigger)
	require.Equal(t, listKind(t, store, catalog.KindFull), []catalog.Snapshot{snap})

	// The full snapshot directory becomes a file: uploads fail.
	fullDir := filepath.Join(dir, "full")
	require.NoError(t, os.Rename(fullDir, fullDir+".aside"))
	require.NoError(t, os.WriteFile(fullDir, nil, 0o600))
	_, err = r.TakeNow(ctx)
	require.Error(t, err)
	_, failures, _ := obs.snapshot()
	require.Len(t, failures, 1)
	require.Equal(t, Failure{Kind: catalog.KindFull, Op: OpSnapshot, Reason: ReasonStore, Err: err}, failures[0])
}

func TestReasonOf(t *testing.T) {
	require.Equal(t, ReasonOther, ReasonOf(nil))
	require.Equal(t, ReasonOther, ReasonOf(context.Canceled))
	require.Equal(t, ReasonStore, ReasonOf(classify(ReasonStore, context.Canceled)))
	// The innermost classification wins: it is where the error happened.
	require.Equal(t, ReasonStore, ReasonOf(classify(ReasonEtcd, classify(ReasonStore, context.Canceled))))
	require.Nil(t, classify(ReasonStore, nil))
}
