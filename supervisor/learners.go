package supervisor

import (
	"context"
	"encoding/json"
	"expvar"
	"strconv"
	"sync"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/types"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdbr/etcdbr/embedded"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
	"github.com/etcdbr/etcdbr/supervisor/membership"
)

// The leader's etcdbr looks after the learners (membership.Keeper): it makes sure a full
// snapshot is in the store when a learner joins (restorePointForLearner), promotes the learner
// once it started and caught up, and removes one that made no progress for --learner-timeout,
// so that its member tries again. The member that joins took a full snapshot itself before it
// removed its stale entry and added itself (joinPeers): every membership change etcdbr makes
// comes after one (docs/clusters.md).

// How the leader looks after the learners.
const (
	// keeperInterval is how often the leader looks at the learners.
	keeperInterval = time.Second
	// keeperCallTimeout bounds one promotion or removal.
	keeperCallTimeout = 10 * time.Second
	// membershipSnapshotTimeout bounds the full snapshot taken when a learner joins.
	membershipSnapshotTimeout = 10 * time.Minute
)

// learnerTimeout is Config.Cluster.LearnerTimeout, or its default.
func (c Config) learnerTimeout() time.Duration {
	if c.Cluster.LearnerTimeout > 0 {
		return c.Cluster.LearnerTimeout
	}
	return DefaultLearnerTimeout
}

// tendLearners looks after the learners of e's cluster every keeperInterval while this
// member leads, until the returned stop is called (it waits for the goroutine). Run starts
// it each time etcd serves and stops it before etcd stops.
func (s *Supervisor) tendLearners(ctx context.Context, e *embedded.Etcd) (stop func()) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(keeperInterval)
		defer tick.Stop()
		var k *membership.Keeper // nil while not leading: a new leader starts afresh
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			srv := e.Server()
			if srv.Leader() != srv.MemberID() {
				k = nil
				continue
			}
			if k == nil {
				k = &membership.Keeper{Timeout: s.cfg.learnerTimeout()}
			}
			for s.tend(ctx, e, k) == membership.ActionSnapshot && ctx.Err() == nil {
				// The snapshot taken, the learner may be ready: look again at once.
			}
		}
	})
	return func() {
		cancel()
		wg.Wait()
	}
}

// tend takes the keeper's next action, and returns its kind.
func (s *Supervisor) tend(ctx context.Context, e *embedded.Etcd, k *membership.Keeper) membership.ActionKind {
	srv := e.Server()
	var members []membership.Member
	for _, m := range srv.Cluster().Members() {
		members = append(members, membership.Member{ID: uint64(m.ID), Name: m.Name, PeerURLs: m.PeerURLs, ClientURLs: m.ClientURLs, IsLearner: m.IsLearner})
	}
	me := uint64(srv.MemberID())
	a := k.Look(time.Now(), membership.View{Members: members, Leader: me, Match: raftMatch(me)})
	lg := s.lg.With("component", "membership", "learner", types.ID(a.ID).String())
	switch a.Kind {
	case membership.ActionSnapshot:
		lg.Info("a learner joined: a full snapshot comes before it is promoted or removed", "reason", a.Reason)
		s.restorePointForLearner(ctx, "promote or remove learner "+a.Member.String())
		if ctx.Err() != nil {
			return a.Kind
		}
		k.Snapshotted(a.ID)
	case membership.ActionPromote:
		cctx, cancel := context.WithTimeout(ctx, keeperCallTimeout)
		_, err := e.Client().MemberPromote(cctx, a.ID)
		cancel()
		switch {
		case err == nil:
			lg.Info("promoted the learner to a voting member", "member", a.Member.String(), "reason", a.Reason)
			k.Forget(a.ID)
		case membership.IsLearnerNotReady(err):
			lg.Debug("the learner is not caught up yet", "err", err)
		case membership.IsMemberNotLearner(err), membership.IsMemberNotFound(err):
			k.Forget(a.ID) // promoted or removed meanwhile
		default:
			lg.Warn("could not promote the learner; trying again", "err", err)
		}
	case membership.ActionRemove:
		lg.Warn("removing a learner that makes no progress", "member", a.Member.String(), "reason", a.Reason)
		cctx, cancel := context.WithTimeout(ctx, keeperCallTimeout)
		_, err := e.Client().MemberRemove(cctx, a.ID)
		cancel()
		switch {
		case err == nil || membership.IsMemberNotFound(err):
			k.Forget(a.ID)
		default:
			lg.Warn("could not remove the learner; trying again", "err", err)
		}
	}
	return a.Kind
}

