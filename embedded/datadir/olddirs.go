package datadir

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// oldDirInfix is what AsideDir puts between a dir and its timestamp.
const oldDirInfix = ".etcdbr-old-"

// AsideDir returns a free path <dir>.etcdbr-old-<UTC timestamp>[-N] to move dir to: where a
// restore puts the data dir (or separate WAL dir) it replaces, and what OldDataDirs lists.
func AsideDir(dir string, now time.Time) string {
	base := filepath.Clean(dir) + oldDirInfix + now.UTC().Format("20060102T150405Z")
	p := base
	for i := 1; ; i++ {
		if _, err := os.Lstat(p); errors.Is(err, fs.ErrNotExist) {
			return p
		}
		p = fmt.Sprintf("%s-%d", base, i)
	}
}

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
			continue // not a name AsideDir made
		}
		olds = append(olds, old{filepath.Join(filepath.Dir(base), e.Name()), stamp})
	}
	// The UTC timestamps sort as text; "-N" suffixes of the same second come
	// after the bare one, in the order AsideDir made them.
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
	if WALOutside(dataDir, walDir) {
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

// WALOutside reports whether walDir ("" for <dataDir>/member/wal) is a WAL dir outside
// dataDir: one that a restore builds, moves aside and swaps in on its own, beside the data dir.
func WALOutside(dataDir, walDir string) bool {
	if walDir == "" {
		return false
	}
	rel, err := filepath.Rel(filepath.Clean(dataDir), filepath.Clean(walDir))
	return err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator))
}
