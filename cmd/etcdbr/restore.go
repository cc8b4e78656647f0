package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/logutil"

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
	UnrecordedTTL int64    `name:"unrecorded-lease-ttl" placeholder:"SECONDS" help:"TTL of the leases whose TTL the backups' source never recorded (etcd-backup-restore's deltas hold none): their keys are restored attached to them, and expire this long after the member starts unless their owner renews the lease (default: the longest TTL among the full snapshot's leases, or 3600)." env:"ETCDBR_UNRECORDED_LEASE_TTL"`
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
	case c.UnrecordedTTL < 0:
		return t, usageErrorf("--unrecorded-lease-ttl %d: give a TTL in seconds, or leave it out for the default", c.UnrecordedTTL)
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
	// The restore says what it does in lines of its own; etcd's info lines (bbolt opened,
	// members added, the seed db etcdutl restores) only come between them. etcd's warnings
	// and errors stay, and an etcd --log-level given (or ETCD_LOG_LEVEL) wins.
	if !cfg.FlagsExplicitlySet["log-level"] && cfg.LogLevel == logutil.DefaultLogLevel {
		cfg.LogLevel = "warn"
	}
	res, err := supervisor.RestoreOffline(ctx, supervisor.OfflineRestoreConfig{
		Etcd:               cfg,
		OpenStore:          func(ctx context.Context) (*snapstore.Store, error) { return c.openExisting(ctx, env.Log) },
		Target:             target,
		Exact:              c.Exact,
		Unbacked:           c.Unbacked,
		RevisionBump:       c.BumpRevision,
		SkipHashCheck:      c.SkipHashCheck,
		UnrecordedLeaseTTL: c.UnrecordedTTL,
		Force:              c.ForceRestore,
		Keep:               c.KeepStore,
		Log:                env.Log,
		WatchProgress:      progressWatcher(ctx, env),
	})
	if errors.Is(err, supervisor.ErrDataDirNotEmpty) {
		return usageError{err}
	}
	if res.Snapshot.Key != "" { // restored, also when the store's record could not follow
		fmt.Fprintf(env.Stdout, "restored %s", res.Snapshot.Key)
		if len(res.Deltas) > 0 {
			fmt.Fprintf(env.Stdout, " and %d deltas", len(res.Deltas))
		}
		fmt.Fprintf(env.Stdout, " to revision %d (%s) into %s\n", res.Revision, res.Time.UTC().Format(time.RFC3339Nano), cfg.Dir)
		if res.Bump > 0 {
			fmt.Fprintf(env.Stdout, "the data dir starts a new history at revision %d (marked compacted): clients list again, and etcdbr run backs it up with a fresh full snapshot\n", res.DataRevision)
		}
		if n := res.Replay.Unrecorded; n > 0 {
			fmt.Fprintf(env.Stdout, "%d leases granted after the full snapshot have no TTL in the backups (the source does not record them): "+
				"restored with their keys and a TTL of %d s (--unrecorded-lease-ttl); their keys expire then unless their owners renew the leases\n",
				n, res.Replay.UnrecordedTTL)
		}
	}
	if err != nil {
		return err
	}
	if res.Followed {
		fmt.Fprintf(env.Stdout, "the store now belongs to cluster %s (it belonged to cluster %s)\n", res.Cluster, res.PreviousCluster)
	}
	return nil
}
