package supervisor

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/client/pkg/v3/types"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/etcdserver/api/membership"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/etcdbr/etcdbr/embedded"
)

// probeCluster probes the cluster of the serving etcd every clusterProbeInterval, and at once
// when etcd starts serving, until ctx ends: it records what it found (cluster), and logs
// changes of the membership, of this member's role and of the quorum once each. Run runs it
// on a goroutine of its own from start to end; the clients of the other members and what it
// last logged are that goroutine's alone.
func (s *Supervisor) probeCluster(ctx context.Context) {
	clients := newMemberClients(s.clientTLS, s.clientAutoTLS)
	defer clients.close()
	var logged clusterLog
	tick := time.NewTicker(clusterProbeInterval)
	defer tick.Stop()
	for {
		if e := s.servingEtcd(); e != nil {
			p := probeOnce(ctx, e, clients)
			if ctx.Err() != nil {
				return
			}
			if s.recordProbe(p) {
				logged.log(s.lg, p, s.cluster, s.repairCommand())
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-s.serving:
		}
	}
}

// servingEtcd returns the etcd that serves (nil while none does).
func (s *Supervisor) servingEtcd() *embedded.Etcd {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != StateServing {
		return nil
	}
	return s.etcd
}

// recordProbe keeps p when its etcd still serves (a restore may have stopped it meanwhile);
// it reports whether it did.
func (s *Supervisor) recordProbe(p *clusterProbe) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.etcd != p.etcd {
		return false
	}
	s.cluster.record(p)
	return true
}

// probeOnce probes the cluster of e: the linearizable read through e and the status of every
// other member, at the same time, each within its bound.
func probeOnce(ctx context.Context, e *embedded.Etcd, clients *memberClients) *clusterProbe {
	srv := e.Server()
	p := &clusterProbe{etcd: e, self: srv.MemberID(), members: srv.Cluster().Members(), status: map[types.ID]memberStatus{}}
	var wg sync.WaitGroup
	if srv.Leader() == 0 {
		p.read.err = "this member knows no leader"
	} else {
		wg.Go(func() {
			rctx, cancel := context.WithTimeout(ctx, readTimeout)
			defer cancel()
			start := time.Now()
			err := srv.LinearizableReadNotify(rctx)
			p.read.took = time.Since(start)
			if err == nil {
				p.read.ok = true
			} else {
				p.read.err = err.Error()
			}
		})
	}
	var mu sync.Mutex
	for _, m := range p.members {
		if m.ID == p.self {
			continue
		}
		wg.Go(func() {
			st := clients.status(ctx, m)
			mu.Lock()
			p.status[m.ID] = st
			mu.Unlock()
		})
	}
	wg.Wait()
	clients.forget(p.members)
	// This member's own status last: its applied index is then at least what it was when
	// the leader answered.
	p.leader = srv.Leader()
	p.status[p.self] = memberStatus{answered: true, leader: p.leader, learner: srv.IsLearner(),
		committed: srv.CommittedIndex(), applied: srv.AppliedIndex()}
	p.at = time.Now()
	return p
}

// memberClients are clients of the other members' client URLs, one per member, with the TLS
// settings etcd's own client listener uses (its certificate as the client certificate, its
// trusted CA): the cluster prober asks each for its status with them. They are created when
// first needed and closed when their member left the membership or changed its URLs.
// Owned by the prober's goroutine.
type memberClients struct {
	tls     *tls.Config // nil: plain connections
	tlsErr  error       // why the TLS settings could not be loaded
	clients map[types.ID]*memberClient
	mu      sync.Mutex // guards clients (status runs for several members at once)
}

// memberClient is the client of one member.
type memberClient struct {
	urls string // the client URLs it was made for
	cli  *clientv3.Client
}

// newMemberClients prepares the clients with etcd's client TLS settings: info, and whether
// etcd makes its own certificates (--auto-tls).
func newMemberClients(info transport.TLSInfo, autoTLS bool) *memberClients {
	mc := &memberClients{clients: map[types.ID]*memberClient{}}
	switch {
	case !info.Empty():
		mc.tls, mc.tlsErr = info.ClientConfig()
		if mc.tlsErr != nil {
			mc.tlsErr = fmt.Errorf("etcd's client TLS settings (%s): %w", info, mc.tlsErr)
		}
	case autoTLS:
		// etcd's own self-signed certificates: nothing to verify them with.
		mc.tls = &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12} //nolint:gosec // etcd's --auto-tls
	}
	return mc
}

// status asks member m for its status.
func (mc *memberClients) status(ctx context.Context, m *membership.Member) memberStatus {
	if len(m.ClientURLs) == 0 {
		return memberStatus{err: "it has no client URL: its etcd has not started yet"}
	}
	cli, err := mc.client(m)
	if err != nil {
		return memberStatus{err: err.Error()}
	}
	sctx, cancel := context.WithTimeout(ctx, memberStatusTimeout)
	defer cancel()
	resp, err := pb.NewMaintenanceClient(cli.ActiveConnection()).Status(sctx, &pb.StatusRequest{})
	if err != nil {
		return memberStatus{answered: answeredWithError(err), err: strings.TrimPrefix(err.Error(), "rpc error: ")}
	}
	// resp.Errors repeats what the fields say (no leader) and the cluster's alarms, which
	// this member's own status shows.
	return memberStatus{answered: true, leader: types.ID(resp.Leader), learner: resp.IsLearner,
		committed: resp.RaftIndex, applied: resp.RaftAppliedIndex}
}

