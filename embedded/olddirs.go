package embedded

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// oldDirInfix is what asideDir puts between a dir and its timestamp.
const oldDirInfix = ".etcdbr-old-"

// snapshotStagingSuffix names the file a restore fetches the full snapshot
// into, beside the data dir (supervisor's snapshotStagingPath).
const snapshotStagingSuffix = ".etcdbr-snapshot.db"

// OldDataDirs lists the dirs earlier restores moved aside from dir
// (<dir>.etcdbr-old-<UTC time>[-N]), oldest first.
func OldDataDirs(dir string) ([]string, error) {
	base := filepath.Clean(dir) + oldDirInfix
	entries, err := os.ReadDir(filepath.Dir(base))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list the old data dirs of %q: %w", dir, err)
	}
	prefix := filepath.Base(base)
	type old struct{ path, stamp string }
	var olds []old
	for _, e := range entries {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), prefix) {
			continue
		}
		stamp := strings.TrimPrefix(e.Name(), prefix)
		if len(stamp) < len("20060102T150405Z") || stamp[8] != 'T' {
			continue // not a name asideDir made
		}
		olds = append(olds, old{filepath.Join(filepath.Dir(base), e.Name()), stamp})
	}
	// The UTC timestamps sort as text; "-N" suffixes of the same second come
	// after the bare one, in the order asideDir made them.
	sort.Slice(olds, func(i, j int) bool {
		a, b := olds[i].stamp, olds[j].stamp
		if len(a) != len(b) && a[:16] == b[:16] {
			return len(a) < len(b)
		}
		return a < b
	})
	out := make([]string, len(olds))
	for i, o := range olds {
		out[i] = o.path
	}
	return out, nil
}

// PruneOldDataDirs deletes the dirs earlier restores moved aside from dataDir
// (and from walDir, when the WAL lives outside the data dir), except the newest
// keep of each; keep is at least 1, so the newest old copy always stays. It
// returns what it deleted. Call it only once the current data dir was found
// valid (etcd started on it), never while deciding whether to restore.
func PruneOldDataDirs(dataDir, walDir string, keep int, lg *slog.Logger) ([]string, error) {
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	keep = max(keep, 1)
	dirs := []string{dataDir}
	if walDir != "" && !isInside(walDir, dataDir) {
		dirs = append(dirs, walDir)
	}
	var removed []string
	for _, d := range dirs {
		olds, err := OldDataDirs(d)
		if err != nil {
			return removed, err
		}
		for i := 0; i < len(olds)-keep; i++ {
			if err := os.RemoveAll(olds[i]); err != nil {
				return removed, fmt.Errorf("delete the old data dir %q: %w", olds[i], err)
			}
			lg.Info("deleted an old data dir (--keep-old-data-dirs)", "path", olds[i], "kept", keep)
			removed = append(removed, olds[i])
		}
	}
	return removed, nil
}

func isInside(path, dir string) bool {
	rel, err := filepath.Rel(filepath.Clean(dir), filepath.Clean(path))
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// RecoverInterruptedRestore finishes or rolls back a restore of dataDir (WAL in
// walDir, "" for inside the data dir) that a crash interrupted, and returns what
// it did ("" when there was nothing to do). Call it at start, before validating
// the data dir:
//
//   - a staging dir marked complete while there is no data dir: the crash hit
//     the swap after the old dir was moved aside; the staged dir is renamed into
//     place (finished);
//   - any other staging dir (incomplete, or the data dir is there): removed.
//     Nothing had been moved yet, or the swap had finished;
//   - a leftover fetched snapshot file beside the data dir: removed.
//
// An old data dir moved aside is never touched.
func RecoverInterruptedRestore(dataDir, walDir string, lg *slog.Logger) (string, error) {
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	dataDir = filepath.Clean(dataDir)
	p := restorePlan{dataDir: dataDir, stage: StagingDir(dataDir)}
	if walDir != "" && !isInside(walDir, dataDir) {
		p.walDir = filepath.Clean(walDir)
		p.walStage = StagingDir(p.walDir)
	}
	var did []string
	if exists(p.stage) {
		_, cerr := os.Stat(filepath.Join(p.stage, completeMarker))
		complete := cerr == nil
		if complete && !exists(p.dataDir) && exists(p.stagedData()) {
			if p.walDir != "" && !exists(p.walDir) && exists(p.stagedWAL()) {
				if err := os.Rename(p.stagedWAL(), p.walDir); err != nil {
					return "", fmt.Errorf("finish the interrupted restore of %q: %w", dataDir, err)
				}
				if err := syncPath(filepath.Dir(p.walDir)); err != nil {
					return "", fmt.Errorf("finish the interrupted restore of %q: %w", dataDir, err)
				}
			}
			if err := os.Rename(p.stagedData(), p.dataDir); err != nil {
				return "", fmt.Errorf("finish the interrupted restore of %q: move %q into place: %w", dataDir, p.stagedData(), err)
			}
			if err := syncPath(filepath.Dir(p.dataDir)); err != nil {
				return "", fmt.Errorf("finish the interrupted restore of %q: %w", dataDir, err)
			}
			lg.Warn("finished a restore interrupted during the swap: the staged data dir is now the data dir", "data_dir", dataDir)
			did = append(did, "finished the swap")
		}
		for _, d := range p.stagingDirs() {
			if !exists(d) {
				continue
			}
			if err := os.RemoveAll(d); err != nil {
				return "", fmt.Errorf("remove the staging dir %q of an interrupted restore: %w", d, err)
			}
			lg.Warn("removed the staging dir of an interrupted restore", "path", d)
			did = append(did, "removed "+d)
		}
	}
	if snap := dataDir + snapshotStagingSuffix; exists(snap) {
		if err := os.Remove(snap); err != nil {
			return "", fmt.Errorf("remove the snapshot file %q of an interrupted restore: %w", snap, err)
		}
		did = append(did, "removed "+snap)
	}
	return strings.Join(did, "; "), nil
}
