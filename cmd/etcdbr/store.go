package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/etcdbr/etcdbr/snapstore"
)

// StoreFlags are the flags every command that reads or writes a store shares.
type StoreFlags struct {
	Store string `help:"Backup store URL: file:///dir, s3://bucket/prefix?region=..., gs://bucket/prefix, azblob://container/prefix (run: default a directory beside the data dir)." env:"ETCDBR_STORE"`
}

// open opens the store named by the flags.
func (f StoreFlags) open(ctx context.Context) (*snapstore.Store, error) {
	if f.Store == "" {
		return nil, usageErrorf("--store is required (or ETCDBR_STORE): the URL of the backup store")
	}
	return openStoreURL(ctx, f.Store)
}

// openStoreURL opens a store; a URL that cannot be opened is a usage error.
func openStoreURL(ctx context.Context, url string) (*snapstore.Store, error) {
	store, err := snapstore.Open(ctx, url, snapstore.Options{})
	if err != nil {
		return nil, usageError{fmt.Errorf("--store: %w", err)}
	}
	return store, nil
}

// defaultStoreURL is the local store beside a data dir, used when run has no --store.
func defaultStoreURL(lg *slog.Logger, dataDir string) string {
	url := "file://" + filepath.Clean(dataDir) + ".backups"
	lg.Warn("no --store given: backups go to a local directory beside the data dir; "+
		"they protect against corruption but not against losing the disk: set --store to object storage", "store", url)
	return url
}
