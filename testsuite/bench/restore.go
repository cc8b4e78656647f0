package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
	"github.com/etcdbr/etcdbr/internal/deltatest"
	"github.com/etcdbr/etcdbr/snapstore"
)

// restoreConfig sizes the restore scenario.
type restoreConfig struct {
	Keys, Events, ValueSize, Writers int
	DeltaRevisions                   int64
	Seed                             uint64
	Dir, Etcdbr, Etcdutl             string
	Log                              io.Writer // progress
}

// restoreResult is what the restore scenario measured.
type restoreResult struct {
	Config                restoreConfig
	Revisions, Events     int64 // in the deltas
	Deltas                int
	FullBytes, DeltaBytes int64 // as stored
	DBBytes               int64 // the full snapshot's db
	Baseline, Restore     procStats
	Replay                replayLog
	SourceRevision        int64
}

// replayLog is what etcdbr restore logs about its replay.
type replayLog struct {
	Revisions int64         `json:"revisions"`
	Events    int64         `json:"events"`
	Duration  time.Duration `json:"duration"`
}

// benchRestore builds the store and measures both restores.
func benchRestore(ctx context.Context, cfg restoreConfig) (res restoreResult, err error) {
	res.Config = cfg
	dir := cfg.Dir
	if entries, err := os.ReadDir(dir); dir != "" && err == nil && len(entries) > 0 {
		return res, fmt.Errorf("the work directory %q is not empty", dir)
	}
	if dir == "" {
		if dir, err = os.MkdirTemp("", "etcdbr-bench-*"); err != nil {
			return res, err
		}
		defer os.RemoveAll(dir)
	}
	progress := func(format string, args ...any) {
		fmt.Fprintf(cfg.Log, "%s  "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
	}
	if cfg.Etcdbr == "" || cfg.Etcdutl == "" {
		progress("building etcdbr and etcdutl")
		if cfg.Etcdbr, cfg.Etcdutl, err = buildBinaries(ctx, filepath.Join(dir, "bin"), cfg.Etcdbr, cfg.Etcdutl); err != nil {
			return res, err
		}
	}
	storeURL := "file://" + filepath.Join(dir, "store")
	store, err := snapstore.Open(ctx, storeURL, snapstore.Options{})
	if err != nil {
		return res, err
	}
	defer store.Close()

	full, err := makeSource(ctx, cfg, filepath.Join(dir, "source"), store, &res, progress)
	if err != nil {
		return res, fmt.Errorf("make the source: %w", err)
	}
	res.FullBytes = full.Size
	deltas, err := store.List(ctx, snapstore.KindDelta)
	if err != nil {
		return res, err
	}
	for _, d := range deltas {
		res.DeltaBytes += d.Size
	}
	res.Deltas = len(deltas)

	// The baseline: etcd's own restore of the full snapshot alone.
	dbPath := filepath.Join(dir, "full.db")
	if res.DBBytes, err = saveObject(ctx, store, full, dbPath); err != nil {
		return res, err
	}
	member := []string{"--name", "bench", "--initial-cluster", "bench=http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380"}
	progress("etcdutl snapshot restore of the full snapshot")
	res.Baseline, err = runMeasured(ctx, exec.CommandContext(ctx, cfg.Etcdutl,
		append([]string{"snapshot", "restore", dbPath, "--data-dir", filepath.Join(dir, "etcdutl-restored")}, member...)...))
	if err != nil {
		return res, fmt.Errorf("etcdutl snapshot restore: %w", err)
	}
	os.Remove(dbPath)

	progress("etcdbr restore of the full snapshot and %d deltas", res.Deltas)
	restored := filepath.Join(dir, "etcdbr-restored")
	res.Restore, err = runMeasured(ctx, exec.CommandContext(ctx, cfg.Etcdbr,
		append([]string{"--log-format", "json", "restore", "--store", storeURL, "--data-dir", restored, "--"}, member...)...))
	if err != nil {
		return res, fmt.Errorf("etcdbr restore: %w", err)
	}
	if res.Replay, err = findReplayLog(res.Restore.Stderr); err != nil && res.Revisions > 0 {
		return res, err
	}
	v := embedded.Inspect(ctx, restored, "")
	if v.State != embedded.StateValid || v.Revision != res.SourceRevision {
		return res, fmt.Errorf("the restored data dir is %s at revision %d (%s), the source ended at revision %d",
			v.State, v.Revision, v.Reason, res.SourceRevision)
	}
	return res, nil
}

// buildBinaries builds the binaries not given into dir.
func buildBinaries(ctx context.Context, dir, etcdbr, etcdutl string) (string, string, error) {
	for _, b := range []struct {
		path *string
		name string
		pkg  string
	}{
		{&etcdbr, "etcdbr", "github.com/etcdbr/etcdbr/cmd/etcdbr"},
		{&etcdutl, "etcdutl", "go.etcd.io/etcd/etcdutl/v3"},
	} {
		if *b.path != "" {
			continue
		}
		*b.path = filepath.Join(dir, b.name)
		if out, err := exec.CommandContext(ctx, "go", "build", "-o", *b.path, b.pkg).CombinedOutput(); err != nil {
			return "", "", fmt.Errorf("build %s: %v\n%s", b.pkg, err, out)
		}
	}
	return etcdbr, etcdutl, nil
}

// makeSource runs an etcd with cfg.Keys keys, takes the full snapshot into store, then
// makes cfg.Events events of churn and records them into deltas.
func makeSource(ctx context.Context, cfg restoreConfig, dir string, store *snapstore.Store, res *restoreResult, progress func(string, ...any)) (snapstore.Snapshot, error) {
	ecfg, err := sourceConfig(dir)
	if err != nil {
		return snapstore.Snapshot{}, err
	}
	e, err := embedded.Start(ctx, ecfg, nil)
	if err != nil {
		return snapstore.Snapshot{}, err
	}
	defer e.Close()
	cli := e.Client()
	key := func(i int) string { return fmt.Sprintf("/registry/bench/%08d", i) }

	progress("writing %d keys", cfg.Keys)
	const txnOps = 128 // etcd's default --max-txn-ops
	var next atomic.Int64
	err = parallel(ctx, cfg.Writers, func(ctx context.Context, _ int) error {
		for {
			from := int(next.Add(txnOps) - txnOps)
			if from >= cfg.Keys {
				return nil
			}
			rng := rand.New(rand.NewPCG(cfg.Seed, uint64(from)))
			var ops []clientv3.Op
			for i := from; i < min(from+txnOps, cfg.Keys); i++ {
				ops = append(ops, clientv3.OpPut(key(i), randomValue(rng, cfg.ValueSize)))
			}
			if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
				return err
			}
		}
	})
	if err != nil {
		return snapstore.Snapshot{}, err
	}
	full, err := backup.FullFromBackend(ctx, e.Server().Backend(), store)
	if err != nil {
		return snapstore.Snapshot{}, err
	}
	progress("full snapshot at revision %d: %d bytes; now %d events of churn", full.Revision, full.Size, cfg.Events)

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
	churnErr := churn(ctx, cli, cfg, key, progress)
	stopCuts()
	cut := <-cuts
	if err := errors.Join(churnErr, cut.err); err != nil {
		return snapstore.Snapshot{}, err
	}
	cutAt := cut.last
	resp, err := cli.Get(ctx, "/")
	if err != nil {
		return snapstore.Snapshot{}, err
	}
	res.SourceRevision = resp.Header.Revision
	for cutAt < res.SourceRevision {
		to := min(cutAt+cfg.DeltaRevisions, res.SourceRevision)
		if _, err := rec.Cut(ctx, to); err != nil {
			return snapstore.Snapshot{}, err
		}
		cutAt = to
	}
	res.Revisions, res.Events = res.SourceRevision-full.Revision, rec.Events()
	return full, nil
}

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

