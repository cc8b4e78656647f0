package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/etcdbr/etcdbr/backup"
	"github.com/etcdbr/etcdbr/embedded"
	"github.com/etcdbr/etcdbr/embedded/datadir"
	"github.com/etcdbr/etcdbr/internal/deltatest"
	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// dataset is the store every restore reads: a full snapshot and the deltas after it.
type dataset struct {
	StoreURL string
	Full     catalog.Snapshot
	// DBBytes is the size of the full snapshot's db; DeltaBytes of the deltas as stored.
	DBBytes, DeltaBytes int64
	Deltas              int
	// Points are where the churn stood after cfg.Events and after cfg.LongEvents events.
	Points []point
}

// point is a revision the deltas reach, and what led there from the full snapshot.
type point struct {
	Events    int64 // events after the full snapshot
	Revisions int64 // revisions after the full snapshot
	Revision  int64
}

// replayLog is what etcdbr restore logs about its replay.
type replayLog struct {
	Revisions int64         `json:"revisions"`
	Events    int64         `json:"events"`
	Duration  time.Duration `json:"duration"`
}

// makeDataset runs an etcd (in this process) with cfg.Keys keys (or cfg.DBBytes of them), takes the full snapshot
// into a file store in dir, then makes cfg.Events and then cfg.LongEvents events in all of
// churn, recorded into deltas.
func makeDataset(ctx context.Context, cfg config, dir string) (ds dataset, err error) {
	ds.StoreURL = "file://" + filepath.Join(dir, "store")
	store, err := snapstore.Open(ctx, ds.StoreURL, snapstore.Options{})
	if err != nil {
		return ds, err
	}
	defer store.Close()
	if err := makeSource(ctx, cfg, filepath.Join(dir, "source"), store, &ds); err != nil {
		return ds, fmt.Errorf("make the source: %w", err)
	}
	deltas, err := store.List(ctx, catalog.KindDelta)
	if err != nil {
		return ds, err
	}
	for _, d := range deltas {
		ds.DeltaBytes += d.Size
	}
	ds.Deltas = len(deltas)
	// The source is only needed for the store: its data dir is as large as the store.
	if err := os.RemoveAll(filepath.Join(dir, "source")); err != nil {
		return ds, err
	}
	return ds, nil
}

