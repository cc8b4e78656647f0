package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"go.etcd.io/etcd/server/v3/embed"

	"github.com/etcdbr/etcdbr/backup"
	"github.com/etcdbr/etcdbr/embedded"
	"github.com/etcdbr/etcdbr/snapstore"
)

// Config is what the supervisor needs to run one member.
type Config struct {
	Etcd     *embed.Config    // the member's etcd configuration (Dir set)
	Store    *snapstore.Store // where backups go and restores come from
	Schedule backup.Schedule  // full snapshot schedule
	// DeltaPeriod is how often delta snapshots are uploaded while etcd serves; 0 disables
	// them.
	DeltaPeriod time.Duration
	// DeltaMemoryLimit bounds the bytes of events held for delta snapshots (0: the default,
	// backup.DefaultDeltaMemoryLimit).
	DeltaMemoryLimit int64
	Log              *slog.Logger
	// Started, when set, is called once etcd serves (tests and the HTTP API use it).
	Started func(*embedded.Etcd)
}

// Run validates the data dir, restores it when needed, starts etcd, and takes backups while it
// serves, until ctx ends (then it stops backups and etcd cleanly and returns nil) or etcd fails.
func Run(ctx context.Context, cfg Config) error {
	lg := cfg.Log
	if lg == nil {
		lg = slog.Default()
	}
	if err := prepareDataDir(ctx, cfg, lg); err != nil {
		return err
	}

	e, err := embedded.Start(ctx, cfg.Etcd, lg)
	if err != nil {
		return fmt.Errorf("start etcd: %w", err)
	}
	defer e.Close()
	if cfg.Started != nil {
		cfg.Started(e)
	}

	runner := &backup.Runner{
		Store:    cfg.Store,
		Schedule: cfg.Schedule,
		Log:      lg.With("component", "backup"),
		Take: func(ctx context.Context) (snapstore.Snapshot, error) {
			srv := e.Server()
			if srv.Leader() != srv.MemberID() {
				return snapstore.Snapshot{}, fmt.Errorf("member %s is not the leader: %w", srv.MemberID(), backup.ErrSkipped)
			}
			return backup.FullFromBackend(ctx, srv.Backend(), cfg.Store)
		},
	}
	bctx, stopBackups := context.WithCancel(context.WithoutCancel(ctx))
	backupsDone := make(chan error, 1)
	go func() { backupsDone <- runner.Run(bctx) }()

	dctx, stopDeltas := context.WithCancel(context.WithoutCancel(ctx))
	var deltasDone chan error // nil (never ready) while deltas are disabled
	if cfg.DeltaPeriod > 0 {
		deltasDone = make(chan error, 1)
		dcfg := backup.DeltaConfig{
			Store:       cfg.Store,
			Client:      e.Client(),
			Period:      cfg.DeltaPeriod,
			MemoryLimit: cfg.DeltaMemoryLimit,
			Full:        backup.FullFromRunner(bctx, runner),
			Log:         lg.With("component", "delta"),
		}
		go func() { deltasDone <- deltasWhileLeader(dctx, e, dcfg, lg) }()
	} else {
		lg.Info("delta snapshots are disabled (--delta-snapshot-period 0): a restore loses the writes since the last full snapshot")
	}

	var runErr error
	select {
	case <-ctx.Done():
		lg.Info("stopping: abandoning any full snapshot in flight, uploading the final delta, then stopping etcd")
	case err := <-e.Err():
		runErr = fmt.Errorf("etcd failed: %w", err)
		lg.Error("etcd failed; stopping", "err", err)
	case err := <-backupsDone:
		// Run only returns early on a setup error.
		backupsDone <- err
		runErr = err
	case err := <-deltasDone:
		// Likewise.
		deltasDone <- err
		runErr = err
	}
	// The order matters: the full snapshot runner first (an abandoned full snapshot leaves
	// nothing behind), then the deltas (the final delta needs etcd), then etcd.
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
	e.Close()
	return runErr
}

// prepareDataDir checks the data dir and restores it from the store when it is missing (and
// the store has a backup) or corrupt. A corrupt data dir with nothing to restore from is an
// error and the dir is left as it is.
func prepareDataDir(ctx context.Context, cfg Config, lg *slog.Logger) error {
	dir := cfg.Etcd.Dir
	if err := embedded.CheckWritable(dir); err != nil {
		return err
	}
	v := embedded.Inspect(ctx, dir, cfg.Etcd.WalDir)
	switch v.State {
	case embedded.StateValid:
		lg.Info("data dir is valid", "data_dir", dir, "revision", v.Revision)
		return nil
	case embedded.StateMissing:
		lg.Info("no data dir", "data_dir", dir, "reason", v.Reason)
	default:
		lg.Error("data dir is corrupt", "data_dir", dir, "reason", v.Reason)
	}

	if n := clusterSize(cfg.Etcd); n > 1 {
		if v.State == embedded.StateMissing {
			lg.Info("the member belongs to a cluster of several members: starting it as configured so that it joins its peers", "members", n)
			return nil
		}
		return fmt.Errorf("data dir %q is corrupt (%s) and the member belongs to a cluster of %d members: "+
			"the data dir was left untouched; remove the member from the cluster, move the data dir away and add the member back so that it syncs from its peers", dir, v.Reason, n)
	}

	res, err := RestoreLatest(ctx, cfg.Store, cfg.Etcd, embedded.RestoreOptions{}, lg)
	switch {
	case err == nil:
		if res.MovedAside != "" {
			lg.Warn("the corrupt data dir was moved aside and kept; delete it once you no longer need it", "path", res.MovedAside)
		}
		return nil
	case errors.Is(err, ErrNoBackup) && v.State == embedded.StateMissing:
		lg.Info("the store has no backup: starting a new member", "store", cfg.Store.URL())
		return nil
	case errors.Is(err, ErrNoBackup):
		return fmt.Errorf("data dir %q is corrupt (%s) and the store %s has no full snapshot to restore from; "+
			"the data dir was left untouched: restore it from another copy, or move it away to start an empty member", dir, v.Reason, cfg.Store.URL())
	default:
		return fmt.Errorf("data dir %q: %w", dir, err)
	}
}

// clusterSize counts the members in the initial cluster configuration.
func clusterSize(cfg *embed.Config) int {
	names := map[string]bool{}
	for _, part := range strings.Split(cfg.InitialCluster, ",") {
		if name, _, ok := strings.Cut(strings.TrimSpace(part), "="); ok {
			names[name] = true
		}
	}
	return len(names)
}
