package main

import (
	"context"
	"fmt"
	"os"

	"github.com/etcdbr/etcdbr/embedded"
	"github.com/etcdbr/etcdbr/supervisor"
)

// RestoreCmd is `etcdbr restore`: an offline rebuild of a data dir.
type RestoreCmd struct {
	StoreFlags    `embed:""`
	DataDir       string   `help:"The data dir to create (must not exist or be empty)." required:"" env:"ETCDBR_DATA_DIR" type:"path"`
	SkipHashCheck bool     `help:"Do not check etcd's own SHA-256 of the snapshot db (etcdbr's checksum is still verified)." env:"ETCDBR_SKIP_HASH_CHECK"`
	EtcdArgs      []string `arg:"" optional:"" name:"etcd-flags" help:"etcd flags for the member's name, peer URLs, initial cluster and token, after --."`
}

// Run restores.
func (c *RestoreCmd) Run(ctx context.Context, env *Env) error {
	cfg, err := etcdConfig(env, c.EtcdArgs, c.DataDir)
	if err != nil {
		return err
	}
	if entries, err := os.ReadDir(cfg.Dir); err == nil && len(entries) > 0 {
		return usageErrorf("data dir %q is not empty: etcdbr restore only creates a new data dir; "+
			"move it away first (etcdbr run restores a corrupt data dir by itself and keeps the old one)", cfg.Dir)
	}
	store, err := c.open(ctx)
	if err != nil {
		return err
	}
	defer store.Close()
	res, err := supervisor.RestoreLatest(ctx, store, cfg, embedded.RestoreOptions{SkipHashCheck: c.SkipHashCheck}, env.Log)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "restored %s (revision %d) into %s\n", res.Snapshot.Key, res.Snapshot.Revision, cfg.Dir)
	return nil
}