// churn makes cfg.Events events with cfg.Writers writers, each on its own keys: mostly
// overwrites, some with a lease, deletes and re-creates, and transactions of 4 puts.
func churn(ctx context.Context, cli *clientv3.Client, cfg restoreConfig, key func(int) string, progress func(string, ...any)) error {
	var left atomic.Int64
	left.Store(int64(cfg.Events))
	claim := func(n int64) bool {
		if left.Add(-n) >= 0 {
			return true
		}
		left.Add(n)
		return false
	}
	var leases []clientv3.LeaseID
	for range 16 {
		l, err := cli.Grant(ctx, 3600)
		if err != nil {
			return err
		}
		leases = append(leases, l.ID)
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
				progress("%d of %d events written", done.Load(), cfg.Events)
			}
		}
	}()
	defer func() { close(stopProgress); wg.Wait() }()

	return parallel(ctx, cfg.Writers, func(gctx context.Context, w int) error {
		rng := rand.New(rand.NewPCG(cfg.Seed, uint64(w)))
		owned := (cfg.Keys - w + cfg.Writers - 1) / cfg.Writers
		if owned == 0 {
			return nil
		}
		mine := func() int { return w + cfg.Writers*rng.IntN(owned) }
		deleted := map[int]bool{}
		value := func() string {
			b := make([]byte, cfg.ValueSize)
			for i := range b {
				b[i] = byte('a' + rng.IntN(26))
			}
			return string(b)
		}
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
						ops = append(ops, clientv3.OpPut(key(k), value()))
					}
				}
				_, err = cli.Txn(gctx).Then(ops...).Commit()
				done.Add(4)
			case !claim(1):
				return nil
			case p < 18:
				k := mine()
				if deleted[k] {
					_, err = cli.Put(gctx, key(k), value())
					delete(deleted, k)
				} else {
					_, err = cli.Delete(gctx, key(k))
					deleted[k] = true
				}
				done.Add(1)
			default:
				k := mine()
				var opts []clientv3.OpOption
				if rng.IntN(50) == 0 {
					opts = append(opts, clientv3.WithLease(leases[rng.IntN(len(leases))]))
				}
				_, err = cli.Put(gctx, key(k), value(), opts...)
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
	cfg.LogLevel = "error"
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