// answeredWithError reports whether err came from the member's etcd (it answered, with an
// error: e.g. authentication), not from the way there (unreachable, too slow).
func answeredWithError(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return false
	}
	st, ok := status.FromError(err)
	if !ok {
		return false
	}
	switch st.Code() {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled, codes.Unknown:
		return false
	}
	return true
}

// client returns the client of member m, made for its current client URLs.
func (mc *memberClients) client(m *membership.Member) (*clientv3.Client, error) {
	if mc.tlsErr != nil {
		return nil, mc.tlsErr
	}
	urls := strings.Join(m.ClientURLs, ",")
	mc.mu.Lock()
	defer mc.mu.Unlock()
	if c, ok := mc.clients[m.ID]; ok {
		if c.urls == urls {
			return c.cli, nil
		}
		c.cli.Close()
		delete(mc.clients, m.ID)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: m.ClientURLs, TLS: mc.tls, Logger: zap.NewNop()})
	if err != nil {
		return nil, fmt.Errorf("a client of %s: %w", urls, err)
	}
	mc.clients[m.ID] = &memberClient{urls: urls, cli: cli}
	return cli, nil
}

// forget closes the clients of members that are no longer in members.
func (mc *memberClients) forget(members []*membership.Member) {
	mc.mu.Lock()
	defer mc.mu.Unlock()
	for id, c := range mc.clients {
		found := false
		for _, m := range members {
			found = found || m.ID == id
		}
		if !found {
			c.cli.Close()
			delete(mc.clients, id)
		}
	}
}

// close closes every client.
func (mc *memberClients) close() {
	mc.forget(nil)
}

// clusterLog is what the prober logged last: the membership with each member's role, and the
// quorum verdict, so that each change is logged once.
type clusterLog struct {
	etcd   *embedded.Etcd
	roles  map[types.ID]string // by member ID: its role ("" before the first probe)
	names  map[types.ID]string
	quorum *bool
	since  time.Time
}

// log logs what changed since the last probe it saw: a member added, started, promoted or
// removed, this member's role, and the quorum lost or regained (since when, which members
// answer).
func (l *clusterLog) log(lg *slog.Logger, p *clusterProbe, c *cluster, repair string) {
	lg = lg.With("component", "cluster")
	first := l.roles == nil
	if first || l.etcd != p.etcd {
		// A new etcd (a start, a restore): say where this member stands once.
		role := RoleVoter
		if p.learner() {
			role = RoleLearner
		}
		lg.Info("this member's place in the cluster", "role", role, "members", len(p.members), "voters", len(p.voters()),
			"names", memberNames(sortedMembers(p.members)))
		if role == RoleLearner {
			lg.Warn("this member is a learner: it is not ready until a voter promotes it")
		}
	} else {
		for _, m := range sortedMembers(p.members) {
			role, name := roleOf(m), memberName(m)
			was, ok := l.roles[m.ID]
			switch {
			case !ok:
				lg.Info("a member joined the cluster", "member", name, "id", m.ID.String(), "role", role, "peer_urls", m.PeerURLs)
			case was != role && m.ID == p.self:
				lg.Info("this member's role changed", "from", was, "to", role)
			case was != role:
				lg.Info("a member's role changed", "member", name, "id", m.ID.String(), "from", was, "to", role)
			case l.names[m.ID] == "" && m.Name != "":
				lg.Info("a member started", "member", name, "id", m.ID.String(), "role", role)
			}
		}
		for id, role := range l.roles {
			if p.member(id) == nil {
				lg.Info("a member left the cluster", "member", cmp.Or(l.names[id], id.String()), "id", id.String(), "role", role)
			}
		}
	}
	l.etcd = p.etcd
	l.roles, l.names = map[types.ID]string{}, map[types.ID]string{}
	for _, m := range p.members {
		l.roles[m.ID], l.names[m.ID] = roleOf(m), m.Name
	}

	v := c.view(p.etcd)
	q, why := v.quorum, v.quorumWhy
	switch {
	case l.quorum == nil && !q:
		lg.Warn("the cluster has no quorum, as this member sees it; if the members that do not answer will not come back, "+
			"restore the whole cluster from the store with the repair command", "since", v.quorumSince, "why", why, "repair", repair)
	case l.quorum != nil && *l.quorum && !q:
		lg.Error("the cluster lost its quorum, as this member sees it; if the members that do not answer will not come back, "+
			"restore the whole cluster from the store with the repair command", "since", v.quorumSince, "why", why, "repair", repair)
	case l.quorum != nil && !*l.quorum && q:
		lg.Info("the cluster has its quorum again", "since", v.quorumSince, "without_for", v.quorumSince.Sub(l.since).Round(time.Millisecond),
			"members_answering", memberNames(p.answering()))
	}
	if l.quorum == nil || *l.quorum != q {
		l.quorum, l.since = &q, v.quorumSince
	}
}
