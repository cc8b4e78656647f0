package supervisor

import (
	"context"
	"time"

	"go.etcd.io/etcd/server/v3/etcdserver"

	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// intentFreeze is the freeze a member raised for a cluster restore (freeze.go): the intent,
// the revision the cluster was frozen at, and when (revision 0: the member could not).
type intentFreeze struct {
	id       string
	revision int64
	at       time.Time
}

// freezeOf is the freeze this member raised for the intent id (zero: none).
func (s *Supervisor) freezeOf(id string) intentFreeze {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.intentFreeze.id != id {
		return intentFreeze{}
	}
	return s.intentFreeze
}

// freezeForIntent freezes the cluster before this serving member stops for the cluster
// restore in, once per intent: from then on no member accepts a write. Without a quorum the
// freeze cannot be raised, and needs not be (nothing is accepted either): the restore goes on.
func (s *Supervisor) freezeForIntent(ctx context.Context, in catalog.Intent) {
	s.mu.Lock()
	done := s.intentFreeze.id == in.ID
	var srv *etcdserver.EtcdServer
	if s.etcd != nil && s.state == StateServing {
		srv = s.etcd.Server()
	}
	v := s.cluster.view(s.etcd)
	s.mu.Unlock()
	if done || srv == nil {
		return
	}
	if v.probe != nil && !v.quorum {
		s.mu.Lock()
		s.intentFreeze = intentFreeze{id: in.ID}
		s.mu.Unlock()
		s.lg.Info("cluster restore: the cluster has no quorum, so it accepts no write and needs no freeze", "intent", in.ID)
		return
	}
	rev, err := freezeServer(ctx, srv)
	fz := intentFreeze{id: in.ID}
	if err == nil {
		fz.revision, fz.at = rev, time.Now().UTC()
	}
	s.mu.Lock()
	s.intentFreeze = fz
	s.mu.Unlock()
	if err != nil {
		s.lg.Warn("cluster restore: cannot freeze the cluster (without a quorum it accepts no write either); restoring",
			"intent", in.ID, "err", err)
		return
	}
	s.lg.Warn("cluster restore: the cluster is frozen: every member refuses writes from now on",
		"intent", in.ID, "revision", rev, "after", time.Since(in.Created).Round(time.Millisecond).String())
}

// thawFor lifts the freeze of a cluster whose intent (id; "" none) ended without restoring
// it, or of a restored cluster; why says which, for the log.
func (s *Supervisor) thawFor(ctx context.Context, id, why string) {
	s.mu.Lock()
	var srv *etcdserver.EtcdServer
	if s.etcd != nil && s.state == StateServing {
		srv = s.etcd.Server()
	}
	s.mu.Unlock()
	if srv == nil {
		return
	}
	if err := thawServer(ctx, srv); err != nil {
		s.lg.Warn("cluster restore: cannot lift the freeze; trying again at the next look", "intent", id, "err", err)
		return
	}
	s.lg.Warn("cluster restore: the freeze is lifted: the cluster accepts writes again", "intent", id, "reason", why)
}