// saveObject writes a full snapshot's payload (db and sha256) into a file and returns the
// db's size.
func saveObject(ctx context.Context, store *snapstore.Store, snap snapstore.Snapshot, path string) (int64, error) {
	r, err := store.Open(ctx, snap)
	if err != nil {
		return 0, err
	}
	defer r.Close()
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(f, r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return n - 32, err
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
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "deltas replayed" {
			return line.replayLog, nil
		}
	}
	return replayLog{}, fmt.Errorf("etcdbr restore did not log its replay:\n%s", stderr)
}

const mib = 1 << 20

// print writes the report.
func (r restoreResult) print(w io.Writer) {
	c := r.Config
	fmt.Fprintf(w, "restore: %d keys of %d bytes in the full snapshot, then %d events in %d revisions (%d writers, seed %d)\n",
		c.Keys, c.ValueSize, r.Events, r.Revisions, c.Writers, c.Seed)
	fmt.Fprintf(w, "store: full snapshot %.1f MiB (db %.1f MiB), %d deltas %.1f MiB\n",
		float64(r.FullBytes)/mib, float64(r.DBBytes)/mib, r.Deltas, float64(r.DeltaBytes)/mib)
	fmt.Fprintf(w, "etcdutl snapshot restore, full snapshot alone: %s\n", r.Baseline)
	fmt.Fprintf(w, "etcdbr restore, full snapshot and deltas:      %s\n", r.Restore)
	if r.Replay.Duration > 0 {
		fmt.Fprintf(w, "  replay: %d revisions, %d events in %.2f s: %.0f revisions/s, %.0f events/s\n",
			r.Replay.Revisions, r.Replay.Events, r.Replay.Duration.Seconds(),
			float64(r.Replay.Revisions)/r.Replay.Duration.Seconds(), float64(r.Replay.Events)/r.Replay.Duration.Seconds())
	}
	fmt.Fprintf(w, "  overall: %.0f revisions/s of wall time\n", float64(r.Revisions)/r.Restore.Wall.Seconds())
	fmt.Fprintf(w, "restored data dir at revision %d, the source's last\n", r.SourceRevision)
}
