package supervisor

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/types"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdbr/etcdbr/backup"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// TriggerMembership is the trigger of the full snapshot taken before a membership change
// (FullBeforeMembershipChange).
const TriggerMembership = "membership"

// FullBeforeMembershipChange takes a full snapshot of the cluster into the store just before
// a membership change this supervisor makes (a stale member removed, a learner added or
// promoted, a stuck learner removed), and returns it: the restore point from just before
// the change.
//
// While this member's etcd serves and leads, the full snapshot runner takes it (after any
// snapshot in flight), fenced by the leadership like every full snapshot: it fails (wrapping
// backup.ErrFenced) when this member stopped leading meanwhile. Otherwise (the member being
// replaced, whose etcd does not run, or a follower), the db is streamed from a member of the
// cluster through cli, etcd's Maintenance API, as the sidecar does (backup.FullFromClient:
// named with the revision read from the snapshot itself; spooled beside the data dir when
// writes come in meanwhile), after checking that the store belongs to cli's cluster
// (claiming it when it records none; another cluster's store is refused, wrapping
// snapstore.ErrClusterMismatch). That is the one upload of a member that does not lead, and
// it is safe beside the leader's: a full snapshot never overlaps a delta, and the leader's
// chain goes on untouched. cli must reach the cluster over the network (not the in-process
// client, whose snapshot stream etcd 3.6 ends with an error).
func (s *Supervisor) FullBeforeMembershipChange(ctx context.Context, cli *clientv3.Client) (catalog.Snapshot, error) {
	if b, err := s.servingBackups(); err == nil {
		snap, err := b.fullNow(ctx)
		if err != nil {
			return catalog.Snapshot{}, fmt.Errorf("full snapshot before a membership change: %w", err)
		}
		return snap, nil
	}
	if cli == nil {
		return catalog.Snapshot{}, fmt.Errorf("full snapshot before a membership change: this member does not lead and no client of the cluster was given: %w", ErrNotLeader)
	}
	members, err := cli.MemberList(ctx)
	if err != nil {
		return catalog.Snapshot{}, fmt.Errorf("full snapshot before a membership change: read the cluster's ID: %w", err)
	}
	store := s.cfg.Store
	cluster := types.ID(members.Header.ClusterId).String()
	if err := store.ClaimClusterID(ctx, cluster); err != nil {
		return catalog.Snapshot{}, fmt.Errorf("full snapshot before a membership change: the store %s: %w", store.URL(), err)
	}
	start := time.Now()
	snap, err := backup.FullFromClient(ctx, cli, store, filepath.Dir(s.cfg.Etcd.Dir))
	if err != nil {
		observer{s}.Failed(backup.Failure{Kind: catalog.KindFull, Op: backup.OpSnapshot, Reason: backup.ReasonOf(err), Err: err})
		return catalog.Snapshot{}, fmt.Errorf("full snapshot before a membership change: %w", err)
	}
	took := time.Since(start)
	observer{s}.Taken(backup.Taken{Snapshot: snap, Duration: took, Trigger: TriggerMembership})
	s.lg.Info("full snapshot taken before a membership change", "object", snap.Key, "revision", snap.Revision,
		"bytes", snap.Size, "duration", took.Round(time.Millisecond))
	return snap, nil
}
