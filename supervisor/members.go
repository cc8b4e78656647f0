package supervisor

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/client/pkg/v3/types"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/etcdbr/etcdbr/embedded/datadir"
	"github.com/etcdbr/etcdbr/supervisor/membership"
)

// A member of a cluster of several reaches its peers through their client URLs when its own
// etcd is down (at start: is the cluster there, does it have a quorum, is this member still
// in it; then the learner path). etcd's --initial-cluster gives only peer URLs: the client
// URLs are --cluster-endpoints, or told from the peer URLs when they use etcd's port 2380
// (ClusterEndpoints). The client uses the member's own client TLS files unless told
// otherwise (ClusterConfig).

// DefaultLearnerTimeout is the ClusterConfig.LearnerTimeout used when none is given.
const DefaultLearnerTimeout = 10 * time.Minute

// ClusterConfig is how this member reaches its peers and looks after learners. With no
// Endpoints, a member of a cluster of several cannot ask its peers: with no data dir it starts
// etcd as configured (what etcd alone does), and with a corrupt one it stops; etcdbr run
// always sets them (or tells them from the peer URLs), or refuses to start.
type ClusterConfig struct {
	// Endpoints are the peers' client URLs (ClusterEndpoints); none for a single member.
	Endpoints []string
	// Explicit: the endpoints were given (--cluster-endpoints), not told from the peer
	// URLs. A member with explicit endpoints of other members belongs to a cluster of
	// several whatever its --initial-cluster says (kubeadm's first control-plane node names
	// only itself there).
	Explicit bool
	// CertFile, KeyFile and CAFile are the client TLS files for the peers ("": etcd's own
	// --cert-file, --key-file and --trusted-ca-file; kubeadm's etcd server certificate is
	// also valid for client authentication).
	CertFile, KeyFile, CAFile string
	// TendLearners makes this member's etcdbr, while it leads, look after the learners: a
	// full snapshot when one joins, its promotion once caught up, its removal after
	// LearnerTimeout without progress (learners.go). etcdbr run sets it; without it,
	// learners are a person's to promote.
	TendLearners bool
	// LearnerTimeout is how long the leader's etcdbr lets a learner make no progress (never
	// start, or stop catching up) before it removes it (0: DefaultLearnerTimeout). It must
	// be longer than etcd needs to send the db to a new member.
	LearnerTimeout time.Duration
}

// ClusterEndpoints returns the client endpoints of this member's peers: given
// (--cluster-endpoints) without this member's own client URLs, or else told from the
// --initial-cluster peer URLs (membership.DefaultEndpoints: port 2380 to 2379); nil for a
// single member. It fails when the initial cluster names several members on other ports
// and none were given: the error names --cluster-endpoints.
func ClusterEndpoints(cfg *embed.Config, given []string) ([]string, error) {
	var own []string
	for _, u := range append(append([]url.URL{}, cfg.AdvertiseClientUrls...), cfg.ListenClientUrls...) {
		own = append(own, u.String())
	}
	for _, ep := range given {
		u, err := url.Parse(ep)
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			return nil, fmt.Errorf("--cluster-endpoints: %q is not a client URL (http://host:port or https://host:port)", ep)
		}
	}
	if len(given) > 0 {
		return membership.PeerEndpoints(given, own), nil
	}
	if clusterSize(cfg) < 2 {
		return nil, nil
	}
	eps, err := membership.DefaultEndpoints(cfg.InitialCluster, cfg.Name)
	if err != nil {
		return nil, err
	}
	return membership.PeerEndpoints(eps, own), nil
}

// clusterTLS is the client TLS configuration for the peers' endpoints: nil for plain http.
func clusterTLS(cfg *embed.Config, cc ClusterConfig) (*tls.Config, error) {
	secure := false
	for _, ep := range cc.Endpoints {
		secure = secure || strings.HasPrefix(ep, "https://")
	}
	if !secure {
		return nil, nil
	}
	info := transport.TLSInfo{CertFile: cc.CertFile, KeyFile: cc.KeyFile, TrustedCAFile: cc.CAFile}
	if info.CertFile == "" && info.KeyFile == "" {
		info.CertFile, info.KeyFile = cfg.ClientTLSInfo.CertFile, cfg.ClientTLSInfo.KeyFile
	}
	if info.TrustedCAFile == "" {
		info.TrustedCAFile = cfg.ClientTLSInfo.TrustedCAFile
	}
	if info.CertFile == "" && info.TrustedCAFile == "" {
		// etcd's --auto-tls makes self-signed certificates no CA vouches for; etcd's own
		// peers skip the verification then, and so does this client.
		return &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: cfg.ClientAutoTLS}, nil //nolint:gosec // as etcd's auto TLS
	}
	t, err := info.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("client TLS for the peers (--cluster-cert, --cluster-key, --cluster-ca, or etcd's --cert-file, --key-file, --trusted-ca-file): %w", err)
	}
	return t, nil
}