// freshFull is how old the store's newest full snapshot may be, when the leader sees a new
// learner, and still be the restore point of the learner's promotion or removal: the member
// that joins through etcdbr takes one just before it adds itself (joinPeers), and it is not
// taken again. A learner a person added gets one of its own unless the schedule took one
// this recently.
const freshFull = 5 * time.Minute

// beforeChange takes a full snapshot before a membership change (what names the change, for
// the log); cli reaches the cluster when this member's etcd does not serve.
type beforeChange func(ctx context.Context, cli *clientv3.Client, what string)

// restorePointBeforeChange takes a full snapshot into the store before a membership change
// this member makes (FullBeforeMembershipChange: the leader's runner, fenced; or, for a
// member whose etcd does not serve, streamed from the cluster through cli). A failure is
// logged and the change goes ahead: a store that cannot be reached does not hold the
// cluster's membership back, and the store holds the data as far as its delta snapshots
// reached.
func (s *Supervisor) restorePointBeforeChange(ctx context.Context, cli *clientv3.Client, what string) {
	lg := s.lg.With("component", "membership", "change", what)
	sctx, cancel := context.WithTimeout(ctx, membershipSnapshotTimeout)
	defer cancel()
	snap, err := s.FullBeforeMembershipChange(sctx, cli)
	switch {
	case err == nil:
		lg.Info("the restore point of the membership change is in the store", "object", snap.Key, "revision", snap.Revision)
	case ctx.Err() == nil:
		lg.Error("the full snapshot before a membership change failed; the change goes ahead (a store that cannot be reached "+
			"does not hold the cluster back): the store holds the data as far as its delta snapshots reached", "err", err)
	}
}

// restorePointForLearner is the leader's restorePointBeforeChange before it promotes or
// removes a learner it just saw: none is taken when the store's newest full snapshot (of the
// highest revision) is younger than freshFull (the joining member took it just before it
// added itself).
func (s *Supervisor) restorePointForLearner(ctx context.Context, what string) {
	fulls, err := s.cfg.Store.List(ctx, catalog.KindFull)
	if err == nil && len(fulls) > 0 {
		newest := fulls[0] // by revision: the one that holds the most
		for _, f := range fulls[1:] {
			if f.Revision > newest.Revision || f.Revision == newest.Revision && f.Time.After(newest.Time) {
				newest = f
			}
		}
		if age := time.Since(newest.Time); age < freshFull {
			s.lg.Info("a fresh full snapshot is the restore point of the membership change", "component", "membership",
				"change", what, "object", newest.Key, "age", age.Round(time.Second))
			return
		}
	}
	s.restorePointBeforeChange(ctx, nil, what)
}

// raftMatch returns each member's raft match index as this member's raft sees it (the
// leader's progress of its followers), read from etcd's "raft.status" expvar: the only place
// etcd 3.6 exposes it to the process that embeds it. It is nil when unknown, or when the
// status is not of member id (the expvar is one per process: the last etcd started in it).
func raftMatch(id uint64) map[uint64]uint64 {
	v := expvar.Get("raft.status")
	if v == nil {
		return nil
	}
	var st struct {
		ID       string `json:"id"`
		Progress map[string]struct {
			Match uint64 `json:"match"`
		} `json:"progress"`
	}
	if err := json.Unmarshal([]byte(v.String()), &st); err != nil {
		return nil
	}
	if sid, err := strconv.ParseUint(st.ID, 16, 64); err != nil || sid != id || len(st.Progress) == 0 {
		return nil
	}
	match := map[uint64]uint64{}
	for k, p := range st.Progress {
		if pid, err := strconv.ParseUint(k, 16, 64); err == nil {
			match[pid] = p.Match
		}
	}
	return match
}
