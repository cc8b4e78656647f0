package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// benchSnapshot measures a full snapshot of the member on dataDir into a file:// store both
// ways etcdbr takes one, each beside `etcdctl snapshot save` into a local file from the same
// member, alternating, the median of cfg.Rounds each:
//
//   - the sidecar: `etcdbr snapshot --once` from plain etcd serving dataDir, through the
//     Maintenance API. The member is idle, so the stream is uploaded in one pass while it is
//     received: its spool dir does not exist, so a snapshot that had to spool fails.
//   - in-process: `etcdbr run` on dataDir, a snapshot asked for with POST /v1/snapshots/full,
//     timed from the request to the answer (sent once the object is committed): the
//     backend's snapshot transaction streamed into the store.
//
// CPU counts the client and the member together: the server's share is read from its
// /proc/PID/stat before and after.
func benchSnapshot(ctx context.Context, cfg config, dataDir, dir string) ([]figure, error) {
	dbBytes := fileSize(filepath.Join(dataDir, "member", "snap", "db"))
	sidecar, err := benchSidecarSnapshot(ctx, cfg, dataDir, dir, dbBytes)
	if err != nil {
		return nil, fmt.Errorf("etcdbr snapshot: %w", err)
	}
	inProcess, err := benchRunSnapshot(ctx, cfg, dataDir, dir, dbBytes)
	if err != nil {
		return nil, fmt.Errorf("etcdbr run, POST /v1/snapshots/full: %w", err)
	}
	return []figure{sidecar, inProcess}, nil
}

// snapshotRuns are the timed snapshots of one side of a figure.
type snapshotRuns struct {
	wall, cpu         []float64
	rss, anon, growth float64
}

func (r *snapshotRuns) add(wall, cpu time.Duration, rss, anon int64) {
	r.wall, r.cpu = append(r.wall, wall.Seconds()), append(r.cpu, cpu.Seconds())
	r.rss, r.anon = max(r.rss, mibs(rss)), max(r.anon, mibs(anon))
}

func (r *snapshotRuns) values(dbBytes int64, peaks ...string) []value {
	wall := median(r.wall)
	vs := []value{{"wall_s", wall}, {"mb_per_s", float64(dbBytes) / 1e6 / wall}, {"cpu_s", median(r.cpu)}}
	for _, p := range peaks {
		v := value{Name: p}
		switch p {
		case "peak_rss_mib":
			v.Value = r.rss
		case "peak_anon_mib":
			v.Value = r.anon
		case "anon_growth_mib":
			v.Value = r.growth
		}
		vs = append(vs, v)
	}
	return vs
}

// benchSidecarSnapshot measures etcdbr snapshot --once beside etcdctl snapshot save, both
// from plain etcd serving dataDir.
func benchSidecarSnapshot(ctx context.Context, cfg config, dataDir, dir string, dbBytes int64) (figure, error) {
	s, err := startServer(ctx, cfg.Bins, serverSpec{DataDir: dataDir, LogPath: filepath.Join(dir, "snapshot-etcd.log")})
	if err != nil {
		return figure{}, err
	}
	defer s.stop(syscall.SIGTERM)
	if _, err := s.ready(ctx, readyTimeout); err != nil {
		return figure{}, err
	}
	var base, br snapshotRuns
	for r := range cfg.Rounds {
		for _, side := range alternate(r) {
			if side == "etcd" {
				cfg.progress("full snapshot of a %d MiB db from plain etcd: etcdctl snapshot save, round %d", dbBytes>>20, r+1)
				st, cpu, err := snapshotWithEtcdctl(ctx, cfg, s, dir)
				if err != nil {
					return figure{}, err
				}
				base.add(st.Wall, cpu, st.PeakRSS, st.PeakAnon)
				continue
			}
			cfg.progress("full snapshot of a %d MiB db from plain etcd: etcdbr snapshot --once, round %d", dbBytes>>20, r+1)
			store := filepath.Join(dir, "snapshot-store")
			st, cpu, err := runWithServerCPU(ctx, s, exec.CommandContext(ctx, cfg.Bins.Etcdbr, "snapshot", "--once", "--store", "file://"+store,
				"--endpoints", s.Endpoint, "--spool-dir", filepath.Join(dir, "no-spool-dir")))
			if err != nil {
				if strings.Contains(string(st.Stderr), "spool file") {
					err = fmt.Errorf("it had to spool the stream (did the member's revision change while the snapshot started?); this figure times the one-pass stream of an idle member: %w", err)
				}
				return figure{}, err
			}
			if err := checkSnapshotName(ctx, strings.TrimSpace(string(st.Stdout)), s); err != nil {
				return figure{}, err
			}
			br.add(st.Wall, cpu, st.PeakRSS, st.PeakAnon)
			if err := os.RemoveAll(store); err != nil {
				return figure{}, err
			}
		}
	}
	f := figure{
		Name:   fmt.Sprintf("full snapshot of a %d MiB db into a file:// store: etcdbr snapshot (sidecar, Maintenance API)", dbBytes>>20),
		Etcdbr: br.values(dbBytes, "peak_rss_mib", "peak_anon_mib"), Baseline: base.values(dbBytes, "peak_rss_mib", "peak_anon_mib"),
		BaselineName: "etcdctl snapshot save to a local file",
		Note: fmt.Sprintf("median of %d each, alternating, from plain etcd serving the restored dir; MB/s = db bytes / wall; CPU = client and etcd together; "+
			"etcdbr receives, hashes, scans for the revision, compresses (zstd), checksums and stores in one pass (no spool); etcdctl writes the db as it comes", cfg.Rounds),
	}
	f.compare("wall_s")
	f.want("wall ratio <= 1.2", f.Ratio <= 1.2)
	return f, nil
}

