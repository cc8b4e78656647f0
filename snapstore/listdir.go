package snapstore

import (
	"context"
	"errors"
	"io/fs"
	"path/filepath"
	"strings"

	"gocloud.dev/blob"
)

// listDir calls fn for every file of a file store (the directory root) whose key starts with
// prefix, in key order, until fn returns an error. It lists what gocloud's fileblob lists,
// but reads the directory itself.
//
// fileblob walks the directory and then reads each entry's size and time (lstat); an upload
// that renames its temporary file (<key>.<hex>.tmp) to its key between the two makes that
// read fail, and fileblob fails the whole listing with NotFound on the temporary file.
// Listing again is no cure: while uploads go on, every new listing can meet another rename.
// listDir skips an entry that is gone by the time it is read: a temporary file renamed (the
// object then is either in this listing under its key or committed after the directory was
// read) or removed, an object deleted meanwhile. An entry that stays is always listed: a
// directory read returns every entry that is neither added nor removed while it runs, so
// every object committed before the listing started is in it.
//
// As in fileblob, directories that cannot be read are skipped, and so are metadata sidecars
// (.attrs) and escaped names (fileblob's "__0x" escapes, never in an etcdbr key).
func listDir(ctx context.Context, root, prefix string, fn func(*blob.ListObject) error) error {
	start := root
	if i := strings.LastIndex(prefix, "/"); i >= 0 {
		start = filepath.Join(root, filepath.FromSlash(prefix[:i]))
	}
	return filepath.WalkDir(start, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // unreadable or gone: skipped, as fileblob does
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil || rel == "." {
			return nil
		}
		key := filepath.ToSlash(rel)
		if d.IsDir() {
			if dirKey := key + "/"; len(dirKey) > len(prefix) && !strings.HasPrefix(dirKey, prefix) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasPrefix(key, prefix) || strings.HasSuffix(key, ".attrs") || strings.Contains(key, "__0x") {
			return nil
		}
		info, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil // renamed or removed since the directory was read
		}
		if err != nil {
			return err
		}
		return fn(&blob.ListObject{Key: key, ModTime: info.ModTime(), Size: info.Size()})
	})
}
