package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// readyTimeout bounds a start to ready.
const readyTimeout = 10 * time.Minute

// benchStart measures start to ready on the data dir dataDir, restored from storeURL: clean
// (etcdbr run --validation quick, which trusts the clean-stop marker a clean stop of etcdbr
// run leaves), and after a SIGKILL (--validation full), beside plain etcd on the same dir.
//
// Plain etcd is the baseline "the same etcd started with no validation": the etcd server of
// go.mod's version, which etcdbr runs in-process; etcdbr has no depth that skips validation.
// Both find the member's files in the page cache (every start is preceded by a read of them),
// the runs alternate, and the median of cfg.Rounds runs each counts. Plain etcd changes the
// member's files, so the marker it finds no longer matches: before every timed quick start,
// etcdbr run is started and stopped once (untimed). Every timed etcdbr start is checked, from
// its log, to have validated at the depth the figure is about.
func benchStart(ctx context.Context, cfg config, dataDir, storeURL, logDir string) ([]figure, error) {
	if !hasFlag(ctx, cfg.Bins.Etcdbr, "--validation") {
		return nil, fmt.Errorf("%s run has no --validation flag: the start figures time --validation quick and full", cfg.Bins.Etcdbr)
	}
	dbBytes := dirSize(filepath.Join(dataDir, "member", "snap"))
	spec := func(etcdbr bool, name string, args ...string) serverSpec {
		return serverSpec{Etcdbr: etcdbr, DataDir: dataDir, Store: storeURL, LogPath: filepath.Join(logDir, name+".log"),
			Args: append([]string{"--full-snapshot-schedule", "0 0 1 1 *", "--gc-period", "0"}, args...)}
	}
	var cleanBase, cleanBr, killBase, killBr startRuns
	for r := range cfg.Rounds {
		for _, side := range alternate(r) {
			if side == "etcd" {
				cfg.progress("start to ready, clean data dir (%d MiB): plain etcd, round %d", dbBytes>>20, r+1)
				if err := cleanBase.start(ctx, cfg, spec(false, fmt.Sprintf("start-clean-etcd-%d", r)), ""); err != nil {
					return nil, err
				}
				continue
			}
			cfg.progress("start to ready, clean data dir (%d MiB): etcdbr run stopped cleanly (untimed), then --validation quick, round %d", dbBytes>>20, r+1)
			var marker startRuns
			if err := marker.start(ctx, cfg, spec(true, fmt.Sprintf("start-clean-etcdbr-%d-marker", r)), ""); err != nil {
				return nil, fmt.Errorf("start etcdbr run to leave a clean-stop marker: %w", err)
			}
			if err := cleanBr.start(ctx, cfg, spec(true, fmt.Sprintf("start-clean-etcdbr-%d", r), "--validation", "quick"), "quick"); err != nil {
				return nil, err
			}
		}
	}
	for r := range cfg.Rounds {
		for _, side := range alternate(r) {
			runs, args, depth := &killBase, []string(nil), ""
			if side == "etcdbr" {
				runs, args, depth = &killBr, []string{"--validation", "full"}, "full"
			}
			cfg.progress("start to ready after a SIGKILL: %s, round %d", side, r+1)
			s := spec(side == "etcdbr", fmt.Sprintf("start-killed-%s-%d", side, r))
			if _, _, err := startOnce(ctx, cfg.Bins, s, writeThenKill); err != nil {
				return nil, fmt.Errorf("before the SIGKILL: %w", err)
			}
			s = spec(side == "etcdbr", fmt.Sprintf("start-killed-%s-%d-after", side, r), args...)
			if err := runs.start(ctx, cfg, s, depth); err != nil {
				return nil, fmt.Errorf("after the SIGKILL: %w", err)
			}
		}
	}
	note := fmt.Sprintf("median of %d starts each, alternating, the member's files read into the page cache before each; ready = the first linearizable read served; "+
		"baseline: plain etcd (the same etcd server, go.mod's version; etcdbr has no depth without validation); validation = etcdbr's own \"data dir checked\" time", cfg.Rounds)
	clean := figure{
		Name:   fmt.Sprintf("start to ready, clean data dir (%d MiB), quick validation", dbBytes>>20),
		Etcdbr: cleanBr.values(true), Baseline: cleanBase.values(false), BaselineName: "plain etcd",
		Note: note + "; before each quick start, etcdbr run was started and stopped cleanly (untimed) to write the clean-stop marker that plain etcd's start invalidated; its log says depth quick",
	}
	killed := figure{
		Name:   "start to ready after a SIGKILL, full validation",
		Etcdbr: killBr.values(true), Baseline: killBase.values(false), BaselineName: "plain etcd",
		Note: note + "; before each SIGKILL the member served 1000 puts; etcdbr run --validation full, its log says depth full",
	}
	clean.compare("ready_s")
	clean.want("ready ratio <= 1.1", clean.Ratio <= 1.1)
	killed.compare("ready_s")
	return []figure{clean, killed}, nil
}