// snapshotWithEtcdctl runs etcdctl snapshot save from s into a file in dir, removed after;
// cpu is etcdctl's and s's.
func snapshotWithEtcdctl(ctx context.Context, cfg config, s *server, dir string) (procStats, time.Duration, error) {
	out := filepath.Join(dir, "etcdctl-snapshot.db")
	st, cpu, err := runWithServerCPU(ctx, s, exec.CommandContext(ctx, cfg.Bins.Etcdctl, "--endpoints", s.Endpoint, "snapshot", "save", out))
	if err != nil {
		return st, 0, fmt.Errorf("etcdctl snapshot save: %w", err)
	}
	return st, cpu, os.Remove(out)
}

// runWithServerCPU runs cmd measured; cpu is its CPU time and the server s's during it.
func runWithServerCPU(ctx context.Context, s *server, cmd *exec.Cmd) (st procStats, cpu time.Duration, err error) {
	before, err := cpuTime(s.cmd.Process.Pid)
	if err != nil {
		return procStats{}, 0, err
	}
	if st, err = runMeasured(ctx, cmd); err != nil {
		return st, 0, err
	}
	after, err := cpuTime(s.cmd.Process.Pid)
	if err != nil {
		return st, 0, err
	}
	return st, st.CPU + after - before, nil
}

// checkSnapshotName checks that the object key names the member's revision (the member is
// idle: it is the revision inside the snapshot).
func checkSnapshotName(ctx context.Context, key string, s *server) error {
	snap, ok := catalog.ParseName(key)
	if !ok {
		return fmt.Errorf("etcdbr snapshot printed %q, not an object key", key)
	}
	cli, err := newClient(s.Endpoint)
	if err != nil {
		return err
	}
	defer cli.Close()
	resp, err := cli.Get(ctx, "ready-probe")
	if err != nil {
		return err
	}
	if snap.Revision != resp.Header.Revision {
		return fmt.Errorf("the snapshot %s names revision %d, the idle member is at %d", key, snap.Revision, resp.Header.Revision)
	}
	return nil
}

