package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"go.etcd.io/etcd/server/v3/embed"

	"github.com/etcdbr/etcdbr/embedded/datadir"
	"github.com/etcdbr/etcdbr/embedded/rebuild"
	"github.com/etcdbr/etcdbr/internal/backoff"
	"github.com/etcdbr/etcdbr/internal/progress"
	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// ErrDataDirNotEmpty means etcdbr restore was given a data dir that holds something: it only
// creates a new one.
var ErrDataDirNotEmpty = errors.New("the data dir is not empty")

// notEmptyError says which data dir is not empty, and what to do; it wraps
// ErrDataDirNotEmpty.
type notEmptyError string

func (e notEmptyError) Error() string { return string(e) }
func (e notEmptyError) Unwrap() error { return ErrDataDirNotEmpty }

// followAttempts is how many times the offline restore tries to record the restored cluster
// in a store that fails (about a minute, with the backoff between them).
const followAttempts = 6

// OfflineRestoreConfig is what an offline restore (etcdbr restore) needs.
type OfflineRestoreConfig struct {
	// Etcd is the configuration of the member whose data dir (Dir, WalDir) is created: its
	// name, peer URLs, initial cluster and token.
	Etcd *embed.Config
	// OpenStore opens the store once the data dir is known to be empty; RestoreOffline
	// closes it when it returns.
	OpenStore func(context.Context) (*snapstore.Store, error)
	// Target is the point to restore (the zero Target: the newest point in the store).
	Target catalog.Target
	// Exact restores without starting a new history (forensics): the revision is not raised,
	// and etcdbr run refuses to back the copy up into this store.
	Exact bool
	// Unbacked bounds the revisions the member may have served beyond the store's newest
	// without backing them up: unless Exact, the restored data starts a new history past
	// the store's newest plus this.
	Unbacked int64
	// RevisionBump raises the restored revision by at least this much (marked compacted).
	RevisionBump uint64
	// SkipHashCheck skips etcd's own SHA-256 of the snapshot db.
	SkipHashCheck bool
	// UnrecordedLeaseTTL is the TTL in seconds of leases whose TTL the backups' source did not
	// record (rebuild.ReplayOptions.UnrecordedLeaseTTL; 0: its default).
	UnrecordedLeaseTTL int64
	// Force restores even when the restore creates another cluster than the store records;
	// the store then records the restored cluster. Keep restores then too, and leaves the
	// store's record as it is.
	Force, Keep bool
	// WatchProgress, when set, shows the restore's progress (rebuild.RestoreOptions.Progress)
	// from when it starts to fetch until it ended (stop).
	WatchProgress func(*progress.Progress) (stop func())
	Log           *slog.Logger
}

// OfflineRestoreResult is what RestoreOffline did.
type OfflineRestoreResult struct {
	RestoreResult
	// Followed reports that the store records the restored cluster now: Cluster instead
	// of PreviousCluster.
	Followed                 bool
	Cluster, PreviousCluster string
}

