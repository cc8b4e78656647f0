package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/client/pkg/v3/types"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/etcdbr/etcdbr/backup"
	"github.com/etcdbr/etcdbr/internal/backoff"
	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
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
	var sched backup.Schedule
	if !c.Once {
		var err error
		if sched, err = backup.ParseSchedule(c.FullSnapshotSchedule); err != nil {
			return usageError{fmt.Errorf("--full-snapshot-schedule: %w", err)}
		}
		if err := c.DeltaFlags.validate(); err != nil {
			return err
		}
	}
	cli, cluster, err := c.client(ctx)
	if err != nil {
		return err
	}
	defer cli.Close()
	store, err := c.open(ctx)
	if err != nil {
		return err
	}
	defer store.Close()
	// Before the first upload: the store must be this cluster's (or nobody's yet).
	if err := c.claim(ctx, env, store, cluster); err != nil || ctx.Err() != nil {
		return err // nil: stopped (SIGTERM) while the store failed
	}
	spool := c.SpoolDir
	if spool == "" {
		spool = os.TempDir()
	}
	if !c.Once {
		return c.continuous(ctx, env, cli, store, sched, spool)
	}
	start := time.Now()
	snap, err := backup.FullFromClient(ctx, cli, store, spool)
	if err != nil {
		return fmt.Errorf("snapshot of %s: %w", strings.Join(c.Endpoints, ","), err)
	}
	env.Log.Info("full snapshot taken", "object", snap.Key, "revision", snap.Revision, "bytes", snap.Size,
		"duration", time.Since(start).Round(time.Millisecond))
	fmt.Fprintln(env.Stdout, snap.Key)
	return nil
}

// continuous takes full snapshots on the schedule and delta snapshots until ctx ends; then
// it abandons a full snapshot in flight, uploads the final delta and returns.
func (c *SnapshotCmd) continuous(ctx context.Context, env *Env, cli *clientv3.Client, store *snapstore.Store, sched backup.Schedule, spool string) error {
	lg := env.Log
	runner := &backup.Runner{
		Store:    store,
		Schedule: sched,
		Log:      lg.With("component", "backup"),
		Take: func(ctx context.Context) (catalog.Snapshot, error) {
			return backup.FullFromClient(ctx, cli, store, spool)
		},
	}
	lg.Info("backing up an external etcd until SIGTERM", "endpoints", strings.Join(c.Endpoints, ","), "store", store.URL(),
		"full_snapshot_schedule", sched.String(), "delta_snapshot_period", c.DeltaSnapshotPeriod)
	bctx, stopBackups := context.WithCancel(context.WithoutCancel(ctx))
	backupsDone := make(chan error, 1)
	go func() { backupsDone <- runner.Run(bctx) }()
	dctx, stopDeltas := context.WithCancel(context.WithoutCancel(ctx))
	var deltasDone chan error // nil (never ready) while deltas are disabled
	if c.DeltaSnapshotPeriod > 0 {
		deltasDone = make(chan error, 1)
		go func() {
			deltasDone <- backup.RunDeltas(dctx, backup.DeltaConfig{
				Store:       store,
				Client:      cli,
				Period:      c.DeltaSnapshotPeriod,
				MemoryLimit: int64(c.DeltaSnapshotMemoryLimit),
				Full:        backup.FullFromRunner(bctx, runner),
				Log:         lg.With("component", "delta"),
			})
		}()
	}

	var runErr error
	select {
	case <-ctx.Done():
		lg.Info("stopping: abandoning any full snapshot in flight, uploading the final delta")
	case err := <-backupsDone: // only a setup error ends it early
		backupsDone <- err
		runErr = err
	case err := <-deltasDone: // likewise
		deltasDone <- err
		runErr = err
	}
	stopBackups()
	if err := <-backupsDone; err != nil && runErr == nil {
		runErr = err
	}
	stopDeltas()
	if deltasDone != nil {
		if err := <-deltasDone; err != nil && runErr == nil {
			runErr = err
		}
	}
	return runErr
}

// claim records that the store belongs to the external etcd's cluster, unless it belongs to
// another cluster (an error). A store that fails is retried with backoff until ctx ends, or
// fails at once with --once.
func (c *SnapshotCmd) claim(ctx context.Context, env *Env, store *snapstore.Store, cluster string) error {
	retry := backoff.Backoff{Min: time.Second, Max: 30 * time.Second}
	for {
		err := store.ClaimClusterID(ctx, cluster)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, snapstore.ErrClusterMismatch):
			have, _, _ := store.ClusterID(ctx)
			return fmt.Errorf("the store %s belongs to cluster %s, but etcd at %s is cluster %s: refusing to mix the backups of two clusters "+
				"in one store; give this cluster its own store (another --store prefix): %w",
				store.URL(), have, strings.Join(c.Endpoints, ","), cluster, err)
		case c.Once || ctx.Err() != nil:
			return fmt.Errorf("claim the store for cluster %s before backing it up: %w", cluster, err)
		}
		wait := retry.Next()
		env.Log.Warn("cannot claim the store for this cluster before the first backup; retrying", "store", store.URL(),
			"cluster", cluster, "err", err, "in", wait)
		if backoff.Sleep(ctx, wait) != nil {
			return nil
		}
	}
}

// client connects to the external etcd, checks that it answers and returns its cluster ID
// (etcd's hex form).
func (c *SnapshotCmd) client(ctx context.Context) (*clientv3.Client, string, error) {
	cfg := clientv3.Config{
		Endpoints:   c.Endpoints,
		DialTimeout: c.DialTimeout,
		DialOptions: backup.SnapshotDialOptions(),
		Logger:      zap.NewNop(),
	}
	if c.Cacert != "" || c.Cert != "" || c.Key != "" || c.Insecure {
		if (c.Cert == "") != (c.Key == "") {
			return nil, "", usageErrorf("--cert and --key go together: give both or neither")
		}
		info := transport.TLSInfo{TrustedCAFile: c.Cacert, CertFile: c.Cert, KeyFile: c.Key, InsecureSkipVerify: c.Insecure}
		tlsCfg, err := info.ClientConfig()
		if err != nil {
			return nil, "", usageErrorf("TLS configuration: %v", err)
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
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, "", fmt.Errorf("connect to etcd at %s: %w", strings.Join(c.Endpoints, ","), err)
	}
	sctx, cancel := context.WithTimeout(ctx, c.DialTimeout)
	defer cancel()
	st, err := cli.Status(sctx, c.Endpoints[0])
	if err != nil {
		cli.Close()
		return nil, "", fmt.Errorf("etcd at %s does not answer: %w; check --endpoints and the TLS flags", c.Endpoints[0], err)
	}
	if st.Header == nil || st.Header.ClusterId == 0 {
		cli.Close()
		return nil, "", fmt.Errorf("etcd at %s did not say its cluster ID", c.Endpoints[0])
	}
	return cli, types.ID(st.Header.ClusterId).String(), nil
}
