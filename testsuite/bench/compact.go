package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/etcdbr/etcdbr/embedded/datadir"
	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// benchCompact measures `etcdbr compact` of the dataset's chain (the full snapshot and
// every delta up to the last point) into one full snapshot, then `etcdbr restore` of the last
// point from the compacted full snapshot (which it reads alone) beside `etcdbr restore` of
// the same point from the chain, alternating, in the same rounds: the compacted full snapshot
// is hidden from the chain's restores (renamed to a name listings ignore). The two restores
// must have the same HashKV: plain etcd is started on both data dirs and asked. Compaction
// runs cfg.Rounds times (the compacted full snapshot is deleted between rounds); medians.
func benchCompact(ctx context.Context, cfg config, ds dataset, dir string) ([]figure, error) {
	store, err := snapstore.Open(ctx, ds.StoreURL, snapstore.Options{})
	if err != nil {
		return nil, err
	}
	defer store.Close()
	last := ds.Points[len(ds.Points)-1]
	rounds := max(cfg.Rounds, 1)

	var comp compactRuns
	var compacted catalog.Snapshot
	for round := range rounds {
		cfg.progress("round %d of %d: etcdbr compact of the full snapshot and %d events (%d revisions)", round+1, rounds, last.Events, last.Revisions)
		st, err := runMeasured(ctx, exec.CommandContext(ctx, cfg.Bins.Etcdbr, "--log-format", "json", "compact",
			"--store", ds.StoreURL, "--spool-dir", filepath.Join(dir, "compact-spool")))
		if err != nil {
			return nil, fmt.Errorf("etcdbr compact: %w", err)
		}
		replay, err := findReplayLog(st.Stderr)
		if err != nil {
			return nil, err
		}
		settle, err := findSettle(st.Stderr)
		if err != nil {
			return nil, err
		}
		comp.add(st, replay)
		comp.work = append(comp.work, st.Wall.Seconds()-settle.Seconds())
		newest, ok, err := store.Latest(ctx, catalog.KindFull)
		if err != nil {
			return nil, err
		}
		if !ok || newest.Revision != last.Revision || newest.Key == ds.Full.Key {
			return nil, fmt.Errorf("after etcdbr compact the newest full snapshot is %v, want one at revision %d", newest, last.Revision)
		}
		compacted = newest
		if round < rounds-1 {
			if err := store.Delete(ctx, compacted); err != nil {
				return nil, err
			}
		}
	}

	object := filepath.Join(strings.TrimPrefix(ds.StoreURL, "file://"), filepath.FromSlash(compacted.Key))
	hidden := object + ".hidden" // not a backup's name: listings ignore it
	var before, after restoreRuns
	chainDir, compDir := filepath.Join(dir, "chain-restored"), filepath.Join(dir, "compacted-restored")
	defer os.RemoveAll(chainDir)
	defer os.RemoveAll(compDir)
	for round := range rounds {
		for _, side := range alternate(round) {
			fromChain := side == "etcd" // the baseline's turn
			what, into, runs := "the compacted full snapshot", compDir, &after
			if fromChain {
				what, into, runs = "the chain (the compacted full snapshot hidden)", chainDir, &before
				if err := os.Rename(object, hidden); err != nil {
					return nil, err
				}
			}
			cfg.progress("round %d of %d: etcdbr restore of revision %d from %s", round+1, rounds, last.Revision, what)
			st, replayed, err := restoreMeasured(ctx, cfg, ds, last, into)
			if fromChain {
				if rerr := os.Rename(hidden, object); err == nil {
					err = rerr
				}
			}
			if err != nil {
				return nil, err
			}
			if replayed != fromChain {
				return nil, fmt.Errorf("etcdbr restore of revision %d from %s replayed deltas: %v, want %v", last.Revision, what, replayed, fromChain)
			}
			runs.add(st, replayLog{})
		}
	}

	// Both restores raised the revision by the same bump and marked it compacted (a restore
	// by etcdbr restore starts a new history), so HashKV is asked at the current revision:
	// every key's newest state (key, value, create and mod revision, version, lease), above
	// the same compaction. (TestCompact compares HashKV at the chain's own revision, over its
	// whole history, on restores without a bump.)
	cfg.progress("HashKV: plain etcd on the chain's restore and on the compacted full snapshot's")
	chainHash, err := hashKVOf(ctx, cfg, chainDir, 0, filepath.Join(dir, "hashkv-chain.log"))
	if err != nil {
		return nil, fmt.Errorf("HashKV of the chain's restore: %w", err)
	}
	compHash, err := hashKVOf(ctx, cfg, compDir, 0, filepath.Join(dir, "hashkv-compacted.log"))
	if err != nil {
		return nil, fmt.Errorf("HashKV of the compacted full snapshot's restore: %w", err)
	}
	sameHash := chainHash == compHash

	f1 := figure{
		Name:         fmt.Sprintf("compact: full (%d keys x %d B) + %d delta events into one full snapshot", cfg.Keys, cfg.ValueSize, last.Events),
		Etcdbr:       append(comp.values(), value{"work_s", median(comp.work)}, value{"revisions_per_s", median(comp.revsPerS)}),
		BaselineName: "etcdbr restore of the same chain",
		Baseline:     before.values(),
		Note: fmt.Sprintf("median of %d each (the compacted full snapshot deleted between rounds); the wall time includes the wait after "+
			"the restore lock was written (5 s: garbage collection elsewhere that started without it), the work does not; %d revisions "+
			"replayed in %.2f s (median), the compacted full snapshot %.1f MiB stored (the chain's full %.1f MiB and deltas %.1f MiB); "+
			"HashKV of the restores: chain %d at revision %d (compacted at %d), compacted full snapshot %d at revision %d (compacted at %d)",
			rounds, comp.replay.Revisions, median(comp.replaySec), mibs(compacted.Size), mibs(ds.Full.Size), mibs(ds.DeltaBytes),
			chainHash.hash, chainHash.atRev, chainHash.compactRev, compHash.hash, compHash.atRev, compHash.compactRev),
	}
	f1.compare("wall_s")
	f1.want("RssAnon < 300 MiB", comp.anon < 300)
	f1.want("same HashKV as the chain", sameHash)
	f2 := figure{
		Name:         fmt.Sprintf("restore after compaction: the compacted full snapshot at the revision of %d delta events", last.Events),
		Etcdbr:       after.values(),
		BaselineName: "etcdbr restore of the chain to the same revision",
		Baseline:     before.values(),
		Note: fmt.Sprintf("median of %d each, alternating; nothing replayed from the compacted full snapshot (no \"deltas replayed\" line), "+
			"the chain's %d revisions replayed; both data dirs valid at revision %d (raised: a new history)", rounds, last.Revisions, last.Revision),
	}
	f2.compare("wall_s")
	if !sameHash {
		return []figure{f1, f2}, fmt.Errorf("the compacted full snapshot restores to HashKV %+v, the chain to %+v", compHash, chainHash)
	}
	return []figure{f1, f2}, nil
}