// joinPeers runs membership.Join for this member of a cluster of several, whose data dir's
// verdict is v, and returns how etcd starts: as configured, or (a join) with
// --initial-cluster-state=existing and the cluster's members now. newCluster is the cluster
// the configuration creates ("" unknown): the store records "this cluster" when it names
// it.
func joinPeers(ctx context.Context, cfg Config, v datadir.Verdict, newCluster string, before beforeChange, lg *slog.Logger) (prepared, error) {
	var prep prepared
	tlsCfg, err := clusterTLS(cfg.Etcd, cfg.Cluster)
	if err != nil {
		return prep, err
	}
	cli, err := membership.NewClient(membership.ClientConfig{Endpoints: cfg.Cluster.Endpoints, TLS: tlsCfg})
	if err != nil {
		return prep, err
	}
	defer cli.Close()
	// The client a full snapshot before a membership change streams through (this member's
	// etcd does not run): any peer, over the network.
	peers, err := clientv3.New(clientv3.Config{Endpoints: cfg.Cluster.Endpoints, TLS: tlsCfg, Logger: zap.NewNop()})
	if err != nil {
		return prep, fmt.Errorf("cluster client: %w", err)
	}
	defer peers.Close()
	snapshotted := false
	jc := membership.JoinConfig{
		Self:          selfOf(cfg.Etcd),
		New:           cfg.Etcd.ClusterState == embed.ClusterStateFlagNew,
		Cluster:       cli,
		ConfigCluster: parseID(newCluster),
		StoreCluster: func(ctx context.Context) (uint64, error) {
			id, ok, err := cfg.Store.ClusterID(ctx)
			if err != nil || !ok {
				return 0, err
			}
			return parseID(id), nil
		},
		MoveAside: func() (string, error) {
			return datadir.MoveAside(cfg.Etcd.Dir, cfg.Etcd.WalDir, time.Now(), lg)
		},
		Log: lg.With("component", "membership"),
		OnStep: func(st membership.Step) {
			if st.Kind == membership.StepJoin {
				failpoint(FailpointBeforeJoin)
			}
		},
		BeforeChange: func(ctx context.Context, st membership.Step) {
			if before != nil && !snapshotted {
				// One full snapshot before the first change serves the next ones of this
				// join: they follow within seconds, and change no key.
				before(ctx, peers, st.Kind.String())
				snapshotted = true
			}
		},
	}
	switch v.State {
	case datadir.StateValid:
		jc.Data = membership.DataValid
		if ids, err := datadir.ReadIDs(cfg.Etcd.Dir, cfg.Etcd.WalDir); err == nil {
			jc.DataMember, jc.DataCluster = parseID(ids.MemberID), parseID(ids.ClusterID)
		}
	case datadir.StateCorrupt:
		jc.Data = membership.DataCorrupt
	case datadir.StateMissing:
		jc.Data = membership.DataMissing
	default:
		return prep, fmt.Errorf("data dir %q: %s (%s)", cfg.Etcd.Dir, v.State, v.Reason)
	}
	out, err := membership.Join(ctx, jc)
	if err != nil {
		return prep, err
	}
	if out.MovedAside != "" {
		lg.Warn("the data dir was moved aside and kept", "path", out.MovedAside)
	}
	lg.Info("membership decided", "start", out.Kind.String(), "reason", out.Reason)
	if out.Kind == membership.OutcomeJoin {
		c := *cfg.Etcd
		c.ClusterState = embed.ClusterStateFlagExisting
		c.InitialCluster = out.InitialCluster
		prep.etcd = &c
		lg.Info("etcd joins the cluster on no data", "member", types.ID(out.MemberID).String(), "initial_cluster", out.InitialCluster)
	}
	return prep, nil
}

// selfOf is this member as its etcd configuration names it.
func selfOf(cfg *embed.Config) membership.Self {
	self := membership.Self{Name: cfg.Name}
	for _, u := range cfg.AdvertisePeerUrls {
		self.PeerURLs = append(self.PeerURLs, u.String())
	}
	return self
}

// parseID parses a member or cluster ID in etcd's hex form (0: not one).
func parseID(s string) uint64 {
	id, err := types.IDFromString(s)
	if err != nil {
		return 0
	}
	return uint64(id)
}

// clusterMembers is how many members this member's cluster has: the configuration's count
// (--initial-cluster, --cluster-endpoints), or the running etcd's member list when larger
// (kubeadm's first control-plane node names only itself in --initial-cluster).
func (s *Supervisor) clusterMembers() int {
	s.mu.Lock()
	e := s.etcd
	s.mu.Unlock()
	n := s.members
	if e != nil {
		n = max(n, len(e.Server().Cluster().Members()))
	}
	return n
}

// FailpointBeforeJoin is a failpoint for crash tests: with the environment variable
// ETCDBR_FAILPOINT set to it, the process kills itself with SIGKILL once this member's entry
// is in the cluster (a learner added) and before etcd starts on it. Never set it outside
// tests.
const FailpointBeforeJoin = "membership-before-join"

// failpoint kills the process when the failpoint name is armed (ETCDBR_FAILPOINT).
func failpoint(name string) {
	if os.Getenv("ETCDBR_FAILPOINT") != name {
		return
	}
	if p, err := os.FindProcess(os.Getpid()); err == nil {
		_ = p.Kill() // SIGKILL: no deferred function runs
	}
	select {} // the signal is on its way
}

// rejoined is called when etcd stopped with err in Run: in a cluster of several members,
// etcd stops itself once this member was removed from the cluster (by a person, or by the
// leader's etcdbr for a learner that made no progress). It checks the data dir again and
// asks the peers (validate, membership.Join): when this member is no longer in the cluster,
// the data dir is moved aside (kept), the member joins again as a learner, and rejoined
// reports true (Run starts etcd again). Otherwise the error stands.
func (s *Supervisor) rejoined(ctx context.Context, err error) bool {
	if s.clusterMembers() < 2 || len(s.cfg.Cluster.Endpoints) == 0 {
		return false
	}
	s.lg.Warn("etcd stopped; asking the peers whether this member is still in the cluster", "err", err)
	s.setState(StateValidating)
	s.startCfg = s.cfg.Etcd
	if _, verr := s.validate(ctx); verr != nil {
		s.lg.Error("could not check the data dir and the membership again", "err", verr)
		return false
	}
	if s.startCfg == s.cfg.Etcd {
		return false // still a member (or its peers cannot tell): the failure is etcd's own
	}
	s.lg.Warn("this member had been removed from the cluster: it joined again as a learner, and etcd starts on no data")
	return true
}
