package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// defragWriters are the concurrent writers whose put latency the defrag scenario measures.
const defragWriters = 4

// benchDefrag fragments an etcdbr run member (cfg.DefragMiB of 64 KiB values written, nine
// in ten deleted, etcd's history compacted) and lets etcdbr defragment it by its threshold,
// while defragWriters writers put cfg.ValueSize values one after the other. It reports the
// db size before and after, how long the defrag took (from etcdbr's log), and the writers'
// put latency (p50, p99, max) of the puts in flight during the defrag, beside the same
// writers' latency over cfg.PutDuration before the compaction (no defrag: the baseline).
func benchDefrag(ctx context.Context, cfg config, dir string) ([]figure, error) {
	round := filepath.Join(dir, "defrag")
	logPath := filepath.Join(dir, "defrag.log")
	s, err := startServer(ctx, cfg.Bins, serverSpec{Etcdbr: true, DataDir: filepath.Join(round, "data"),
		Store: "file://" + filepath.Join(round, "store"), LogPath: logPath,
		// The default threshold (100 MiB free and 50%), lowered for the tiny sizes of -short.
		Args: []string{"--full-snapshot-schedule", "0 0 1 1 *", "--defrag-check-period", "1s",
			"--defrag-min-free", fmt.Sprintf("%dMiB", min(100, max(1, cfg.DefragMiB/4)))}})
	if err != nil {
		return nil, err
	}
	defer s.stop(syscall.SIGTERM)
	if _, err := s.ready(ctx, readyTimeout); err != nil {
		return nil, err
	}
	cli, err := newClient(s.Endpoint)
	if err != nil {
		return nil, err
	}
	defer cli.Close()

	const fillValue = 64 << 10
	keys := max(1, cfg.DefragMiB*(1<<20)/fillValue)
	cfg.progress("defrag: writing %d MiB (%d keys of 64 KiB), deleting nine in ten", cfg.DefragMiB, keys)
	rng := rand.New(rand.NewPCG(cfg.Seed, 7))
	fillVal := randomValue(rng, fillValue)
	if err := parallel(ctx, cfg.Writers, func(ctx context.Context, w int) error {
		for i := w; i < keys; i += cfg.Writers {
			if _, err := cli.Put(ctx, fmt.Sprintf("/bench/frag/%08d", i), fillVal); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("defrag: fill: %w", err)
	}
	var last int64
	for i := 0; i < keys; i += 100 {
		var ops []clientv3.Op
		for j := i; j < min(i+100, keys); j++ {
			if j%10 != 0 {
				ops = append(ops, clientv3.OpDelete(fmt.Sprintf("/bench/frag/%08d", j)))
			}
		}
		if len(ops) == 0 {
			continue
		}
		resp, err := cli.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return nil, fmt.Errorf("defrag: delete: %w", err)
		}
		last = resp.Header.Revision
	}

	w := startLatencyWriters(ctx, cfg, cli)
	defer w.stop()
	cfg.progress("defrag: the writers' latency without a defrag, %v", cfg.PutDuration)
	baseFrom := time.Now()
	if err := sleepCtx(ctx, cfg.PutDuration); err != nil {
		return nil, err
	}
	baseTo := time.Now()
	st, err := cli.Status(ctx, s.Endpoint)
	if err != nil {
		return nil, err
	}
	before := st.DbSize // etcd's compaction frees pages, never shrinks the file
	cfg.progress("defrag: compacting etcd's history at %d (db %.0f MiB); etcdbr defragments at its next check", last, mibs(before))
	if _, err := cli.Compact(ctx, last, clientv3.WithCompactPhysical()); err != nil {
		return nil, err
	}
	line, err := waitDefragLine(ctx, logPath, 10*time.Minute)
	if err != nil {
		return nil, err
	}
	if err := sleepCtx(ctx, time.Second); err != nil {
		return nil, err
	}
	ops, err := w.stop()
	if err != nil {
		return nil, fmt.Errorf("defrag: writers: %w", err)
	}
	defrags, err := countLines(logPath, `"member defragmented"`)
	if err != nil {
		return nil, err
	}
	st, err = cli.Status(ctx, s.Endpoint)
	if err != nil {
		return nil, err
	}
	started, _ := time.Parse(time.RFC3339Nano, line.Started)
	ended, _ := time.Parse(time.RFC3339Nano, line.Ended)
	var base, during []time.Duration
	for _, op := range ops {
		end := op.start.Add(op.took)
		switch {
		case !op.start.Before(baseFrom) && !end.After(baseTo):
			base = append(base, op.took)
		case op.start.Before(ended) && end.After(started):
			during = append(during, op.took)
		}
	}
	if len(base) == 0 || len(during) == 0 {
		return nil, fmt.Errorf("defrag: %d puts without the defrag, %d during it: nothing to compare", len(base), len(during))
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	lat := func(ds []time.Duration) []value {
		slices.Sort(ds)
		q := func(p float64) time.Duration { return ds[min(len(ds)-1, int(p*float64(len(ds))))] }
		return []value{{"p50_ms", ms(q(0.5))}, {"p99_ms", ms(q(0.99))}, {"max_ms", ms(ds[len(ds)-1])}, {"puts", float64(len(ds))}}
	}
	f := figure{
		Name: fmt.Sprintf("defrag of a fragmented member: %d MiB written, 90%% deleted, %d writers of %d B values", cfg.DefragMiB, defragWriters, cfg.ValueSize),
		Etcdbr: append([]value{{"db_before_mib", mibs(line.SizeBefore)}, {"db_after_mib", mibs(line.SizeAfter)}, {"defrag_s", ended.Sub(started).Seconds()},
			{"defrags", float64(defrags)}},
			lat(during)...),
		Baseline:     lat(base),
		BaselineName: fmt.Sprintf("the same writers, %v before the compaction, no defrag", cfg.PutDuration),
		Note: fmt.Sprintf("etcdbr's defrag at its default threshold (--defrag-check-period 1s); the latencies during it are of the puts in flight "+
			"while it ran (started or ended inside it); etcd's Status: %.0f MiB before, %.0f MiB after", mibs(before), mibs(st.DbSize)),
	}
	f.compare("max_ms")
	return []figure{f}, nil
}

// defragLogLine is what the bench reads of etcdbr's "member defragmented" line.
type defragLogLine struct {
	SizeBefore int64  `json:"size_before"`
	SizeAfter  int64  `json:"size_after"`
	Started    string `json:"started"`
	Ended      string `json:"ended"`
}

// waitDefragLine waits until etcdbr's JSON log at path has a "member defragmented" line.
func waitDefragLine(ctx context.Context, path string, timeout time.Duration) (defragLogLine, error) {
	deadline := time.Now().Add(timeout)
	for {
		f, err := os.Open(path)
		if err != nil {
			return defragLogLine{}, err
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if !strings.Contains(sc.Text(), `"member defragmented"`) {
				continue
			}
			var l defragLogLine
			err := json.Unmarshal(sc.Bytes(), &l)
			f.Close()
			return l, err
		}
		f.Close()
		if time.Now().After(deadline) {
			return defragLogLine{}, fmt.Errorf("no defragmentation in %s after %v", path, timeout)
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return defragLogLine{}, err
		}
	}
}

// countLines counts the lines of the file at path that contain substr.
func countLines(path, substr string) (int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strings.Count(string(data), substr), nil
}

// sleepCtx waits for d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// timedPut is one put of the latency writers: when it began and how long it took.
type timedPut struct {
	start time.Time
	took  time.Duration
}

// latencyWriters put one value after the other on defragWriters goroutines, recording each
// put's latency, until stop.
type latencyWriters struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex // guards ops and err
	ops    []timedPut
	err    error
}

// startLatencyWriters starts the writers on cli.
func startLatencyWriters(ctx context.Context, cfg config, cli *clientv3.Client) *latencyWriters {
	ctx, cancel := context.WithCancel(ctx)
	w := &latencyWriters{cancel: cancel}
	for i := range defragWriters {
		w.wg.Go(func() {
			rng := rand.New(rand.NewPCG(cfg.Seed, uint64(2000+i)))
			val := randomValue(rng, cfg.ValueSize)
			for n := 0; ctx.Err() == nil; n++ {
				start := time.Now()
				_, err := cli.Put(ctx, fmt.Sprintf("/bench/defrag-writer/%d/%04d", i, n%1000), val)
				took := time.Since(start)
				w.mu.Lock()
				if err != nil {
					if ctx.Err() == nil && w.err == nil {
						w.err = err
					}
					w.mu.Unlock()
					return
				}
				w.ops = append(w.ops, timedPut{start, took})
				w.mu.Unlock()
			}
		})
	}
	return w
}

// stop ends the writers and returns their puts (a second call returns the same).
func (w *latencyWriters) stop() ([]timedPut, error) {
	w.cancel()
	w.wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.ops, w.err
}