// benchRestore measures, beside the baseline (etcdutl snapshot restore of the full snapshot
// alone), etcdbr restore to each point of the dataset; the data dir restored to the last
// point is left in lastDir. The runs alternate for cfg.Rounds rounds (the baseline, then
// etcdbr to each point), and the median of each counts: the machine is shared, and one slow
// baseline run would otherwise move every ratio.
func benchRestore(ctx context.Context, cfg config, ds *dataset, dir, lastDir string) ([]figure, error) {
	store, err := snapstore.Open(ctx, ds.StoreURL, snapstore.Options{})
	if err != nil {
		return nil, err
	}
	defer store.Close()
	dbPath := filepath.Join(dir, "full.db")
	if err = saveObject(ctx, store, ds.Full, dbPath); err != nil {
		return nil, err
	}
	defer os.Remove(dbPath)
	member := []string{"--name", "bench", "--initial-cluster", "bench=http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380"}
	rounds := max(cfg.Rounds, 1)
	var base restoreRuns
	etcdbr := make([]restoreRuns, len(ds.Points))
	for round := range rounds {
		cfg.progress("round %d of %d: etcdutl snapshot restore of the full snapshot (%d MiB db)", round+1, rounds, ds.DBBytes>>20)
		baseDir := filepath.Join(dir, "etcdutl-restored")
		st, err := runMeasured(ctx, exec.CommandContext(ctx, cfg.Bins.Etcdutl,
			append([]string{"snapshot", "restore", dbPath, "--data-dir", baseDir}, member...)...))
		if err != nil {
			return nil, fmt.Errorf("etcdutl snapshot restore: %w", err)
		}
		os.RemoveAll(baseDir)
		base.add(st, replayLog{})

		for i, p := range ds.Points {
			restored := filepath.Join(dir, fmt.Sprintf("etcdbr-restored-%d", i))
			if i == len(ds.Points)-1 && round == rounds-1 {
				restored = lastDir
			}
			cfg.progress("round %d of %d: etcdbr restore of the full snapshot and %d events (%d revisions)", round+1, rounds, p.Events, p.Revisions)
			st, err := runMeasured(ctx, exec.CommandContext(ctx, cfg.Bins.Etcdbr,
				append([]string{"--log-format", "json", "restore", "--store", ds.StoreURL, "--data-dir", restored,
					"--to-revision", fmt.Sprint(p.Revision), "--"}, member...)...))
			if err != nil {
				return nil, fmt.Errorf("etcdbr restore: %w", err)
			}
			replay, err := findReplayLog(st.Stderr)
			if err != nil && p.Revisions > 0 {
				return nil, err
			}
			// A restore to a point before the store's newest starts a new history: the data
			// dir's revision is raised (its marker says by how much).
			v := datadir.Inspect(ctx, restored, "")
			m, ok, err := datadir.ReadRestoredMarker(restored)
			if err != nil || !ok || m.Revision != p.Revision {
				return nil, fmt.Errorf("the restored data dir's marker: %+v, %v (found %v), want revision %d restored", m, err, ok, p.Revision)
			}
			if v.State != datadir.StateValid || v.Revision != m.DataRevision {
				return nil, fmt.Errorf("the restored data dir is %s at revision %d (%s), the source was at revision %d, raised to %d",
					v.State, v.Revision, v.Reason, p.Revision, m.DataRevision)
			}
			if restored != lastDir {
				os.RemoveAll(restored)
			}
			etcdbr[i].add(st, replay)
		}
	}
	baseline := base.values()

	var figs []figure
	for i, p := range ds.Points {
		r := etcdbr[i]
		f := figure{
			Name:         fmt.Sprintf("restore: full (%d keys x %d B) + %d delta events", cfg.Keys, cfg.ValueSize, p.Events),
			Etcdbr:       append(r.values(), value{"revisions_per_s", median(r.revsPerS)}, value{"wall_revisions_per_s", float64(p.Revisions) / median(r.wall)}),
			BaselineName: "etcdutl snapshot restore of the full alone",
			Baseline:     baseline,
			Note: fmt.Sprintf("median of %d each, alternating (peaks: the highest); %d revisions (%d events) replayed in %.2f s (median); "+
				"full snapshot %.1f MiB stored (db %.1f MiB), deltas %.1f MiB in %d objects for the whole chain",
				rounds, r.replay.Revisions, r.replay.Events, median(r.replaySec), mibs(ds.Full.Size), mibs(ds.DBBytes), mibs(ds.DeltaBytes), ds.Deltas),
		}
		f.compare("wall_s")
		if i == 0 {
			f.want("wall ratio <= 5", f.Ratio <= 5)
		} else {
			f.want("RssAnon < 300 MiB", r.anon < 300)
		}
		f.want(">= 100,000 rev/s", get(f.Etcdbr, "revisions_per_s") >= 100_000)
		figs = append(figs, f)
	}
	return figs, nil
}

// restoreRuns are the timed restores of one side of a figure.
type restoreRuns struct {
	wall, cpu, revsPerS, replaySec []float64
	rss, anon                      float64 // MiB, the highest
	replay                         replayLog
}

func (r *restoreRuns) add(st procStats, replay replayLog) {
	r.wall, r.cpu = append(r.wall, st.Wall.Seconds()), append(r.cpu, st.CPU.Seconds())
	r.rss, r.anon = max(r.rss, mibs(st.PeakRSS)), max(r.anon, mibs(st.PeakAnon))
	r.revsPerS = append(r.revsPerS, perSecond(replay.Revisions, replay.Duration))
	r.replaySec = append(r.replaySec, replay.Duration.Seconds())
	r.replay = replay
}

func (r *restoreRuns) values() []value {
	return []value{{"wall_s", median(r.wall)}, {"cpu_s", median(r.cpu)}, {"peak_rss_mib", r.rss}, {"peak_anon_mib", r.anon}}
}

func mibs(n int64) float64 { return float64(n) / mib }

