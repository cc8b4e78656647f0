package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/server/v3/embed"

	"github.com/etcdbr/etcdbr/embedded/datadir"
	"github.com/etcdbr/etcdbr/embedded/rebuild"
	"github.com/etcdbr/etcdbr/internal/backoff"
	"github.com/etcdbr/etcdbr/internal/progress"
	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
	"github.com/etcdbr/etcdbr/supervisor"
)

// RestoreCmd is `etcdbr restore`: an offline rebuild of a data dir.
type RestoreCmd struct {
	StoreFlags    `embed:""`
	DataDir       string   `help:"The data dir to create (must not exist or be empty)." required:"" env:"ETCDBR_DATA_DIR" type:"path"`
	ToRevision    revision `placeholder:"REV" help:"Restore to exactly this revision, 1 or more (default: the newest revision in the store)." env:"ETCDBR_TO_REVISION"`
	ToTime        string   `placeholder:"TIME" help:"Restore to the last revision observed at or before this time (RFC 3339, e.g. 2026-11-25T15:04:05Z)." env:"ETCDBR_TO_TIME"`
	Unbacked      int64    `name:"unbacked-revisions" placeholder:"N" default:"1000000000" help:"How many revisions the member may have served beyond the store's newest without backing them up: the restored data starts a new history past the store's newest plus this, marked compacted, so that clients (kube-apiserver, informers) list again and revisions never repeat." env:"ETCDBR_UNBACKED_REVISIONS"`
	Exact         bool     `help:"Restore exactly, without starting a new history (forensics): the revision is not raised, and etcdbr run refuses to back the copy up into this store." env:"ETCDBR_EXACT"`
	BumpRevision  uint64   `placeholder:"N" help:"Raise the restored revision by at least this much (etcdutl's --bump-revision; the new history's bump is never less than --unbacked-revisions requires)." env:"ETCDBR_BUMP_REVISION"`
	MarkCompacted bool     `help:"Accepted for etcdutl's --mark-compacted: a raised revision is always marked compacted." env:"ETCDBR_MARK_COMPACTED"`
	SkipHashCheck bool     `help:"Do not check etcd's own SHA-256 of the snapshot db (etcdbr's checksum is still verified)." env:"ETCDBR_SKIP_HASH_CHECK"`
	ForceRestore  bool     `help:"Restore even when the etcd flags create another cluster than the one the store belongs to (other peer URLs or --initial-cluster-token); the store then belongs to the restored cluster, whose backups continue it." env:"ETCDBR_FORCE_RESTORE"`
	KeepStore     bool     `name:"keep-store-cluster" help:"Restore even when the etcd flags create another cluster than the one the store belongs to, and leave the store's record as it is: for a copy that backs up into another store, or not at all." env:"ETCDBR_KEEP_STORE_CLUSTER"`
	EtcdArgs      []string `arg:"" optional:"" name:"etcd-flags" help:"etcd flags for the member's name, peer URLs, initial cluster and token, after --."`
}

// revision is the value of --to-revision, and whether it was given: 0 is refused, not taken
// for "the newest point" (which is what leaving the flag out means).
type revision struct {
	rev int64
	set bool
}

// UnmarshalText parses a revision.
func (r *revision) UnmarshalText(text []byte) error {
	n, err := strconv.ParseInt(strings.TrimSpace(string(text)), 10, 64)
	if err != nil {
		return fmt.Errorf("invalid revision %q: give a whole number, e.g. 123456", text)
	}
	r.rev, r.set = n, true
	return nil
}

// String formats the revision ("" when none was given).
func (r revision) String() string {
	if !r.set {
		return ""
	}
	return strconv.FormatInt(r.rev, 10)
}

// target turns the flags into a restore target.
func (c *RestoreCmd) target() (catalog.Target, error) {
	var t catalog.Target
	switch {
	case c.ToRevision.set && c.ToRevision.rev < 1:
		return t, usageErrorf("--to-revision %d: revisions start at 1; omit --to-revision for the newest point", c.ToRevision.rev)
	case c.ToRevision.set && c.ToTime != "":
		return t, usageErrorf("give --to-revision or --to-time, not both")
	case c.ToRevision.set:
		t.Revision = c.ToRevision.rev
	case c.ToTime != "":
		at, err := time.Parse(time.RFC3339Nano, c.ToTime)
		if err != nil {
			return t, usageErrorf("--to-time %q: want an RFC 3339 time such as 2026-11-25T15:04:05Z or 2026-11-25T16:04:05+01:00", c.ToTime)
		}
		t.Time = at
	}
	switch {
	case c.Exact && (c.BumpRevision > 0 || c.MarkCompacted):
		return t, usageErrorf("--exact restores without raising the revision: give it without --bump-revision and --mark-compacted")
	case c.Unbacked < 0:
		return t, usageErrorf("--unbacked-revisions %d: give 0 or more", c.Unbacked)
	}
	if c.ForceRestore && c.KeepStore {
		return t, usageErrorf("give --force-restore (the store then belongs to the restored cluster) or --keep-store-cluster (it stays the old cluster's), not both")
	}
	return t, nil
}

