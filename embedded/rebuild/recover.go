package rebuild

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/etcdbr/etcdbr/embedded/datadir"
	"github.com/etcdbr/etcdbr/internal/fsync"
)

// snapshotStagingSuffix names the file a restore fetches the full snapshot
// into, beside the data dir (supervisor's snapshotStagingPath).
const snapshotStagingSuffix = ".etcdbr-snapshot.db"

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
	p := restoreDirs{dataDir: dataDir, stage: StagingDir(dataDir)}
	if datadir.WALOutside(dataDir, walDir) {
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
				if err := fsync.Path(filepath.Dir(p.walDir)); err != nil {
					return "", fmt.Errorf("finish the interrupted restore of %q: %w", dataDir, err)
				}
			}
			if err := os.Rename(p.stagedData(), p.dataDir); err != nil {
				return "", fmt.Errorf("finish the interrupted restore of %q: move %q into place: %w", dataDir, p.stagedData(), err)
			}
			if err := fsync.Path(filepath.Dir(p.dataDir)); err != nil {
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
