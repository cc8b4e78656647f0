package snapstore

import (
	"context"
	"crypto/sha256"
	"fmt"
	"hash"
	"os"
	"path"
	"path/filepath"

	"gocloud.dev/blob"
)

// rawUpload uploads an object's bytes as they are (no compression, no
// encryption, no trailer): a copy of an object read from another store.
// Like Writer, it makes the object visible only on Commit, and a file
// store's object is fsynced and renamed into place.
type rawUpload struct {
	store  *Store
	key    string
	cancel context.CancelFunc
	upload *blob.Writer
	file   *os.File
	hash   hash.Hash
	n      int64
	done   bool
}

// createRaw starts the raw upload of key.
func (s *Store) createRaw(ctx context.Context, key string, encrypted bool) (*rawUpload, error) {
	contentType := contentTypeZstd
	if encrypted {
		contentType = contentTypeAge
	}
	ctx, cancel := context.WithCancel(ctx)
	upload, file, err := s.newUpload(ctx, key, contentType)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("create %q in %q: %w", key, s.url, err)
	}
	return &rawUpload{store: s, key: key, cancel: cancel, upload: upload, file: file, hash: sha256.New()}, nil
}

func (u *rawUpload) Write(p []byte) (int, error) {
	n, err := u.upload.Write(p)
	u.hash.Write(p[:n])
	u.n += int64(n)
	if err != nil {
		return n, fmt.Errorf("write %q to %q: %w", u.key, u.store.url, err)
	}
	return n, nil
}

// commit makes the object visible.
func (u *rawUpload) commit() error {
	u.done = true
	defer u.cancel()
	if u.file != nil {
		if err := u.file.Sync(); err != nil {
			u.cancel()
			_ = closeUpload(u.upload)
			return fmt.Errorf("commit %q to %q: sync: %w", u.key, u.store.url, err)
		}
	}
	if err := closeUpload(u.upload); err != nil {
		return fmt.Errorf("commit %q to %q: %w", u.key, u.store.url, err)
	}
	if u.store.localDir != "" {
		dir := filepath.Join(u.store.localDir, filepath.FromSlash(path.Dir(u.key)))
		if err := syncDir(dir); err != nil {
			return fmt.Errorf("commit %q to %q: %w", u.key, u.store.url, err)
		}
	}
	return nil
}

// abort discards the upload; a no-op after commit.
func (u *rawUpload) abort() {
	if u.done {
		return
	}
	u.done = true
	u.cancel()
	_ = closeUpload(u.upload)
}