// alternate is the order of the two sides in round r: plain etcd first in even rounds.
func alternate(r int) []string {
	if r%2 == 0 {
		return []string{"etcd", "etcdbr"}
	}
	return []string{"etcdbr", "etcd"}
}

// startRuns are the timed starts of one side of a figure.
type startRuns struct {
	ready, validation []float64
	rss, anon         float64
}

// start times one start to ready of spec; for etcdbr run with depth set, its log must say it
// validated at that depth.
func (r *startRuns) start(ctx context.Context, cfg config, spec serverSpec, depth string) error {
	ready, st, err := startOnce(ctx, cfg.Bins, spec, nil)
	if err != nil {
		return err
	}
	detail := ""
	if spec.Etcdbr {
		v, err := readValidationLog(spec.LogPath)
		if err != nil {
			return err
		}
		if depth != "" && v.Depth != depth {
			return fmt.Errorf("etcdbr run validated the data dir at depth %q, but this figure times depth %q (with quick: did the clean-stop marker not match the files?): "+
				"the figure would be wrong; its log says why: %s", v.Depth, depth, spec.LogPath)
		}
		r.validation = append(r.validation, v.Took.Seconds())
		detail = fmt.Sprintf(" (validation %s: %v)", v.Depth, v.Took)
	}
	cfg.progress("  ready after %.2f s%s", ready.Seconds(), detail)
	r.ready = append(r.ready, ready.Seconds())
	r.rss, r.anon = max(r.rss, mibs(st.PeakRSS)), max(r.anon, mibs(st.PeakAnon))
	return nil
}

// values are the figure's values: the median ready time (and validation time), the highest
// peaks.
func (r *startRuns) values(validation bool) []value {
	vs := []value{{"ready_s", median(r.ready)}}
	if validation {
		vs = append(vs, value{"validation_s", median(r.validation)})
	}
	return append(vs, value{"peak_rss_mib", r.rss}, value{"peak_anon_mib", r.anon})
}

// median is the median of xs (0 for none).
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(xs))
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// validationLog is etcdbr run's "data dir checked" log line.
type validationLog struct {
	Verdict string        `json:"verdict"`
	Depth   string        `json:"depth"`
	Reason  string        `json:"reason"`
	Took    time.Duration `json:"took"`
}

// readValidationLog finds the "data dir checked" line in etcdbr's JSON log at path.
func readValidationLog(path string) (validationLog, error) {
	f, err := os.Open(path)
	if err != nil {
		return validationLog{}, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var line struct {
			Msg string `json:"msg"`
			validationLog
		}
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "data dir checked" {
			return line.validationLog, nil
		}
	}
	if err := sc.Err(); err != nil {
		return validationLog{}, fmt.Errorf("read %s: %w", path, err)
	}
	return validationLog{}, fmt.Errorf("etcdbr run did not log \"data dir checked\": the harness cannot tell which validation ran; its log: %s", path)
}

// startOnce warms the page cache with the member's files, starts a server, waits until it is
// ready and then either stops it with SIGTERM, or, with then, leaves the end to then.
func startOnce(ctx context.Context, bins binaries, spec serverSpec, then func(context.Context, *server) error) (time.Duration, procStats, error) {
	if err := warm(filepath.Join(spec.DataDir, "member")); err != nil {
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

// warm reads every file under dir, so that a start finds them in the page cache.
func warm(dir string) error {
	return filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		if err := readFile(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	})
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
