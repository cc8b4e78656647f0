package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// readyTimeout bounds a start to ready.
const readyTimeout = 10 * time.Minute

// benchStart measures start to ready on the data dir dataDir (a clean one: restored, or
// stopped with SIGTERM), and after a SIGKILL, for plain etcd and for etcdbr run with the
// store the data dir was restored from. Every start is preceded by a read of the db, so that
// both find it in the page cache; the best of cfg.Rounds counts.
func benchStart(ctx context.Context, cfg config, dataDir, storeURL, logDir string) ([]figure, error) {
	quick, full, label := []string(nil), []string(nil), "etcdbr run as it is (no --validation flag yet: its one validation, embedded.Inspect)"
	if hasFlag(ctx, cfg.Bins.Etcdbr, "--validation") {
		quick, full, label = []string{"--validation", "quick"}, []string{"--validation", "full"}, ""
	}
	dbBytes := dirSize(filepath.Join(dataDir, "member", "snap"))
	spec := func(etcdbr bool, args []string, name string) serverSpec {
		return serverSpec{Etcdbr: etcdbr, DataDir: dataDir, Store: storeURL, LogPath: filepath.Join(logDir, name+".log"),
			Args: append([]string{"--full-snapshot-schedule", "0 0 1 1 *"}, args...)}
	}
	type best struct{ ready, rss, anon float64 }
	record := func(b *best, ready time.Duration, st procStats) {
		if b.ready == 0 || ready.Seconds() < b.ready {
			b.ready = ready.Seconds()
		}
		b.rss, b.anon = max(b.rss, mibs(st.PeakRSS)), max(b.anon, mibs(st.PeakAnon))
	}
	var cleanBase, cleanBr, killBase, killBr best
	for r := range cfg.Rounds {
		for _, etcdbr := range []bool{false, true} {
			name, b, args := "etcd", &cleanBase, []string(nil)
			if etcdbr {
				name, b, args = "etcdbr", &cleanBr, quick
			}
			cfg.progress("start to ready, clean data dir (%d MiB): %s, round %d", dbBytes>>20, name, r+1)
			ready, st, err := startOnce(ctx, cfg.Bins, spec(etcdbr, args, fmt.Sprintf("start-clean-%s-%d", name, r)), dataDir, nil)
			if err != nil {
				return nil, err
			}
			record(b, ready, st)
		}
	}
	for r := range cfg.Rounds {
		for _, etcdbr := range []bool{false, true} {
			name, b, args := "etcd", &killBase, []string(nil)
			if etcdbr {
				name, b, args = "etcdbr", &killBr, full
			}
			cfg.progress("start to ready after a SIGKILL: %s, round %d", name, r+1)
			s := spec(etcdbr, args, fmt.Sprintf("start-killed-%s-%d", name, r))
			if _, _, err := startOnce(ctx, cfg.Bins, s, dataDir, writeThenKill); err != nil {
				return nil, fmt.Errorf("before the SIGKILL: %w", err)
			}
			s.LogPath = strings.TrimSuffix(s.LogPath, ".log") + "-after.log"
			ready, st, err := startOnce(ctx, cfg.Bins, s, dataDir, nil)
			if err != nil {
				return nil, fmt.Errorf("after the SIGKILL: %w", err)
			}
			record(b, ready, st)
		}
	}
	vals := func(b best) []value {
		return []value{{"ready_s", b.ready}, {"peak_rss_mib", b.rss}, {"peak_anon_mib", b.anon}}
	}
	clean := figure{
		Name:   fmt.Sprintf("start to ready, clean data dir (%d MiB), quick validation", dbBytes>>20),
		Etcdbr: vals(cleanBr), Baseline: vals(cleanBase), BaselineName: "plain etcd",
		Note: fmt.Sprintf("best of %d starts each; ready = the first linearizable read served", cfg.Rounds),
	}
	killed := figure{
		Name:   "start to ready after a SIGKILL, full validation",
		Etcdbr: vals(killBr), Baseline: vals(killBase), BaselineName: "plain etcd",
		Note: fmt.Sprintf("best of %d; before each SIGKILL the member served 1000 puts", cfg.Rounds),
	}
	if label != "" {
		clean.Note += "; " + label
		killed.Note += "; " + label
	}
	clean.compare("ready_s")
	clean.want("ready ratio <= 1.1", clean.Ratio <= 1.1)
	killed.compare("ready_s")
	return []figure{clean, killed}, nil
}

// startOnce warms the page cache with the db, starts a server, waits until it is ready and
// then either stops it with SIGTERM, or, with then, leaves the end to then.
func startOnce(ctx context.Context, bins binaries, spec serverSpec, dataDir string, then func(context.Context, *server) error) (time.Duration, procStats, error) {
	if err := readFile(filepath.Join(dataDir, "member", "snap", "db")); err != nil {
		return 0, procStats{}, err
	}
	s, err := startServer(ctx, bins, spec)
	if err != nil {
		return 0, procStats{}, err
	}
	ready, err := s.ready(ctx, readyTimeout)
	if err != nil {
		s.stop(syscall.SIGKILL)
		return 0, procStats{}, err
	}
	if then != nil {
		return ready, procStats{}, then(ctx, s)
	}
	st, err := s.stop(syscall.SIGTERM)
	return ready, st, err
}

// writeThenKill makes 1000 puts and kills the server with SIGKILL.
func writeThenKill(ctx context.Context, s *server) error {
	cli, err := newClient(s.Endpoint)
	if err != nil {
		s.stop(syscall.SIGKILL)
		return err
	}
	defer cli.Close()
	value := strings.Repeat("k", 1024)
	err = parallel(ctx, 8, func(ctx context.Context, w int) error {
		for i := range 125 {
			if _, err := cli.Put(ctx, fmt.Sprintf("/bench/killed/%d/%d", w, i), value); err != nil {
				return err
			}
		}
		return nil
	})
	if _, kerr := s.stop(syscall.SIGKILL); err == nil {
		err = kerr
	}
	return err
}

// readFile reads a file to its end.
func readFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(io.Discard, f)
	return err
}
