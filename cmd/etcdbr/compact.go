package main

import (
	"context"
	"fmt"
	"time"

	"github.com/etcdbr/etcdbr/internal/diskspace"
	"github.com/etcdbr/etcdbr/internal/progress"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
	"github.com/etcdbr/etcdbr/supervisor"
)

// CompactCmd is `etcdbr compact`: builds a full snapshot at the end of the backup chain.
type CompactCmd struct {
	StoreFlags `embed:""`
	ToRevision revision `placeholder:"REV" help:"Compact to exactly this revision inside the backup window (default: the newest revision in the store)." env:"ETCDBR_TO_REVISION"`
	SpoolDir   string   `help:"Where the db is built: it needs room for the full snapshot's db and what the deltas add to it; removed afterwards (default: the system temp dir)." env:"ETCDBR_SPOOL_DIR" type:"path"`
}

// Help says what compact does and what it never does.
func (c *CompactCmd) Help() string {
	return "Builds, offline, the db that a restore to the newest point (or --to-revision) would build from the newest " +
		"full snapshot and the deltas after it, checks it, and uploads it as a full snapshot of that revision (encrypted " +
		"like any new backup), so that the next restore replays nothing. The object is read back and verified. " +
		"It deletes nothing: garbage collection decides, by the retention policy, what the new full snapshot lets go. " +
		"A restore lock keeps garbage collection away from the chain while it is read. Refused, with the reason: a store " +
		"without a full snapshot, a revision outside the backup window, a damaged object the chain needs (the damage is " +
		"recorded), a chain across the start of a history, an encrypted chain without --encryption-recipient. " +
		"`etcdbr run` compacts by itself past --compact-after-revisions or --compact-after-bytes. See docs/compaction.md."
}

// Run compacts.
func (c *CompactCmd) Run(ctx context.Context, env *Env) error {
	var target catalog.Target
	if c.ToRevision.set {
		if c.ToRevision.rev < 1 {
			return usageErrorf("--to-revision %d: revisions start at 1; omit --to-revision for the newest point", c.ToRevision.rev)
		}
		target.Revision = c.ToRevision.rev
	}
	store, err := c.openExisting(ctx, env.Log)
	if err != nil {
		return err
	}
	defer store.Close()
	p := progress.New("compact")
	stop := watchProgress(ctx, env, p)
	res, err := supervisor.Compact(ctx, store, supervisor.CompactOptions{Target: target, SpoolDir: c.SpoolDir, Log: env.Log, Progress: p})
	stop()
	if err != nil {
		return err
	}
	out := env.Stdout
	if res.Nothing != "" {
		fmt.Fprintf(out, "nothing to compact: %s\n", res.Nothing)
		return nil
	}
	fmt.Fprintf(out, "compacted %s and %s (%d revisions, %s) into %s (%s) at revision %d, observed %s, in %v\n",
		res.Chain.Full.Key, count(len(res.Deltas), "delta"), res.Replay.Revisions, diskspace.Bytes(res.Chain.Bytes),
		res.Full.Key, diskspace.Bytes(res.Full.Size), res.Full.Revision, res.Full.Time.UTC().Format(time.RFC3339Nano),
		res.Duration.Round(time.Millisecond))
	fmt.Fprintf(out, "a restore to revision %d now replays nothing; the deltas stay until garbage collection lets them go\n", res.Full.Revision)
	return nil
}
