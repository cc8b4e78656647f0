package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/types"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/etcdbr/etcdbr/backup"
	"github.com/etcdbr/etcdbr/internal/backoff"
	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// The sidecar (etcdbr snapshot) backs up an etcd that runs elsewhere, through its client
// API: RunSidecar until it is stopped (full snapshots on a schedule, delta snapshots from a
// watch), or SidecarSnapshot once. Like etcdbr run it uploads nothing before the store is
// claimed for the external etcd's cluster, and its runners are backups (backups.go).

// SidecarConfig is what the sidecar needs.
type SidecarConfig struct {
	// Client reaches the external etcd: endpoints, TLS, user, DialTimeout (which also
	// bounds the first request; defaultDialTimeout when 0). DialOptions and Logger are the
	// sidecar's own when unset.
	Client clientv3.Config
	// OpenStore opens the store once etcd answered, so that a sidecar that cannot reach
	// etcd creates nothing (a file store's directory); the sidecar closes it when it
	// returns.
	OpenStore func(context.Context) (*snapstore.Store, error)
	// Schedule is the full snapshot schedule (RunSidecar only).
	Schedule backup.Schedule
	// DeltaPeriod is how often delta snapshots are uploaded; 0 disables them. DeltaMemoryLimit
	// bounds the bytes of events held for them (0: backup.DefaultDeltaMemoryLimit).
	DeltaPeriod      time.Duration
	DeltaMemoryLimit int64
	// SpoolDir holds a snapshot that cannot stream straight to the store while it is
	// verified (os.TempDir() when empty).
	SpoolDir string
	Log      *slog.Logger
}

// externalRetryMin and externalRetryMax bound the backoff of the sidecar's claim of a store
// that fails; defaultDialTimeout bounds the connection to etcd when the configuration does not.
const (
	defaultDialTimeout = 10 * time.Second
	externalRetryMin   = time.Second
	externalRetryMax   = 30 * time.Second
)

// sidecar is one run of the sidecar: the external etcd's client and the store, from
// startSidecar until close.
type sidecar struct {
	cfg     SidecarConfig
	lg      *slog.Logger
	cli     *clientv3.Client // closed by close
	cluster string           // the external etcd's cluster ID (etcd's hex form)
	store   *snapstore.Store // closed by close
}

// startSidecar connects to the external etcd, then opens the store and claims it for etcd's
// cluster: once (once), or retrying a store that fails with backoff until ctx ends. It
// returns a nil sidecar and no error when ctx ended first.
func startSidecar(ctx context.Context, cfg SidecarConfig, once bool) (*sidecar, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.OpenStore == nil {
		return nil, errors.New("sidecar: no store")
	}
	cli, cluster, err := dialExternal(ctx, cfg.Client)
	if err != nil {
		return nil, err
	}
	store, err := cfg.OpenStore(ctx)
	if err != nil {
		cli.Close()
		return nil, err
	}
	sc := &sidecar{cfg: cfg, lg: cfg.Log, cli: cli, cluster: cluster, store: store}
	// Before the first upload: the store must be this cluster's (or nobody's yet).
	if err := sc.claim(ctx, once); err != nil || ctx.Err() != nil {
		sc.close()
		return nil, err // nil: stopped (SIGTERM) while the store failed
	}
	return sc, nil
}

// close closes the client and the store.
func (sc *sidecar) close() {
	sc.store.Close()
	sc.cli.Close()
}

// endpoints names the external etcd, for messages.
func (sc *sidecar) endpoints() string { return strings.Join(sc.cfg.Client.Endpoints, ",") }

// spoolDir is where a snapshot is spooled.
func (sc *sidecar) spoolDir() string {
	if sc.cfg.SpoolDir == "" {
		return os.TempDir()
	}
	return sc.cfg.SpoolDir
}

// SidecarSnapshot takes one full snapshot of the external etcd into the store (etcdbr
// snapshot --once) and returns it. A store that fails is not retried. It returns the zero
// Snapshot and no error when ctx ended before the snapshot began.
func SidecarSnapshot(ctx context.Context, cfg SidecarConfig) (catalog.Snapshot, error) {
	sc, err := startSidecar(ctx, cfg, true)
	if err != nil || sc == nil {
		return catalog.Snapshot{}, err
	}
	defer sc.close()
	start := time.Now()
	snap, err := backup.FullFromClient(ctx, sc.cli, sc.store, sc.spoolDir())
	if err != nil {
		return catalog.Snapshot{}, fmt.Errorf("snapshot of %s: %w", sc.endpoints(), err)
	}
	sc.lg.Info("full snapshot taken", "object", snap.Key, "revision", snap.Revision, "bytes", snap.Size,
		"duration", time.Since(start).Round(time.Millisecond))
	return snap, nil
}