// Run restores.
func (c *RestoreCmd) Run(ctx context.Context, env *Env) error {
	target, err := c.target()
	if err != nil {
		return err
	}
	cfg, err := etcdConfig(env, c.EtcdArgs, c.DataDir)
	if err != nil {
		return err
	}
	// A restore killed halfway is finished (or its staging removed) before anything else.
	if _, err := rebuild.RecoverInterruptedRestore(cfg.Dir, cfg.WalDir, env.Log); err != nil {
		return fmt.Errorf("finish an interrupted restore of %q: %w", cfg.Dir, err)
	}
	if entries, err := os.ReadDir(cfg.Dir); err == nil && len(entries) > 0 {
		return usageErrorf("data dir %q is not empty: etcdbr restore only creates a new data dir; "+
			"move it away first (etcdbr run restores a corrupt data dir by itself and keeps the old one)", cfg.Dir)
	}
	store, err := c.openExisting(ctx, env.Log)
	if err != nil {
		return err
	}
	defer store.Close()
	// Before anything is written: may the cluster this restore creates use the store?
	clusters, err := supervisor.RestoreClusterFor(ctx, store, cfg)
	if err != nil {
		return err
	}
	clusters.Force, clusters.Keep = c.ForceRestore, c.KeepStore
	follow, err := supervisor.CheckRestoreCluster(clusters)
	if err != nil {
		return fmt.Errorf("%w; to restore a copy that backs up into another store (or not at all), leaving the store's record as it is, "+
			"give --keep-store-cluster", err)
	}
	opts := rebuild.RestoreOptions{
		SkipHashCheck: c.SkipHashCheck,
		RevisionBump:  c.BumpRevision, MarkCompacted: c.BumpRevision > 0,
		Marker: &datadir.RestoredMarker{Source: store.URL(), Trigger: supervisor.TriggerOffline, Exact: c.Exact},
	}
	if !c.Exact {
		// Offline, nothing says what the member served after the store's newest revision:
		// the restored data starts a new history past a bound of it.
		newest, err := store.Newest(ctx)
		if err != nil {
			return err
		}
		opts.Served = newest + c.Unbacked
	}
	opts.Progress = progress.New("fetch")
	stop := watchProgress(ctx, env, opts.Progress)
	res, err := supervisor.Restore(ctx, store, cfg, target, opts, env.Log)
	stop()
	if err != nil {
		return err
	}
	if c.Exact && !res.Newest {
		env.Log.Warn("restored an exact copy of a point before the newest revision in the store: it is another history than the store's; "+
			"etcdbr run refuses to back it up into this store (give it another --store)",
			"revision", res.Revision, "store_revision", res.StoreRevision)
	}
	fmt.Fprintf(env.Stdout, "restored %s", res.Snapshot.Key)
	if len(res.Deltas) > 0 {
		fmt.Fprintf(env.Stdout, " and %d deltas", len(res.Deltas))
	}
	fmt.Fprintf(env.Stdout, " to revision %d (%s) into %s\n", res.Revision, res.Time.UTC().Format(time.RFC3339Nano), cfg.Dir)
	if res.Bump > 0 {
		fmt.Fprintf(env.Stdout, "the data dir starts a new history at revision %d (marked compacted): clients list again, and etcdbr run backs it up with a fresh full snapshot\n", res.DataRevision)
	}
	if follow {
		id, err := followStore(ctx, env, store, cfg, clusters.Store)
		if err != nil {
			return fmt.Errorf("data dir %q is restored (cluster %s), but the store %s does not record it instead of cluster %s: %w; "+
				"etcdbr run with this store takes no backups until it does: once the store answers, move %s out of the store's prefix "+
				"and the first backup records the restored cluster", cfg.Dir, id, store.URL(), clusters.Store, err, snapstore.ClusterIDKey)
		}
		fmt.Fprintf(env.Stdout, "the store now belongs to cluster %s (it belonged to cluster %s)\n", id, clusters.Store)
	} else if clusters.Keep && clusters.Store != "" && clusters.New != clusters.Store {
		env.Log.Warn("the restored member is another cluster than the one the store belongs to, which was left as it is: "+
			"give it its own store; etcdbr run with this store takes no backups", "cluster", clusters.New, "store_cluster", clusters.Store)
	}
	return nil
}

// followStore records the restored data dir's cluster as the store's, replacing from
// (supervisor.FollowRestore), retrying a store that fails for about a minute.
func followStore(ctx context.Context, env *Env, store *snapstore.Store, cfg *embed.Config, from string) (string, error) {
	retry := backoff.Backoff{Min: time.Second, Max: 16 * time.Second} // 5 waits: 1 s to 16 s
	for attempt := 1; ; attempt++ {
		id, err := supervisor.FollowRestore(ctx, store, cfg, from)
		if err == nil || errors.Is(err, snapstore.ErrClusterMismatch) || attempt == 6 || ctx.Err() != nil {
			return id, err
		}
		wait := retry.Next()
		env.Log.Warn("cannot record the restored cluster in the store; retrying", "err", err, "in", wait)
		if backoff.Sleep(ctx, wait) != nil {
			return id, err
		}
	}
}
