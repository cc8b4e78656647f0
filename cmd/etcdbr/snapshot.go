package main

import (
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdbr/etcdbr/backup"
	"github.com/etcdbr/etcdbr/supervisor"
)

// SnapshotCmd is `etcdbr snapshot`: the sidecar. It backs up an external etcd until
// SIGTERM (full snapshots on a schedule, delta snapshots from a watch), or takes one full
// snapshot with --once.
type SnapshotCmd struct {
	StoreFlags           `embed:""`
	Once                 bool   `help:"Take one full snapshot, print its name and exit (default: run until SIGTERM, with full snapshots on the schedule and delta snapshots)." env:"ETCDBR_ONCE"`
	FullSnapshotSchedule string `help:"Cron schedule of full snapshots (five fields, or @hourly, @daily...)." default:"0 * * * *" env:"ETCDBR_FULL_SNAPSHOT_SCHEDULE"`
	DeltaFlags           `embed:""`
	Endpoints            []string `help:"etcd client URLs." default:"http://127.0.0.1:2379" env:"ETCDBR_ENDPOINTS" sep:","`
	EtcdClientFlags      `embed:""`
	SpoolDir             string `help:"Directory for a snapshot that cannot stream straight to the store (writes moved the revision while it started) while it is verified (needs room for the whole db)." env:"ETCDBR_SPOOL_DIR" type:"path"`
}

// Run backs up the external etcd: continuously, or once with --once.
func (c *SnapshotCmd) Run(ctx context.Context, env *Env) error {
	cfg := supervisor.SidecarConfig{SpoolDir: c.SpoolDir, Log: env.Log, OpenStore: c.open}
	if !c.Once {
		var err error
		if cfg.Schedule, err = backup.ParseSchedule(c.FullSnapshotSchedule); err != nil {
			return usageError{fmt.Errorf("--full-snapshot-schedule: %w", err)}
		}
		if err := c.DeltaFlags.validate(); err != nil {
			return err
		}
		cfg.DeltaPeriod, cfg.DeltaMemoryLimit = c.DeltaSnapshotPeriod, int64(c.DeltaSnapshotMemoryLimit)
	}
	var err error
	if cfg.Client, err = c.clientConfig(); err != nil {
		return err
	}
	if !c.Once {
		return supervisor.RunSidecar(ctx, cfg)
	}
	snap, err := supervisor.SidecarSnapshot(ctx, cfg)
	if err != nil || snap.Key == "" {
		return err // no snapshot and no error: stopped (SIGTERM) before it began
	}
	fmt.Fprintln(env.Stdout, snap.Key)
	return nil
}

// clientConfig is the configuration of the client of the external etcd.
func (c *SnapshotCmd) clientConfig() (clientv3.Config, error) {
	return c.EtcdClientFlags.config(c.Endpoints)
}
