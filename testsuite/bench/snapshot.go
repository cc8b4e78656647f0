package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
)

// benchSnapshot measures a full snapshot of the member on dataDir (served by plain etcd)
// into a file:// store by etcdbr snapshot --once, beside etcdctl snapshot save into a local
// file; the best of cfg.Rounds each, alternating.
func benchSnapshot(ctx context.Context, cfg config, dataDir, dir string) ([]figure, error) {
	s, err := startServer(ctx, cfg.Bins, serverSpec{DataDir: dataDir, LogPath: filepath.Join(dir, "snapshot-etcd.log")})
	if err != nil {
		return nil, err
	}
	defer s.stop(syscall.SIGTERM)
	if _, err := s.ready(ctx, readyTimeout); err != nil {
		return nil, err
	}
	dbBytes := fileSize(filepath.Join(dataDir, "member", "snap", "db"))
	type best struct{ wall, rss, anon float64 }
	var base, br best
	record := func(b *best, st procStats) {
		if b.wall == 0 || st.Wall.Seconds() < b.wall {
			b.wall = st.Wall.Seconds()
		}
		b.rss, b.anon = max(b.rss, mibs(st.PeakRSS)), max(b.anon, mibs(st.PeakAnon))
	}
	for r := range cfg.Rounds {
		cfg.progress("full snapshot of a %d MiB db: etcdctl snapshot save, round %d", dbBytes>>20, r+1)
		out := filepath.Join(dir, "etcdctl-snapshot.db")
		st, err := runMeasured(ctx, exec.CommandContext(ctx, cfg.Bins.Etcdctl, "--endpoints", s.Endpoint, "snapshot", "save", out))
		if err != nil {
			return nil, fmt.Errorf("etcdctl snapshot save: %w", err)
		}
		record(&base, st)
		os.Remove(out)

		cfg.progress("full snapshot of a %d MiB db: etcdbr snapshot --once, round %d", dbBytes>>20, r+1)
		store := filepath.Join(dir, "snapshot-store")
		st, err = runMeasured(ctx, exec.CommandContext(ctx, cfg.Bins.Etcdbr, "snapshot", "--once", "--store", "file://"+store,
			"--endpoints", s.Endpoint, "--spool-dir", dir))
		if err != nil {
			return nil, fmt.Errorf("etcdbr snapshot: %w", err)
		}
		record(&br, st)
		os.RemoveAll(store)
	}
	vals := func(b best) []value {
		return []value{{"wall_s", b.wall}, {"mb_per_s", float64(dbBytes) / 1e6 / b.wall}, {"peak_rss_mib", b.rss}, {"peak_anon_mib", b.anon}}
	}
	f := figure{
		Name:   fmt.Sprintf("full snapshot of a %d MiB db into a file:// store", dbBytes>>20),
		Etcdbr: vals(br), Baseline: vals(base), BaselineName: "etcdctl snapshot save to a local file",
		Note: fmt.Sprintf("best of %d each; MB/s = db bytes / wall; etcdbr compresses (zstd) and checksums, etcdctl writes the db as it comes", cfg.Rounds),
	}
	f.compare("wall_s")
	f.want("wall ratio <= 1.2", f.Ratio <= 1.2)
	return []figure{f}, nil
}

func fileSize(path string) int64 {
	info, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return info.Size()
}
