package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"go.etcd.io/etcd/server/v3/embed"

	"github.com/etcdbr/etcdbr/embedded"
	"github.com/etcdbr/etcdbr/snapstore"
)

// ErrNoBackup means the store holds no full snapshot to restore from.
var ErrNoBackup = errors.New("the store has no full snapshot")

// RestoreResult says what a restore used and where the replaced data dir went.
type RestoreResult struct {
	Snapshot   snapstore.Snapshot // the full snapshot restored
	MovedAside string             // the previous data dir, renamed aside ("" if there was none)
}

// RestoreLatest rebuilds the data dir of cfg's member from the newest full snapshot in the
// store that reads back intact. A snapshot that fails verification is reported by name and
// the next older one is tried. The previous data dir, if any, is moved aside, never deleted.
func RestoreLatest(ctx context.Context, store *snapstore.Store, cfg *embed.Config, opts embedded.RestoreOptions, lg *slog.Logger) (RestoreResult, error) {
	fulls, err := store.List(ctx, snapstore.KindFull)
	if err != nil {
		return RestoreResult{}, fmt.Errorf("restore: %w", err)
	}
	if len(fulls) == 0 {
		return RestoreResult{}, fmt.Errorf("restore from %s: %w", store.URL(), ErrNoBackup)
	}
	var errs []error
	for i := len(fulls) - 1; i >= 0; i-- {
		snap := fulls[i]
		res, err := restoreFull(ctx, store, snap, cfg, opts, lg)
		if err == nil {
			if i != len(fulls)-1 {
				lg.Warn("restored from an older full snapshot because newer ones failed verification",
					"object", snap.Key, "revision", snap.Revision, "skipped", len(fulls)-1-i)
			}
			return res, nil
		}
		if ctx.Err() != nil || !errors.Is(err, snapstore.ErrCorrupt) {
			return RestoreResult{}, err
		}
		lg.Error("full snapshot failed verification; trying the next older one", "object", snap.Key, "err", err)
		errs = append(errs, err)
	}
	return RestoreResult{}, fmt.Errorf("restore from %s: no full snapshot reads back intact: %w", store.URL(), errors.Join(errs...))
}

// restoreFull fetches one full snapshot into a staging file beside the data dir, verifying it
// while streaming, and turns it into the member's data dir.
func restoreFull(ctx context.Context, store *snapstore.Store, snap snapstore.Snapshot, cfg *embed.Config, opts embedded.RestoreOptions, lg *slog.Logger) (RestoreResult, error) {
	if err := os.MkdirAll(filepath.Dir(cfg.Dir), 0o700); err != nil {
		return RestoreResult{}, fmt.Errorf("restore: create the data dir's parent: %w", err)
	}
	dbPath := snapshotStagingPath(cfg.Dir)
	defer os.Remove(dbPath)
	lg.Info("fetching full snapshot", "object", snap.Key, "revision", snap.Revision, "bytes", snap.Size)
	if err := fetch(ctx, store, snap, dbPath); err != nil {
		return RestoreResult{}, err
	}
	moved, err := embedded.BuildDataDir(ctx, dbPath, cfg, opts, lg)
	if err != nil {
		return RestoreResult{}, fmt.Errorf("restore %s into %q: %w", snap.Key, cfg.Dir, err)
	}
	lg.Info("data dir restored", "data_dir", cfg.Dir, "object", snap.Key, "revision", snap.Revision, "moved_aside", moved)
	return RestoreResult{Snapshot: snap, MovedAside: moved}, nil
}

// snapshotStagingPath is where a fetched snapshot db is kept while the data dir is built: a
// sibling of the data dir, on the same filesystem.
func snapshotStagingPath(dataDir string) string {
	return filepath.Clean(dataDir) + ".etcdbr-snapshot.db"
}

// fetch streams a verified snapshot payload into a new file at path.
func fetch(ctx context.Context, store *snapstore.Store, snap snapstore.Snapshot, path string) error {
	r, err := store.Open(ctx, snap)
	if err != nil {
		return fmt.Errorf("fetch %s: %w", snap.Key, err)
	}
	defer r.Close()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("fetch %s: create %q: %w", snap.Key, path, err)
	}
	_, err = io.Copy(f, r)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("fetch %s into %q: %w", snap.Key, path, err)
	}
	return nil
}