// restoreMeasured runs etcdbr restore of point p into the new data dir into (removed first)
// and checks the result; replayed reports whether it replayed deltas. global are etcdbr's
// flags before the command (e.g. --progress off).
func restoreMeasured(ctx context.Context, cfg config, ds dataset, p point, into string, global ...string) (st procStats, replayed bool, err error) {
	os.RemoveAll(into)
	member := []string{"--name", "bench", "--initial-cluster", "bench=http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380"}
	args := append(append([]string{"--log-format", "json"}, global...), "restore", "--store", ds.StoreURL, "--data-dir", into,
		"--to-revision", fmt.Sprint(p.Revision), "--")
	st, err = runMeasured(ctx, exec.CommandContext(ctx, cfg.Bins.Etcdbr, append(args, member...)...))
	if err != nil {
		return st, false, fmt.Errorf("etcdbr restore: %w", err)
	}
	_, rerr := findReplayLog(st.Stderr)
	// A restore by etcdbr restore starts a new history: the revision is raised past what a
	// lost member may have served, and marked compacted there.
	v := datadir.Inspect(ctx, into, "")
	m, ok, err := datadir.ReadRestoredMarker(into)
	if err != nil || !ok || m.Revision != p.Revision {
		return st, false, fmt.Errorf("the restored data dir's marker: %+v, %v (found %v), want revision %d restored", m, err, ok, p.Revision)
	}
	if v.State != datadir.StateValid || v.Revision != m.DataRevision {
		return st, false, fmt.Errorf("the restored data dir is %s at revision %d (%s), want revision %d raised to %d",
			v.State, v.Revision, v.Reason, p.Revision, m.DataRevision)
	}
	return st, rerr == nil, nil
}

// compactRuns are the timed compactions: restoreRuns, and the wall time of each without the
// wait after its restore lock was written (work).
type compactRuns struct {
	restoreRuns
	work []float64
}

// findSettle finds how long etcdbr compact waited after writing its restore lock, in its
// "backup chain compacted" JSON log line.
func findSettle(stderr []byte) (time.Duration, error) {
	sc := bufio.NewScanner(bytes.NewReader(stderr))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var line struct {
			Msg    string        `json:"msg"`
			Settle time.Duration `json:"lock_settle"`
		}
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "backup chain compacted" {
			return line.Settle, nil
		}
	}
	return 0, fmt.Errorf("etcdbr compact did not log \"backup chain compacted\":\n%s", stderr)
}

// kvHash is what etcd's HashKV says of a member at a revision.
type kvHash struct {
	hash              uint32
	compactRev, atRev int64
}

// hashKVOf starts plain etcd on dataDir and returns its HashKV at rev (0: its current
// revision).
func hashKVOf(ctx context.Context, cfg config, dataDir string, rev int64, logPath string) (kvHash, error) {
	s, err := startServer(ctx, cfg.Bins, serverSpec{DataDir: dataDir, LogPath: logPath})
	if err != nil {
		return kvHash{}, err
	}
	if _, err := s.ready(ctx, readyTimeout); err != nil {
		s.stop(syscall.SIGKILL) //nolint:errcheck // failed already
		return kvHash{}, err
	}
	cli, err := newClient(s.Endpoint)
	if err != nil {
		s.stop(syscall.SIGKILL) //nolint:errcheck // failed already
		return kvHash{}, err
	}
	hctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	resp, err := cli.HashKV(hctx, s.Endpoint, rev)
	cancel()
	cli.Close()
	if _, serr := s.stop(syscall.SIGTERM); err == nil {
		err = serr
	}
	if err != nil {
		return kvHash{}, err
	}
	return kvHash{hash: resp.Hash, compactRev: resp.CompactRevision, atRev: resp.HashRevision}, nil
}
