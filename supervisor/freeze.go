package supervisor

import (
	"context"
	"fmt"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/etcdserver"

	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// The freeze of a whole-cluster restore (docs/cluster-restore.md "The freeze"): before the
// members stop for a cluster restore, the cluster is made to refuse every write through
// etcd's own raft log, so that the refusal holds on every member from the same point of the
// log, whichever member a client writes through. etcd has one mechanism that does that: an
// alarm of type CORRUPT, under which every member's applier refuses puts, deletes,
// transactions, lease grants and revocations and compactions, while reads go on (the members
// serve the old data until they stop, never a mix). etcdbr raises it for a member ID no etcd
// member has, FreezeMemberID, so that the freeze is told apart from a real corruption
// wherever it shows (logs, /readyz, status, metrics, the CORRUPT handling, `etcdctl alarm
// list`).
//
// The freeze lives in the old cluster's db only: the restored members start from snapshots
// taken before it (no full snapshot is taken while the cluster is frozen), and a member that
// serves restored data, or sees no active intent, lifts a freeze it finds (an intent
// abandoned before the members restored leaves the cluster as it was).

// FreezeMemberID is the member ID of the alarm that freezes a cluster for a cluster restore:
// "etcdbrfz" in ASCII. etcd's member IDs are hashes; none is this in practice.
const FreezeMemberID uint64 = 0x657463646272667a

// freezeTimeout bounds the raising or lifting of the freeze: without a quorum it cannot be
// raised (and needs not be: a cluster without quorum accepts no write).
const freezeTimeout = 5 * time.Second

// isFreeze reports whether a is etcdbr's freeze rather than a member's alarm.
func isFreeze(a *pb.AlarmMember) bool {
	return a.Alarm == pb.AlarmType_CORRUPT && a.MemberID == FreezeMemberID
}

// hasFreeze reports whether alarms hold the freeze.
func hasFreeze(alarms []*pb.AlarmMember) bool {
	for _, a := range alarms {
		if isFreeze(a) {
			return true
		}
	}
	return false
}

// alarmFunc sends an alarm request to etcd: the seam between the freeze and etcd.
type alarmFunc func(ctx context.Context, r *pb.AlarmRequest) (*pb.AlarmResponse, error)

// freeze raises the freeze with alarm and returns the cluster's revision once it holds
// (rev reads it linearizably after the alarm).
func freeze(ctx context.Context, alarm alarmFunc, rev func(context.Context) (int64, error)) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, freezeTimeout)
	defer cancel()
	if _, err := alarm(ctx, &pb.AlarmRequest{Action: pb.AlarmRequest_ACTIVATE, MemberID: FreezeMemberID, Alarm: pb.AlarmType_CORRUPT}); err != nil {
		return 0, fmt.Errorf("freeze the cluster (raise etcdbr's CORRUPT alarm of member %x): %w", FreezeMemberID, err)
	}
	r, err := rev(ctx)
	if err != nil {
		return 0, fmt.Errorf("freeze the cluster: read the revision it holds at: %w", err)
	}
	return r, nil
}

// thaw lifts the freeze with alarm.
func thaw(ctx context.Context, alarm alarmFunc) error {
	ctx, cancel := context.WithTimeout(ctx, freezeTimeout)
	defer cancel()
	if _, err := alarm(ctx, &pb.AlarmRequest{Action: pb.AlarmRequest_DEACTIVATE, MemberID: FreezeMemberID, Alarm: pb.AlarmType_CORRUPT}); err != nil {
		return fmt.Errorf("lift the freeze (disarm etcdbr's CORRUPT alarm of member %x): %w", FreezeMemberID, err)
	}
	return nil
}

// FreezeCluster freezes the cluster cli reaches and returns its revision once frozen: every
// write acknowledged before is at or below it, and every write after is refused. It fails
// when the cluster has no quorum or does not answer within freezeTimeout.
func FreezeCluster(ctx context.Context, cli *clientv3.Client) (int64, error) {
	m := pb.NewMaintenanceClient(cli.ActiveConnection())
	return freeze(ctx, func(ctx context.Context, r *pb.AlarmRequest) (*pb.AlarmResponse, error) {
		return m.Alarm(ctx, r)
	}, func(ctx context.Context) (int64, error) {
		resp, err := cli.Get(ctx, "etcdbr-freeze", clientv3.WithCountOnly()) // linearizable
		if err != nil {
			return 0, err
		}
		return resp.Header.Revision, nil
	})
}

