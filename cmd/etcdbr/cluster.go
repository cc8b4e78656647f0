package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
	"github.com/etcdbr/etcdbr/supervisor"
)

// ClusterCmd is `etcdbr cluster`: what concerns every member of a cluster at once.
type ClusterCmd struct {
	Restore ClusterRestoreCmd `cmd:"" help:"Restore the whole cluster: every member's etcdbr restores the same point and the members start together as the restored cluster (docs/cluster-restore.md)."`
	Status  ClusterStatusCmd  `cmd:"" help:"Show the store's cluster restore, member by member."`
}

// ClusterRestoreCmd is `etcdbr cluster restore`: records a cluster restore intent in the
// store, then follows it until it ends.
type ClusterRestoreCmd struct {
	StoreFlags      `embed:""`
	ToRevision      revision      `placeholder:"REV" help:"Restore to exactly this revision, 1 or more (default: the newest revision in the store when the intent is recorded)." env:"ETCDBR_TO_REVISION"`
	ToTime          string        `placeholder:"TIME" help:"Restore to the last revision observed at or before this time (RFC 3339)." env:"ETCDBR_TO_TIME"`
	Deadline        time.Duration `default:"30m" help:"How long the members have to finish; an intent past it is abandoned (a member that had not begun goes on as it was)." env:"ETCDBR_CLUSTER_RESTORE_DEADLINE"`
	Unbacked        int64         `name:"unbacked-revisions" placeholder:"N" default:"1000000000" help:"How many revisions the cluster may have served beyond the store's newest: every member raises the restored revision past the store's newest plus this, marked compacted, so that clients (kube-apiserver, informers) list again." env:"ETCDBR_UNBACKED_REVISIONS"`
	Wait            bool          `default:"true" negatable:"" help:"Follow the restore member by member until it ends (--no-wait: return once the intent is recorded)." env:"ETCDBR_CLUSTER_RESTORE_WAIT"`
	Endpoints       []string      `placeholder:"URL,..." help:"Client URLs of the cluster: when it answers, it is frozen (every member refuses writes) before the intent is recorded, and a restore of the newest point holds every write it accepted (default: the members freeze it when they see the intent, within --cluster-restore-poll)." env:"ETCDBR_ENDPOINTS" sep:","`
	EtcdClientFlags `embed:""`
}

// Help says what the command does.
func (c *ClusterRestoreCmd) Help() string {
	return "Records a restore intent in the store: the one place every member reaches when etcd has no quorum. " +
		"Every member's etcdbr run (with this --store) sees it within --cluster-restore-poll, stops etcd, moves its " +
		"data dir aside (kept), restores the same point with the same new cluster token and its configured " +
		"--initial-cluster, and the members start together as the restored cluster. Done when every member serves " +
		"and a full snapshot of the restored cluster is in the store. A second intent while one runs is refused. " +
		"See docs/cluster-restore.md."
}