func perSecond(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// makeSource runs an etcd with cfg.Keys keys (or as many as make a db of cfg.DBBytes), takes the full snapshot into store, then
// makes the churn and records it into deltas.
func makeSource(ctx context.Context, cfg config, dir string, store *snapstore.Store, ds *dataset) error {
	ecfg, err := sourceConfig(dir)
	if err != nil {
		return err
	}
	e, err := embedded.Start(ctx, ecfg, nil)
	if err != nil {
		return err
	}
	defer e.Close()
	cli := e.Client()

	if cfg.DBBytes > 0 {
		cfg.progress("writing keys of %d bytes until the db holds %d MiB", cfg.ValueSize, cfg.DBBytes>>20)
	} else {
		cfg.progress("writing %d keys of %d bytes", cfg.Keys, cfg.ValueSize)
	}
	const txnOps = 128 // etcd's default --max-txn-ops
	var next atomic.Int64
	be := e.Server().Backend()
	keys := cfg.Keys
	if cfg.DBBytes > 0 {
		keys = math.MaxInt
	}
	err = parallel(ctx, cfg.Writers, func(ctx context.Context, _ int) error {
		for {
			// With DBBytes, a writer looks at the db's size before it takes the next keys,
			// and writes all it took: the keys written are then exactly 0..next-1.
			if cfg.DBBytes > 0 && be.Size() >= cfg.DBBytes {
				return nil
			}
			from := int(next.Add(txnOps) - txnOps)
			if from >= keys {
				return nil
			}
			rng := rand.New(rand.NewPCG(cfg.Seed, uint64(from)))
			var ops []clientv3.Op
			for i := from; i < min(from+txnOps, keys); i++ {
				ops = append(ops, clientv3.OpPut(benchKey(i), randomValue(rng, cfg.ValueSize)))
			}
			if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
				return err
			}
		}
	})
	if err != nil {
		return err
	}
	if cfg.DBBytes > 0 {
		cfg.Keys = int(next.Load()) // the churn's keys
		cfg.progress("%d keys written: a db of %d MiB", cfg.Keys, be.Size()>>20)
	}
	full, err := backup.FullFromBackend(ctx, be, store)
	if err != nil {
		return err
	}
	ds.Full, ds.DBBytes = full, be.Size()
	cfg.progress("full snapshot at revision %d: %d bytes; now %d events of churn", full.Revision, full.Size, cfg.LongEvents)

	rec := deltatest.Start(ctx, cli, store, full.Revision+1, deltatest.Options{})
	defer rec.Stop()
	cutCtx, stopCuts := context.WithCancel(ctx)
	type cutDone struct {
		last int64
		err  error
	}
	cuts := make(chan cutDone, 1)
	go func() {
		last, err := cutEvery(cutCtx, rec, full.Revision, cfg.DeltaRevisions)
		cuts <- cutDone{last, err}
	}()
	ch, err := newChurner(ctx, cli, cfg)
	if err == nil {
		phases := []int{cfg.Events}
		if cfg.LongEvents > cfg.Events {
			phases = append(phases, cfg.LongEvents-cfg.Events)
		}
		for _, n := range phases {
			if err = ch.run(ctx, n); err != nil {
				break
			}
			var resp *clientv3.GetResponse
			if resp, err = cli.Get(ctx, "/", clientv3.WithCountOnly()); err != nil {
				break
			}
			rev := resp.Header.Revision
			if err = rec.WaitFor(ctx, rev); err != nil {
				break
			}
			ds.Points = append(ds.Points, point{Events: rec.Events(), Revisions: rev - full.Revision, Revision: rev})
		}
	}
	stopCuts()
	cut := <-cuts
	if err := errors.Join(err, cut.err); err != nil {
		return err
	}
	last := ds.Points[len(ds.Points)-1].Revision
	for cutAt := cut.last; cutAt < last; {
		to := min(cutAt+cfg.DeltaRevisions, last)
		if _, err := rec.Cut(ctx, to); err != nil {
			return err
		}
		cutAt = to
	}
	return nil
}

// benchKey is the name of the i-th key of the dataset.
func benchKey(i int) string { return fmt.Sprintf("/registry/bench/%08d", i) }

// cutEvery writes a delta whenever n revisions after the previous one were received, until
// ctx ends; it returns the last revision cut.
func cutEvery(ctx context.Context, rec *deltatest.Recorder, from, n int64) (int64, error) {
	cut := from
	for {
		select {
		case <-ctx.Done():
			return cut, nil
		case <-time.After(20 * time.Millisecond):
		}
		for rec.Last()-cut >= n {
			if _, err := rec.Cut(ctx, cut+n); err != nil {
				if ctx.Err() != nil {
					return cut, nil
				}
				return cut, fmt.Errorf("cut a delta at revision %d: %w", cut+n, err)
			}
			cut += n
		}
	}
}

// churner makes churn with cfg.Writers writers, each on its own keys: mostly overwrites,
// some with a lease, deletes and re-creates, and transactions of 4 puts. Its writers keep
// their state (random source, deleted keys) from one run to the next.
type churner struct {
	cli     *clientv3.Client
	cfg     config
	leases  []clientv3.LeaseID
	writers []*churnWriter
}

type churnWriter struct {
	rng     *rand.Rand
	deleted map[int]bool
}

func newChurner(ctx context.Context, cli *clientv3.Client, cfg config) (*churner, error) {
	c := &churner{cli: cli, cfg: cfg}
	for range 16 {
		l, err := cli.Grant(ctx, 3600)
		if err != nil {
			return nil, err
		}
		c.leases = append(c.leases, l.ID)
	}
	for w := range cfg.Writers {
		c.writers = append(c.writers, &churnWriter{rng: rand.New(rand.NewPCG(cfg.Seed, uint64(w))), deleted: map[int]bool{}})
	}
	return c, nil
}