// ThawCluster lifts the freeze of the cluster cli reaches.
func ThawCluster(ctx context.Context, cli *clientv3.Client) error {
	m := pb.NewMaintenanceClient(cli.ActiveConnection())
	return thaw(ctx, func(ctx context.Context, r *pb.AlarmRequest) (*pb.AlarmResponse, error) {
		return m.Alarm(ctx, r)
	})
}

// freezeServer freezes the cluster of the in-process member srv. The alarm returns once
// srv applied it, after every earlier entry of the log: srv's revision then is the frozen one.
func freezeServer(ctx context.Context, srv *etcdserver.EtcdServer) (int64, error) {
	return freeze(ctx, srv.Alarm, func(context.Context) (int64, error) { return srv.KV().Rev(), nil })
}

// thawServer lifts the freeze through the in-process member srv.
func thawServer(ctx context.Context, srv *etcdserver.EtcdServer) error {
	return thaw(ctx, srv.Alarm)
}

// Freezer freezes a cluster and lifts the freeze: FreezeCluster and ThawCluster over a
// client, or the in-process member's (memberFreezer).
type Freezer interface {
	Freeze(ctx context.Context) (int64, error)
	Thaw(ctx context.Context) error
}

// ClientFreezer freezes the cluster a client reaches.
type ClientFreezer struct{ Client *clientv3.Client }

// Freeze freezes the cluster (FreezeCluster).
func (f ClientFreezer) Freeze(ctx context.Context) (int64, error) {
	return FreezeCluster(ctx, f.Client)
}

// Thaw lifts the freeze (ThawCluster).
func (f ClientFreezer) Thaw(ctx context.Context) error { return ThawCluster(ctx, f.Client) }

// memberFreezer freezes the cluster through the in-process member.
type memberFreezer struct{ srv *etcdserver.EtcdServer }

func (f memberFreezer) Freeze(ctx context.Context) (int64, error) { return freezeServer(ctx, f.srv) }
func (f memberFreezer) Thaw(ctx context.Context) error            { return thawServer(ctx, f.srv) }

var (
	_ Freezer = ClientFreezer{}
	_ Freezer = memberFreezer{}
)

// frozenBackupWait bounds how long a cluster restore waits, after the freeze, for the store
// to hold every write accepted before it (the leader's next delta); freezeNoticeMargin is
// what the freeze notice adds for the freeze itself and the intent's recording.
const (
	frozenBackupWait   = time.Minute
	freezeNoticeMargin = 30 * time.Second
)

// freezeBeforeIntent freezes the cluster with f and waits until the store holds its
// revision. It returns the frozen revision (0: the cluster could not be frozen, having no
// quorum) and finish, which the caller calls once it recorded the intent or failed to: it
// lifts the freeze unless recorded, and removes the freeze notice. While the notice is in the
// store (written first) no member lifts the freeze for want of an intent.
func freezeBeforeIntent(ctx context.Context, store *snapstore.Store, f Freezer, by string) (int64, func(recorded bool), error) {
	now := time.Now().UTC()
	if err := store.WriteFreezeNotice(ctx, catalog.FreezeNotice{Version: 1, Created: now, Until: now.Add(frozenBackupWait + freezeNoticeMargin), By: by}); err != nil {
		return 0, nil, err
	}
	clearNotice := func() { _ = store.ClearFreezeNotice(context.WithoutCancel(ctx)) }
	rev, err := f.Freeze(ctx)
	if err != nil {
		return 0, func(bool) { clearNotice() }, nil // no quorum: it accepts no write either
	}
	finish := func(recorded bool) {
		if !recorded {
			_ = f.Thaw(context.WithoutCancel(ctx))
		}
		clearNotice()
	}
	wctx, cancel := context.WithTimeout(ctx, frozenBackupWait)
	defer cancel()
	for {
		newest, err := store.Newest(wctx)
		if err == nil && newest >= rev {
			return rev, finish, nil
		}
		select {
		case <-wctx.Done():
			finish(false)
			return 0, nil, fmt.Errorf("the cluster was frozen at revision %d, but the store holds only up to revision %d after %s "+
				"(are backups running on the leader? etcdbr status); the freeze is lifted and no intent recorded: %w",
				rev, newest, frozenBackupWait, context.Cause(wctx))
		case <-time.After(500 * time.Millisecond):
		}
	}
}
