package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"strings"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
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
	Endpoints            []string      `help:"etcd client URLs." default:"http://127.0.0.1:2379" env:"ETCDBR_ENDPOINTS" sep:","`
	Cacert               string        `help:"CA bundle to verify the etcd server's certificate." env:"ETCDBR_CACERT" type:"existingfile"`
	Cert                 string        `help:"Client certificate." env:"ETCDBR_CERT" type:"existingfile"`
	Key                  string        `help:"Client key." env:"ETCDBR_KEY" type:"existingfile"`
	Insecure             bool          `help:"Skip verification of the server's certificate (testing only)." env:"ETCDBR_INSECURE_SKIP_TLS_VERIFY" name:"insecure-skip-tls-verify"`
	User                 string        `help:"etcd user name (USER or USER:PASSWORD) for a cluster with auth enabled." env:"ETCDBR_USER"`
	DialTimeout          time.Duration `help:"Timeout to connect to etcd." default:"10s" env:"ETCDBR_DIAL_TIMEOUT"`
	SpoolDir             string        `help:"Directory for a snapshot that cannot stream straight to the store (writes moved the revision while it started) while it is verified (needs room for the whole db)." env:"ETCDBR_SPOOL_DIR" type:"path"`
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
	cfg := clientv3.Config{
		Endpoints:   c.Endpoints,
		DialTimeout: c.DialTimeout,
	}
	if c.Cacert != "" || c.Cert != "" || c.Key != "" || c.Insecure {
		if (c.Cert == "") != (c.Key == "") {
			return cfg, usageErrorf("--cert and --key go together: give both or neither")
		}
		info := transport.TLSInfo{TrustedCAFile: c.Cacert, CertFile: c.Cert, KeyFile: c.Key, InsecureSkipVerify: c.Insecure}
		tlsCfg, err := info.ClientConfig()
		if err != nil {
			return cfg, usageErrorf("TLS configuration: %v", err)
		}
		cfg.TLS = tlsCfg
	} else {
		for _, ep := range c.Endpoints {
			if strings.HasPrefix(ep, "https://") {
				cfg.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
				break
			}
		}
	}
	if c.User != "" {
		user, pass, _ := strings.Cut(c.User, ":")
		cfg.Username, cfg.Password = user, pass
	}
	return cfg, nil
}