// RestoreOffline creates the data dir of cfg.Etcd from the store, at cfg.Target, with no etcd
// running (etcdbr restore). It first finishes a restore that was killed halfway, and refuses
// a data dir that is not empty (ErrDataDirNotEmpty). Before anything is written, it checks
// that the cluster the restore creates may use the store (CheckRestoreCluster, with
// cfg.Force and cfg.Keep); when the store is to follow the restored cluster, it records it
// after the restore, retrying a store that fails for about a minute. When that fails, the
// data dir is restored all the same: the result says what was restored, beside the error.
func RestoreOffline(ctx context.Context, cfg OfflineRestoreConfig) (OfflineRestoreResult, error) {
	var out OfflineRestoreResult
	lg := cfg.Log
	if lg == nil {
		lg = slog.Default()
	}
	etcd := cfg.Etcd
	// A restore killed halfway is finished (or its staging removed) before anything else.
	if _, err := rebuild.RecoverInterruptedRestore(etcd.Dir, etcd.WalDir, lg); err != nil {
		return out, fmt.Errorf("finish an interrupted restore of %q: %w", etcd.Dir, err)
	}
	if entries, err := os.ReadDir(etcd.Dir); err == nil && len(entries) > 0 {
		return out, notEmptyError(fmt.Sprintf("data dir %q is not empty: etcdbr restore only creates a new data dir; "+
			"move it away first (etcdbr run restores a corrupt data dir by itself and keeps the old one)", etcd.Dir))
	}
	store, err := cfg.OpenStore(ctx)
	if err != nil {
		return out, err
	}
	defer store.Close()
	// Before anything is written: may the cluster this restore creates use the store?
	clusters, err := RestoreClusterFor(ctx, store, etcd)
	if err != nil {
		return out, err
	}
	clusters.Force, clusters.Keep = cfg.Force, cfg.Keep
	follow, err := CheckRestoreCluster(clusters)
	if err != nil {
		return out, fmt.Errorf("%w; to restore a copy that backs up into another store (or not at all), leaving the store's record as it is, "+
			"give --keep-store-cluster", err)
	}
	opts := rebuild.RestoreOptions{
		SkipHashCheck:      cfg.SkipHashCheck,
		UnrecordedLeaseTTL: cfg.UnrecordedLeaseTTL,
		RevisionBump:       cfg.RevisionBump, MarkCompacted: cfg.RevisionBump > 0,
		Marker: &datadir.RestoredMarker{Source: store.URL(), Trigger: TriggerOffline, Exact: cfg.Exact},
	}
	if !cfg.Exact {
		// Offline, nothing says what the member served after the store's newest revision:
		// the restored data starts a new history past a bound of it.
		newest, err := store.Newest(ctx)
		if err != nil {
			return out, err
		}
		opts.Served = newest + cfg.Unbacked
	}
	stop := func() {}
	if cfg.WatchProgress != nil { // else nobody watches: no counters, nothing paid
		opts.Progress = progress.New("fetch")
		stop = cfg.WatchProgress(opts.Progress)
	}
	out.RestoreResult, err = Restore(ctx, store, etcd, cfg.Target, opts, lg)
	stop()
	if err != nil {
		return out, err
	}
	res := out.RestoreResult
	if cfg.Exact && !res.Newest {
		lg.Warn("restored an exact copy of a point before the newest revision in the store: it is another history than the store's; "+
			"etcdbr run refuses to back it up into this store (give it another --store)",
			"revision", res.Revision, "store_revision", res.StoreRevision)
	}
	if follow {
		id, err := followStore(ctx, lg, store, etcd, clusters.Store)
		if err != nil {
			return out, fmt.Errorf("data dir %q is restored (cluster %s), but the store %s does not record it instead of cluster %s: %w; "+
				"etcdbr run with this store takes no backups until it does: once the store answers, move %s out of the store's prefix "+
				"and the first backup records the restored cluster", etcd.Dir, id, store.URL(), clusters.Store, err, snapstore.ClusterIDKey)
		}
		out.Followed, out.Cluster, out.PreviousCluster = true, id, clusters.Store
	} else if clusters.Keep && clusters.Store != "" && clusters.New != clusters.Store {
		lg.Warn("the restored member is another cluster than the one the store belongs to, which was left as it is: "+
			"give it its own store; etcdbr run with this store takes no backups", "cluster", clusters.New, "store_cluster", clusters.Store)
	}
	return out, nil
}

// followStore records the restored data dir's cluster as the store's, replacing from
// (FollowRestore), retrying a store that fails for about a minute.
func followStore(ctx context.Context, lg *slog.Logger, store *snapstore.Store, cfg *embed.Config, from string) (string, error) {
	retry := backoff.Backoff{Min: time.Second, Max: 16 * time.Second} // 5 waits: 1 s to 16 s
	for attempt := 1; ; attempt++ {
		id, err := FollowRestore(ctx, store, cfg, from)
		if err == nil || errors.Is(err, snapstore.ErrClusterMismatch) || attempt == followAttempts || ctx.Err() != nil {
			return id, err
		}
		wait := retry.Next()
		lg.Warn("cannot record the restored cluster in the store; retrying", "err", err, "in", wait)
		if backoff.Sleep(ctx, wait) != nil {
			return id, err
		}
	}
}