// benchRunSnapshot measures the full snapshot etcdbr run takes in-process, asked for through
// its HTTP API, beside etcdctl snapshot save from the same member.
func benchRunSnapshot(ctx context.Context, cfg config, dataDir, dir string, dbBytes int64) (figure, error) {
	ports, err := freePorts(1)
	if err != nil {
		return figure{}, err
	}
	api := fmt.Sprintf("127.0.0.1:%d", ports[0])
	storeDir := filepath.Join(dir, "run-snapshot-store")
	if err := warm(filepath.Join(dataDir, "member")); err != nil {
		return figure{}, err
	}
	s, err := startServer(ctx, cfg.Bins, serverSpec{Etcdbr: true, DataDir: dataDir, Store: "file://" + storeDir, API: api,
		LogPath: filepath.Join(dir, "snapshot-etcdbr-run.log"),
		Args:    []string{"--delta-snapshot-period", "0s", "--full-snapshot-schedule", "0 0 1 1 *", "--gc-period", "0"}})
	if err != nil {
		return figure{}, err
	}
	defer s.stop(syscall.SIGTERM)
	if _, err := s.ready(ctx, readyTimeout); err != nil {
		return figure{}, err
	}
	store, err := snapstore.Open(ctx, "file://"+storeDir, snapstore.Options{})
	if err != nil {
		return figure{}, err
	}
	defer store.Close()
	cfg.progress("full snapshot of a %d MiB db in etcdbr run: waiting for the snapshot it takes at start into an empty store", dbBytes>>20)
	if err := waitForFull(ctx, store); err != nil {
		return figure{}, err
	}
	var base, br snapshotRuns
	for r := range cfg.Rounds {
		for _, side := range alternate(r) {
			if side == "etcd" {
				cfg.progress("full snapshot of a %d MiB db from etcdbr run: etcdctl snapshot save, round %d", dbBytes>>20, r+1)
				st, cpu, err := snapshotWithEtcdctl(ctx, cfg, s, dir)
				if err != nil {
					return figure{}, err
				}
				base.add(st.Wall, cpu, st.PeakRSS, st.PeakAnon)
				continue
			}
			cfg.progress("full snapshot of a %d MiB db in etcdbr run: POST /v1/snapshots/full, round %d", dbBytes>>20, r+1)
			snap, wall, cpu, growth, err := requestFull(ctx, api, s.cmd.Process.Pid)
			if err != nil {
				return figure{}, fmt.Errorf("%w; its log: %s", err, s.log.Name())
			}
			br.add(wall, cpu, 0, 0)
			br.growth = max(br.growth, mibs(growth))
			if err := store.Delete(ctx, snap); err != nil {
				return figure{}, err
			}
		}
	}
	f := figure{
		Name:   fmt.Sprintf("full snapshot of a %d MiB db into a file:// store: etcdbr run (in-process, POST /v1/snapshots/full)", dbBytes>>20),
		Etcdbr: br.values(dbBytes, "anon_growth_mib"), Baseline: base.values(dbBytes, "peak_rss_mib", "peak_anon_mib"),
		BaselineName: "etcdctl snapshot save from the same member to a local file",
		Note: fmt.Sprintf("median of %d each, alternating; wall from the request to the answer, sent once the object is committed; CPU = etcdbr run's during the request "+
			"(etcdctl: etcdctl's and etcdbr run's); RssAnon + = etcdbr run's anonymous memory above what it held before the request", cfg.Rounds),
	}
	f.compare("wall_s")
	f.want("wall ratio <= 1.2", f.Ratio <= 1.2)
	return f, nil
}

// waitForFull waits until the store holds a full snapshot.
func waitForFull(ctx context.Context, store *snapstore.Store) error {
	deadline := time.Now().Add(readyTimeout)
	for {
		_, ok, err := store.Latest(ctx, catalog.KindFull)
		switch {
		case err != nil:
			return err
		case ok:
			return nil
		case time.Now().After(deadline):
			return fmt.Errorf("no full snapshot in the store %v after the start", readyTimeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// requestFull asks etcdbr run (API at api, process pid) for a full snapshot and returns the
// object, the time to the answer, the process's CPU time meanwhile and the growth of its
// RssAnon (sampled).
func requestFull(ctx context.Context, api string, pid int) (snap catalog.Snapshot, wall, cpu time.Duration, growth int64, err error) {
	status := fmt.Sprintf("/proc/%d/status", pid)
	_, anon0, ok := readStatus(status)
	if !ok {
		return snap, 0, 0, 0, fmt.Errorf("cannot read %s", status)
	}
	cpu0, err := cpuTime(pid)
	if err != nil {
		return snap, 0, 0, 0, err
	}
	stop := make(chan struct{})
	peak := make(chan int64, 1)
	go func() {
		top := anon0
		tick := time.NewTicker(sampleEvery)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				peak <- top
				return
			case <-tick.C:
				if _, anon, ok := readStatus(status); ok {
					top = max(top, anon)
				}
			}
		}
	}()
	start := time.Now()
	rctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, "http://"+api+"/v1/snapshots/full", nil)
	if err != nil {
		close(stop)
		return snap, 0, 0, 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	var body []byte
	if err == nil {
		body, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	wall = time.Since(start)
	close(stop)
	top := <-peak
	if err != nil {
		return snap, 0, 0, 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return snap, 0, 0, 0, fmt.Errorf("POST /v1/snapshots/full: %s: %s", resp.Status, body)
	}
	var answer struct {
		Snapshot struct {
			Key string `json:"key"`
		} `json:"snapshot"`
	}
	if err := json.Unmarshal(body, &answer); err != nil {
		return snap, 0, 0, 0, fmt.Errorf("POST /v1/snapshots/full answered %q: %w", body, err)
	}
	snap, ok = catalog.ParseName(answer.Snapshot.Key)
	if !ok {
		return snap, 0, 0, 0, fmt.Errorf("POST /v1/snapshots/full answered %q: no object key", body)
	}
	cpu1, err := cpuTime(pid)
	if err != nil {
		return snap, 0, 0, 0, err
	}
	return snap, wall, cpu1 - cpu0, top - anon0, nil
}

func fileSize(path string) int64 {
	info, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return info.Size()
}