// run makes n events.
func (c *churner) run(ctx context.Context, n int) error {
	cfg, cli := c.cfg, c.cli
	var left atomic.Int64
	left.Store(int64(n))
	claim := func(n int64) bool {
		if left.Add(-n) >= 0 {
			return true
		}
		left.Add(n)
		return false
	}
	var done atomic.Int64
	stopProgress := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stopProgress:
				return
			case <-time.After(10 * time.Second):
				cfg.progress("%d of %d events written", done.Load(), n)
			}
		}
	}()
	defer func() { close(stopProgress); wg.Wait() }()

	return parallel(ctx, cfg.Writers, func(gctx context.Context, w int) error {
		rng, deleted := c.writers[w].rng, c.writers[w].deleted
		owned := (cfg.Keys - w + cfg.Writers - 1) / cfg.Writers
		if owned == 0 {
			return nil
		}
		mine := func() int { return w + cfg.Writers*rng.IntN(owned) }
		value := func() string { return randomValue(rng, cfg.ValueSize) }
		for {
			var err error
			switch p := rng.IntN(100); {
			case p < 10 && owned >= 4 && claim(4):
				ops := make([]clientv3.Op, 0, 4)
				seen := map[int]bool{}
				for len(ops) < 4 {
					if k := mine(); !seen[k] {
						seen[k] = true
						delete(deleted, k)
						ops = append(ops, clientv3.OpPut(benchKey(k), value()))
					}
				}
				_, err = cli.Txn(gctx).Then(ops...).Commit()
				done.Add(4)
			case !claim(1):
				return nil
			case p < 18:
				k := mine()
				if deleted[k] {
					_, err = cli.Put(gctx, benchKey(k), value())
					delete(deleted, k)
				} else {
					_, err = cli.Delete(gctx, benchKey(k))
					deleted[k] = true
				}
				done.Add(1)
			default:
				k := mine()
				var opts []clientv3.OpOption
				if rng.IntN(50) == 0 {
					opts = append(opts, clientv3.WithLease(c.leases[rng.IntN(len(c.leases))]))
				}
				_, err = cli.Put(gctx, benchKey(k), value(), opts...)
				delete(deleted, k)
				done.Add(1)
			}
			if err != nil {
				return err
			}
		}
	})
}

// randomValue is n random lowercase letters: values compress about as well as real ones.
func randomValue(rng *rand.Rand, n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + rng.IntN(26))
	}
	return string(b)
}

// parallel runs n copies of f (given their index) and returns the first error; the first
// error cancels the others' context.
func parallel(ctx context.Context, n int, f func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, n)
	for i := range n {
		go func() {
			err := f(ctx, i)
			if err != nil {
				cancel()
			}
			errs <- err
		}()
	}
	var first error
	for range n {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// sourceConfig is an etcd on free loopback ports with its data in dir, without fsync (the
// source only feeds the store).
func sourceConfig(dir string) (*embed.Config, error) {
	cfg := embed.NewConfig()
	cfg.Name = "source"
	cfg.Dir = dir
	cfg.LogLevel = "panic" // its errors while closing are noise here
	cfg.UnsafeNoFsync = true
	cfg.QuotaBackendBytes = 8 << 30
	var urls [3]url.URL
	for i := range urls {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		urls[i] = url.URL{Scheme: "http", Host: l.Addr().String()}
		l.Close()
	}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = urls[:1], urls[:1]
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = urls[1:2], urls[1:2]
	cfg.ListenMetricsUrls = urls[2:3]
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	return cfg, nil
}

// saveObject writes a full snapshot's payload (db and sha256) into a file.
func saveObject(ctx context.Context, store *snapstore.Store, snap catalog.Snapshot, path string) error {
	r, err := store.Open(ctx, snap)
	if err != nil {
		return err
	}
	defer r.Close()
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// findReplayLog finds the "deltas replayed" line of etcdbr's JSON log.
func findReplayLog(stderr []byte) (replayLog, error) {
	sc := bufio.NewScanner(bytes.NewReader(stderr))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var line struct {
			Msg string `json:"msg"`
			replayLog
		}
		if json.Unmarshal(jsonPart(sc.Bytes()), &line) == nil && line.Msg == "deltas replayed" {
			return line.replayLog, nil
		}
	}
	return replayLog{}, fmt.Errorf("etcdbr restore did not log its replay:\n%s", stderr)
}

// jsonPart is a line of etcdbr's JSON log from its first brace on: with a progress bar drawn
// on the same output (--progress bar), a log line follows the bar's last drawing.
func jsonPart(line []byte) []byte {
	if i := bytes.IndexByte(line, '{'); i > 0 {
		return line[i:]
	}
	return line
}

const mib = 1 << 20