// RunSidecar backs up the external etcd until ctx ends: full snapshots on cfg.Schedule and,
// unless cfg.DeltaPeriod is 0, delta snapshots; then it abandons a full snapshot in flight,
// uploads the final delta and returns nil. It returns an error when etcd does not answer,
// the store belongs to another cluster, or a runner cannot start.
func RunSidecar(ctx context.Context, cfg SidecarConfig) error {
	sc, err := startSidecar(ctx, cfg, false)
	if err != nil || sc == nil {
		return err
	}
	defer sc.close()
	return sc.continuous(ctx)
}

// continuous takes full snapshots on the schedule and delta snapshots until ctx ends; then
// it abandons a full snapshot in flight, uploads the final delta and returns.
func (sc *sidecar) continuous(ctx context.Context) error {
	lg, store, cli, spool := sc.lg, sc.store, sc.cli, sc.spoolDir()
	cfg := backupsConfig{
		Store:    store,
		Schedule: sc.cfg.Schedule,
		Log:      lg,
		Take: func(ctx context.Context) (catalog.Snapshot, error) {
			return backup.FullFromClient(ctx, cli, store, spool)
		},
	}
	if sc.cfg.DeltaPeriod > 0 {
		cfg.Deltas = func(ctx context.Context, full backup.TakeFunc) error {
			return backup.RunDeltas(ctx, backup.DeltaConfig{
				Store:       store,
				Client:      cli,
				Period:      sc.cfg.DeltaPeriod,
				MemoryLimit: sc.cfg.DeltaMemoryLimit,
				Full:        full,
				Log:         lg.With("component", "delta"),
			})
		}
	}
	lg.Info("backing up an external etcd until SIGTERM", "endpoints", sc.endpoints(), "store", store.URL(),
		"full_snapshot_schedule", sc.cfg.Schedule.String(), "delta_snapshot_period", sc.cfg.DeltaPeriod)
	var b backups
	b.start(ctx, cfg)
	var runErr error
	select {
	case <-ctx.Done():
		lg.Info("stopping: abandoning any full snapshot in flight, uploading the final delta")
	case runErr = <-b.failed(): // only a setup error ends a runner early
	}
	if err := b.stop(nil); err != nil && runErr == nil {
		runErr = err
	}
	return runErr
}

// claim records that the store belongs to the external etcd's cluster, unless it belongs to
// another cluster (an error). A store that fails is retried with backoff until ctx ends, or
// fails at once with once.
func (sc *sidecar) claim(ctx context.Context, once bool) error {
	store, cluster := sc.store, sc.cluster
	retry := backoff.Backoff{Min: externalRetryMin, Max: externalRetryMax}
	for {
		err := store.ClaimClusterID(ctx, cluster)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, snapstore.ErrClusterMismatch):
			have, _, _ := store.ClusterID(ctx)
			return fmt.Errorf("the store %s belongs to cluster %s, but etcd at %s is cluster %s: refusing to mix the backups of two clusters "+
				"in one store; give this cluster its own store (another --store prefix): %w",
				store.URL(), have, sc.endpoints(), cluster, err)
		case once || ctx.Err() != nil:
			return fmt.Errorf("claim the store for cluster %s before backing it up: %w", cluster, err)
		}
		wait := retry.Next()
		sc.lg.Warn("cannot claim the store for this cluster before the first backup; retrying", "store", store.URL(),
			"cluster", cluster, "err", err, "in", wait)
		if backoff.Sleep(ctx, wait) != nil {
			return nil
		}
	}
}

// dialExternal connects to the external etcd, checks that it answers and returns its
// cluster ID (etcd's hex form).
func dialExternal(ctx context.Context, cfg clientv3.Config) (*clientv3.Client, string, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, "", errors.New("sidecar: no etcd endpoint")
	}
	if cfg.DialOptions == nil {
		cfg.DialOptions = backup.SnapshotDialOptions()
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = defaultDialTimeout
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, "", fmt.Errorf("connect to etcd at %s: %w", strings.Join(cfg.Endpoints, ","), err)
	}
	sctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	st, err := cli.Status(sctx, cfg.Endpoints[0])
	if err != nil {
		cli.Close()
		return nil, "", fmt.Errorf("etcd at %s does not answer: %w; check --endpoints and the TLS flags", cfg.Endpoints[0], err)
	}
	if st.Header == nil || st.Header.ClusterId == 0 {
		cli.Close()
		return nil, "", fmt.Errorf("etcd at %s did not say its cluster ID", cfg.Endpoints[0])
	}
	return cli, types.ID(st.Header.ClusterId).String(), nil
}
