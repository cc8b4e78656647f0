package membership

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Cluster is the cluster's client API as Join uses it, through the peers' client endpoints
// (this member's own etcd is not running). Client implements it.
type Cluster interface {
	// Probe asks every peer endpoint at once for its status and its own member list
	// (serializable: it answers without a leader), each within ctx.
	Probe(ctx context.Context) []PeerAnswer
	// MemberList reads the member list linearizably, through the endpoints in order: it
	// succeeds only while the cluster has a leader and a quorum.
	MemberList(ctx context.Context, endpoints []string) (clusterID uint64, members []Member, err error)
	// AddLearner adds a learner with peerURLs and returns its entry.
	AddLearner(ctx context.Context, endpoints []string, peerURLs []string) (Member, error)
	// Remove removes member id.
	Remove(ctx context.Context, endpoints []string, id uint64) error
}

// PeerAnswer is what one peer endpoint answered to Probe.
type PeerAnswer struct {
	Endpoint string
	// Err is why it did not answer (nil: it did); Refused, that it answered but refused
	// this member's client (TLS, authentication, permissions).
	Err     error
	Refused bool
	// What it answered: its member ID, its leader (0: none), its cluster, whether it is a
	// learner, and its member list as it knows it.
	MemberID, Leader, ClusterID uint64
	IsLearner                   bool
	Members                     []Member
}

// ClientConfig configures a Client.
type ClientConfig struct {
	// Endpoints are the peers' client URLs (this member's own left out).
	Endpoints []string
	// TLS is the client TLS configuration for https endpoints (nil: plain, or the system's
	// roots).
	TLS *tls.Config
	// Username and Password authenticate to etcd when its auth is on ("": none).
	Username, Password string
}

// Client is Cluster over clientv3: one client per endpoint, so that each peer answers for
// itself. Close it when done.
type Client struct {
	endpoints []string
	clients   map[string]*clientv3.Client
	tls       *tls.Config
}

var _ Cluster = (*Client)(nil)

// NewClient returns a Client of cfg's endpoints. It does not connect yet.
func NewClient(cfg ClientConfig) (*Client, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("the cluster client has no endpoints")
	}
	c := &Client{endpoints: cfg.Endpoints, clients: map[string]*clientv3.Client{}, tls: cfg.TLS}
	for _, ep := range cfg.Endpoints {
		cli, err := clientv3.New(clientv3.Config{
			Endpoints: []string{ep},
			TLS:       cfg.TLS,
			Username:  cfg.Username,
			Password:  cfg.Password,
			Logger:    zap.NewNop(),
			// No dial timeout: the dial does not block; each call is bounded by its context.
			DialKeepAliveTime:    10 * time.Second,
			DialKeepAliveTimeout: 5 * time.Second,
		})
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("cluster client of %s: %w", ep, err)
		}
		c.clients[ep] = cli
	}
	return c, nil
}

// Endpoints returns the client's endpoints.
func (c *Client) Endpoints() []string { return c.endpoints }

// Close closes the clients.
func (c *Client) Close() error {
	var errs []error
	for _, cli := range c.clients {
		errs = append(errs, cli.Close())
	}
	return errors.Join(errs...)
}

// Probe implements Cluster.
func (c *Client) Probe(ctx context.Context) []PeerAnswer {
	answers := make([]PeerAnswer, len(c.endpoints))
	var wg sync.WaitGroup
	for i, ep := range c.endpoints {
		wg.Go(func() { answers[i] = c.probe(ctx, ep) })
	}
	wg.Wait()
	return answers
}

