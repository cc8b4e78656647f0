package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"path/filepath"

	"go.etcd.io/etcd/server/v3/embed"

	"github.com/etcdbr/etcdbr/backup"
	"github.com/etcdbr/etcdbr/embedded"
	"github.com/etcdbr/etcdbr/supervisor"
)

// errHelpShown means a help or version text was printed instead of running.
var errHelpShown = errors.New("help shown")

// RunCmd is `etcdbr run`.
type RunCmd struct {
	StoreFlags           `embed:""`
	DataDir              string   `help:"etcd's data dir (same as etcd's --data-dir; default: etcd's, <name>.etcd)." env:"ETCDBR_DATA_DIR" type:"path"`
	FullSnapshotSchedule string   `help:"Cron schedule of full snapshots (five fields, or @hourly, @daily...)." default:"0 * * * *" env:"ETCDBR_FULL_SNAPSHOT_SCHEDULE"`
	EtcdArgs             []string `arg:"" optional:"" name:"etcd-flags" help:"etcd's own flags, after --."`
}

// Run runs the member until a signal stops it.
func (c *RunCmd) Run(ctx context.Context, env *Env) error {
	etcdCfg, err := etcdConfig(env, c.EtcdArgs, c.DataDir)
	if err != nil {
		return err
	}
	sched, err := backup.ParseSchedule(c.FullSnapshotSchedule)
	if err != nil {
		return usageError{fmt.Errorf("--full-snapshot-schedule: %w", err)}
	}
	if c.Store == "" {
		c.Store = defaultStoreURL(env.Log, etcdCfg.Dir)
	}
	store, err := c.open(ctx)
	if err != nil {
		return err
	}
	defer store.Close()
	return supervisor.Run(ctx, supervisor.Config{
		Etcd:     etcdCfg,
		Store:    store,
		Schedule: sched,
		Log:      env.Log,
	})
}

// etcdConfig parses etcd's flags (and ETCD_* variables) and applies etcdbr's --data-dir.
func etcdConfig(env *Env, args []string, dataDir string) (*embed.Config, error) {
	cfg, err := embedded.ParseFlags(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(env.Stdout, embedded.Usage())
		return nil, errHelpShown
	case errors.Is(err, embedded.ErrVersion):
		printVersion(env.Stdout)
		return nil, errHelpShown
	case err != nil:
		return nil, usageError{err}
	}
	if dataDir != "" {
		if cfg.FlagsExplicitlySet["data-dir"] && filepath.Clean(cfg.Dir) != filepath.Clean(dataDir) {
			return nil, usageErrorf("--data-dir %q and etcd's --data-dir %q differ: give it once", dataDir, cfg.Dir)
		}
		cfg.Dir = dataDir
	}
	if cfg.Dir == "" {
		cfg.Dir = cfg.Name + ".etcd"
	}
	if abs, err := filepath.Abs(cfg.Dir); err == nil {
		cfg.Dir = abs
	}
	return cfg, nil
}
