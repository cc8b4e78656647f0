package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/etcdbr/etcdbr/embedded"
	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/supervisor"
)

// RestoreCmd is `etcdbr restore`: an offline rebuild of a data dir.
type RestoreCmd struct {
	StoreFlags    `embed:""`
	DataDir       string   `help:"The data dir to create (must not exist or be empty)." required:"" env:"ETCDBR_DATA_DIR" type:"path"`
	ToRevision    int64    `placeholder:"REV" help:"Restore to exactly this revision (default: the newest revision in the store)." env:"ETCDBR_TO_REVISION"`
	ToTime        string   `placeholder:"TIME" help:"Restore to the last revision observed at or before this time (RFC 3339, e.g. 2026-11-25T15:04:05Z)." env:"ETCDBR_TO_TIME"`
	BumpRevision  uint64   `placeholder:"N" help:"Raise the restored revision by this much, so that clients never see revisions go back (the Kubernetes-safe restore; requires --mark-compacted)." env:"ETCDBR_BUMP_REVISION"`
	MarkCompacted bool     `help:"Mark the bumped revision compacted, so that watchers relist (requires --bump-revision)." env:"ETCDBR_MARK_COMPACTED"`
	SkipHashCheck bool     `help:"Do not check etcd's own SHA-256 of the snapshot db (etcdbr's checksum is still verified)." env:"ETCDBR_SKIP_HASH_CHECK"`
	EtcdArgs      []string `arg:"" optional:"" name:"etcd-flags" help:"etcd flags for the member's name, peer URLs, initial cluster and token, after --."`
}

// target turns the flags into a restore target.
func (c *RestoreCmd) target() (snapstore.Target, error) {
	var t snapstore.Target
	switch {
	case c.ToRevision < 0:
		return t, usageErrorf("--to-revision %d: revisions start at 1", c.ToRevision)
	case c.ToRevision > 0 && c.ToTime != "":
		return t, usageErrorf("give --to-revision or --to-time, not both")
	case c.ToRevision > 0:
		t.Revision = c.ToRevision
	case c.ToTime != "":
		at, err := time.Parse(time.RFC3339Nano, c.ToTime)
		if err != nil {
			return t, usageErrorf("--to-time %q: want an RFC 3339 time such as 2026-11-25T15:04:05Z or 2026-11-25T16:04:05+01:00", c.ToTime)
		}
		t.Time = at
	}
	if (c.BumpRevision > 0) != c.MarkCompacted {
		return t, usageErrorf("--bump-revision and --mark-compacted go together (as in etcdutl snapshot restore)")
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
	if _, err := embedded.RecoverInterruptedRestore(cfg.Dir, cfg.WalDir, env.Log); err != nil {
		return fmt.Errorf("finish an interrupted restore of %q: %w", cfg.Dir, err)
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
	opts := embedded.RestoreOptions{SkipHashCheck: c.SkipHashCheck, RevisionBump: c.BumpRevision, MarkCompacted: c.MarkCompacted}
	res, err := supervisor.Restore(ctx, store, cfg, target, opts, env.Log)
	if err != nil {
		return err
	}
	if !res.Newest && c.BumpRevision < uint64(res.StoreRevision-res.Revision) {
		env.Log.Warn("restored a point before the newest revision in the store: a member started on this data dir begins a new history, "+
			"and its revisions would repeat those already in the store; before it backs up into the same store, restore with "+
			"--bump-revision (at least the difference) and --mark-compacted, or give it another store",
			"revision", res.Revision, "store_revision", res.StoreRevision, "difference", res.StoreRevision-res.Revision)
	}
	fmt.Fprintf(env.Stdout, "restored %s", res.Snapshot.Key)
	if len(res.Deltas) > 0 {
		fmt.Fprintf(env.Stdout, " and %d deltas", len(res.Deltas))
	}
	fmt.Fprintf(env.Stdout, " to revision %d (%s) into %s\n", res.Revision, res.Time.UTC().Format(time.RFC3339Nano), cfg.Dir)
	if res.DataRevision != res.Revision {
		fmt.Fprintf(env.Stdout, "the data dir is at revision %d, marked compacted\n", res.DataRevision)
	}
	return nil
}