// probe asks one endpoint.
func (c *Client) probe(ctx context.Context, ep string) PeerAnswer {
	a := PeerAnswer{Endpoint: ep}
	cli := c.clients[ep]
	st, err := cli.Status(ctx, ep)
	if err != nil {
		a.Err, a.Refused = fmt.Errorf("%s: %w", ep, err), refused(err)
		if terr := c.checkTLS(ep); terr != nil {
			// gRPC waits for a connection until the deadline and says only that; the
			// handshake says why.
			a.Err, a.Refused = fmt.Errorf("%s: %w", ep, terr), true
		}
		return a
	}
	a.MemberID, a.Leader, a.ClusterID, a.IsLearner = st.Header.MemberId, st.Leader, st.Header.ClusterId, st.IsLearner
	if st.IsLearner {
		return a // a learner serves no member list
	}
	list, err := cli.MemberList(ctx, clientv3.WithSerializable())
	if err != nil {
		a.Err, a.Refused = fmt.Errorf("%s: member list: %w", ep, err), refused(err)
		return a
	}
	a.Members = members(list.Members)
	return a
}

// checkTLS makes a TLS connection to an https endpoint and reads from it briefly: it
// returns the error of a handshake the peer refused (no client certificate, a certificate it
// does not trust, one this client does not trust), and nil otherwise (plain http, no
// answer at all, or a handshake that worked).
func (c *Client) checkTLS(ep string) error {
	u, err := url.Parse(ep)
	if err != nil || u.Scheme != "https" || c.tls == nil {
		return nil
	}
	cfg := c.tls.Clone()
	cfg.NextProtos = []string{"h2"}
	if cfg.ServerName == "" {
		cfg.ServerName = u.Hostname()
	}
	d := &net.Dialer{Timeout: time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", u.Host, cfg)
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		return nil // nobody listens: no answer, not a refusal
	}
	if err != nil {
		return fmt.Errorf("TLS handshake: %w", err)
	}
	defer conn.Close()
	// TLS 1.3 servers refuse a client certificate after the handshake: the alert comes
	// with the first read.
	_ = conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := conn.Read(make([]byte, 1)); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) && strings.Contains(err.Error(), "tls:") {
		return fmt.Errorf("TLS: %w", err)
	}
	return nil
}

// MemberList implements Cluster.
func (c *Client) MemberList(ctx context.Context, endpoints []string) (uint64, []Member, error) {
	var errs []error
	for _, ep := range c.order(endpoints) {
		resp, err := c.clients[ep].MemberList(ctx)
		if err == nil {
			return resp.Header.ClusterId, members(resp.Members), nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", ep, err))
		if ctx.Err() != nil {
			break
		}
	}
	return 0, nil, fmt.Errorf("read the member list linearizably: %w", errors.Join(errs...))
}

// AddLearner implements Cluster.
func (c *Client) AddLearner(ctx context.Context, endpoints []string, peerURLs []string) (Member, error) {
	var m Member
	err := c.each(ctx, endpoints, func(cli *clientv3.Client) error {
		resp, err := cli.MemberAddAsLearner(ctx, peerURLs)
		if err == nil {
			m = members([]*etcdserverpb.Member{resp.Member})[0]
		}
		return err
	})
	if err != nil {
		return Member{}, fmt.Errorf("add a learner with peer URLs %v: %w", peerURLs, err)
	}
	return m, nil
}

// Remove implements Cluster.
func (c *Client) Remove(ctx context.Context, endpoints []string, id uint64) error {
	err := c.each(ctx, endpoints, func(cli *clientv3.Client) error {
		_, err := cli.MemberRemove(ctx, id)
		return err
	})
	if err != nil {
		return fmt.Errorf("remove member %x: %w", id, err)
	}
	return nil
}

// each calls f with the client of each endpoint in order until one answers: etcd's own
// answer (a refusal included) is returned at once, a peer that does not answer passes the
// call on to the next.
func (c *Client) each(ctx context.Context, endpoints []string, f func(*clientv3.Client) error) error {
	var errs []error
	for _, ep := range c.order(endpoints) {
		err := f(c.clients[ep])
		if err == nil || isEtcdAnswer(err) {
			return err
		}
		errs = append(errs, fmt.Errorf("%s: %w", ep, err))
		if ctx.Err() != nil {
			break
		}
	}
	return errors.Join(errs...)
}

// order is endpoints (those known to answer, first), then the client's others.
func (c *Client) order(endpoints []string) []string {
	out := make([]string, 0, len(c.endpoints))
	seen := map[string]bool{}
	for _, ep := range append(append([]string{}, endpoints...), c.endpoints...) {
		if _, ok := c.clients[ep]; ok && !seen[ep] {
			seen[ep] = true
			out = append(out, ep)
		}
	}
	return out
}

// members converts etcd's member list.
func members(ms []*etcdserverpb.Member) []Member {
	out := make([]Member, 0, len(ms))
	for _, m := range ms {
		out = append(out, Member{ID: m.ID, Name: m.Name, PeerURLs: m.PeerURLs, ClientURLs: m.ClientURLs, IsLearner: m.IsLearner})
	}
	return out
}

// refused reports whether err says that the peer answered but refused the client: a
// failed TLS handshake, no authentication or no permission.
func refused(err error) bool {
	if s, ok := status.FromError(err); ok {
		switch s.Code() {
		case codes.Unauthenticated, codes.PermissionDenied:
			return true
		}
	}
	for _, auth := range []error{rpctypes.ErrGRPCPermissionDenied, rpctypes.ErrGRPCUserEmpty, rpctypes.ErrGRPCInvalidAuthToken, rpctypes.ErrGRPCAuthFailed} {
		if is(err, auth) {
			return true
		}
	}
	msg := err.Error()
	return strings.Contains(msg, "handshake") || strings.Contains(msg, "tls:") || strings.Contains(msg, "x509")
}

// isEtcdAnswer reports whether err is etcd's own answer to a request (an rpctypes error),
// rather than a peer that could not be reached.
func isEtcdAnswer(err error) bool {
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		return ee.Code() != codes.Unavailable && ee.Code() != codes.DeadlineExceeded
	}
	return false
}