// Run records the intent and follows it.
func (c *ClusterRestoreCmd) Run(ctx context.Context, env *Env) error {
	var target catalog.Target
	switch {
	case c.ToRevision.set && c.ToRevision.rev < 1:
		return usageErrorf("--to-revision %d: revisions start at 1; omit --to-revision for the newest point", c.ToRevision.rev)
	case c.ToRevision.set && c.ToTime != "":
		return usageErrorf("give --to-revision or --to-time, not both")
	case c.ToRevision.set:
		target.Revision = c.ToRevision.rev
	case c.ToTime != "":
		at, err := time.Parse(time.RFC3339Nano, c.ToTime)
		if err != nil {
			return usageErrorf("--to-time %q: want an RFC 3339 time such as 2026-11-25T15:04:05Z", c.ToTime)
		}
		target.Time = at
	}
	if c.Deadline <= 0 || c.Unbacked < 0 {
		return usageErrorf("--deadline must be positive and --unbacked-revisions 0 or more")
	}
	store, err := c.openExisting(ctx, env.Log)
	if err != nil {
		return err
	}
	defer store.Close()
	if err := writable("--store", store); err != nil {
		return err
	}
	req := supervisor.ClusterRestoreRequest{Target: target, Deadline: c.Deadline, Unbacked: c.Unbacked}
	if len(c.Endpoints) > 0 {
		cfg, err := c.EtcdClientFlags.config(c.Endpoints)
		if err != nil {
			return err
		}
		cli, err := clientv3.New(cfg)
		if err != nil {
			return fmt.Errorf("connect to the cluster at %s to freeze it: %w", strings.Join(c.Endpoints, ","), err)
		}
		defer cli.Close()
		req.Freezer = supervisor.ClientFreezer{Client: cli}
	}
	in, err := supervisor.RecordClusterRestore(ctx, store, req)
	if err != nil {
		return err
	}
	if in.FrozenRevision > 0 {
		fmt.Fprintf(env.Stdout, "cluster frozen at revision %d: every member refuses writes until it restores\n", in.FrozenRevision)
	} else if len(c.Endpoints) > 0 {
		fmt.Fprintf(env.Stdout, "the cluster at %s could not be frozen (no quorum: it accepts no write either)\n", strings.Join(c.Endpoints, ","))
	}
	fmt.Fprintf(env.Stdout, "cluster restore %s recorded: %s, new cluster token %s, deadline %s\n",
		in.ID, in.Target(), in.Token, in.Deadline.Format(time.RFC3339))
	if !c.Wait {
		fmt.Fprintf(env.Stdout, "follow it with: etcdbr cluster status --store %s\n", store.URL())
		return nil
	}
	return followIntent(ctx, env.Stdout, store, in)
}

// followIntent prints the members' progress with in whenever it changes, until in ends.
func followIntent(ctx context.Context, out io.Writer, store *snapstore.Store, in catalog.Intent) error {
	seen := map[string]string{}
	for {
		ps, err := store.IntentProgress(ctx, in.ID)
		if err == nil {
			for _, p := range ps {
				line := progressLine(p)
				if seen[p.Member] != line {
					seen[p.Member] = line
					fmt.Fprintln(out, line)
				}
			}
		}
		end, ended, err := store.IntentEnd(ctx, in.ID)
		if err == nil && ended {
			fmt.Fprintf(out, "cluster restore %s %s: %s\n", in.ID, end.Outcome, end.Reason)
			if end.Outcome != catalog.OutcomeDone {
				return fmt.Errorf("cluster restore %s was %s: %s", in.ID, end.Outcome, end.Reason)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("follow cluster restore %s: %w (it goes on: etcdbr cluster status)", in.ID, ctx.Err())
		case <-time.After(time.Second):
		}
	}
}

// progressLine is one member's progress in words.
func progressLine(p catalog.MemberProgress) string {
	var b strings.Builder
	fmt.Fprintf(&b, "member %s: %s", p.Member, p.Phase)
	if p.DataRevision > 0 {
		fmt.Fprintf(&b, " (revision %d, cluster %s)", p.DataRevision, p.Cluster)
	}
	if p.Error != "" {
		fmt.Fprintf(&b, ": %s", p.Error)
	}
	return b.String()
}

// ClusterStatusCmd is `etcdbr cluster status`: the store's active cluster restore.
type ClusterStatusCmd struct {
	StoreFlags `embed:""`
}

// Run prints the active intent and its progress.
func (c *ClusterStatusCmd) Run(ctx context.Context, env *Env) error {
	store, err := c.openExisting(ctx, env.Log)
	if err != nil {
		return err
	}
	defer store.Close()
	in, ok, err := store.ActiveIntent(ctx)
	if err != nil {
		return err
	}
	if !ok {
		fmt.Fprintln(env.Stdout, "no cluster restore is active")
		return nil
	}
	fmt.Fprintf(env.Stdout, "cluster restore %s: %s, token %s, recorded %s by %s, deadline %s\n", in.ID, in.Target(), in.Token,
		in.Created.Format(time.RFC3339), in.By, in.Deadline.Format(time.RFC3339))
	ps, err := store.IntentProgress(ctx, in.ID)
	if err != nil {
		return err
	}
	if len(ps) == 0 {
		fmt.Fprintln(env.Stdout, "no member has seen it yet")
	}
	for _, p := range ps {
		fmt.Fprintln(env.Stdout, progressLine(p))
	}
	return nil
}
