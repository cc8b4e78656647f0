package snapstore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"time"
)

// AbandonedTempAge is how long a file store's temporary upload file must have gone
// unwritten before garbage collection removes it. An upload writes its temporary file
// continuously and renames it to its key at the end, so one left this long belongs to an
// upload that will never finish (its process was killed); an hour leaves room for any
// upload that is only slow.
const AbandonedTempAge = time.Hour

// tempName matches the temporary files a file store writes an upload into:
// <key>.<nanoseconds in hex>.tmp, beside the key. No backup's name ends so.
var tempName = regexp.MustCompile(`\.[0-9a-f]+\.tmp$`)

// sweepTemps removes from a file store the temporary files of uploads that never finished:
// files named like them that were last written before now - AbandonedTempAge. Each removal
// is logged. It returns how many it removed and their size. Other stores keep no such
// files (an unfinished multipart upload is the bucket's to expire).
func (s *Store) sweepTemps(ctx context.Context, now time.Time, lg *slog.Logger) (n int, size int64, err error) {
	if s.localDir == "" {
		return 0, 0, nil
	}
	err = filepath.WalkDir(s.localDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // unreadable or gone: the next run looks again
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if d.IsDir() || !tempName.MatchString(d.Name()) {
			return nil
		}
		info, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil // renamed to its key or removed meanwhile
		}
		if err != nil {
			return err
		}
		if !info.Mode().IsRegular() || now.Sub(info.ModTime()) < AbandonedTempAge {
			return nil
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove the temporary file of an unfinished upload %q: %w", path, err)
		}
		lg.Info("removed the temporary file of an upload that never finished", "file", path, "bytes", info.Size(), "last_written", info.ModTime())
		n++
		size += info.Size()
		return nil
	})
	return n, size, err
}