// etcd's answers to membership changes that are states rather than failures.
var (
	errMemberNotFound   = rpctypes.ErrGRPCMemberNotFound
	errPeerURLExist     = rpctypes.ErrGRPCPeerURLExist
	errMemberExist      = rpctypes.ErrGRPCMemberExist
	errTooManyLearners  = rpctypes.ErrGRPCTooManyLearners
	errLearnerNotReady  = rpctypes.ErrGRPCLearnerNotReady
	errMemberNotLearner = rpctypes.ErrGRPCMemberNotLearner
)

// is reports whether err is etcd's answer want (a gRPC status error or its client-side
// rpctypes error), wrapped or not.
func is(err, want error) bool {
	return err != nil && strings.Contains(err.Error(), rpctypes.ErrorDesc(want))
}

// IsMemberNotFound reports whether err is etcd's "member not found": removed already.
func IsMemberNotFound(err error) bool { return is(err, errMemberNotFound) }

// IsLearnerNotReady reports whether err is etcd's refusal to promote a learner that is
// still behind the leader.
func IsLearnerNotReady(err error) bool { return is(err, errLearnerNotReady) }

// IsMemberNotLearner reports whether err is etcd's refusal to promote a voter: promoted
// already.
func IsMemberNotLearner(err error) bool { return is(err, errMemberNotLearner) }

// IsExists reports whether err is etcd's "peer URL exists" or "member exists": this
// member's entry is there already.
func IsExists(err error) bool { return is(err, errPeerURLExist) || is(err, errMemberExist) }

// IsNotReadyForChange reports whether err is etcd's refusal of a membership change that
// would put the quorum at risk now ("unhealthy cluster": a voter connected to the others
// less than 5 s ago; "not enough started members"): a state that passes.
func IsNotReadyForChange(err error) bool {
	return is(err, rpctypes.ErrGRPCUnhealthy) || is(err, rpctypes.ErrGRPCMemberNotEnoughStarted)
}

// IsTooManyLearners reports whether err is etcd's "too many learners": another member holds
// the learner slot.
func IsTooManyLearners(err error) bool { return is(err, errTooManyLearners) }
