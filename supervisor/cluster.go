package supervisor

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/types"
	"go.etcd.io/etcd/server/v3/etcdserver/api/membership"

	"github.com/etcdbr/etcdbr/embedded"
)

// What etcdbr tells of the etcd cluster its member belongs to (docs/api.md, "The cluster"):
// every member's role, whether the cluster has quorum, and whether this member has caught up
// with the leader. The cluster prober (probeCluster, cluster_probe.go) gathers the evidence
// every clusterProbeInterval; the rules that judge it are the pure functions below.

// The bounds of the cluster probe.
const (
	// clusterProbeInterval is how often the cluster prober looks at the cluster while etcd
	// serves (and at once when etcd starts).
	clusterProbeInterval = time.Second
	// readTimeout bounds the linearizable read through this member: a read that takes
	// longer says that this member is behind, or that the cluster has no quorum.
	readTimeout = 5 * time.Second
	// memberStatusTimeout bounds the status request to each other member.
	memberStatusTimeout = 2 * time.Second
	// maxLagEntries: a member whose applied index trails the leader's committed index by
	// more raft entries is behind (in the members table).
	maxLagEntries = 1000
	// electionGrace is how long a member that had quorum may know no leader before the
	// quorum is judged lost: an election after a leader was lost or stepped down takes an
	// election timeout or two (1 s each by default).
	electionGrace = 5 * time.Second
)

// The roles of a member in etcd's membership (ClusterMember.Role, EtcdStatus.Role).
const (
	// RoleVoter: the member votes in elections and counts for the quorum.
	RoleVoter = "voter"
	// RoleLearner: the member receives the log but neither votes nor counts for the
	// quorum, until a voter promotes it.
	RoleLearner = "learner"
)

// The health of a member as this member's last cluster probe found it (ClusterMember.Health).
const (
	// MemberHealthy: it answered, knows a leader, and has caught up with the leader.
	MemberHealthy = "healthy"
	// MemberBehind: it answered, but its applied index trails the leader's committed index
	// by more than maxLagEntries (this member: it has not caught up: the voter readiness
	// check says why).
	MemberBehind = "behind"
	// MemberNoLeader: it answered, but knows no leader.
	MemberNoLeader = "no_leader"
	// MemberUnreachable: it did not answer its status request within memberStatusTimeout.
	MemberUnreachable = "unreachable"
	// MemberUnstarted: it was added to the membership, but its etcd has never started (etcd
	// knows no name for it yet).
	MemberUnstarted = "unstarted"
	// MemberUnknown: not probed yet, or it refused the status request (the error says why).
	MemberUnknown = "unknown"
)

// clusterProbe is what one probe of the cluster found, from the etcd it probed.
type clusterProbe struct {
	etcd    *embedded.Etcd // the etcd probed
	at      time.Time      // when the probe ended
	self    types.ID       // this member
	leader  types.ID       // the leader this member knew at the end of the probe (0: none)
	members []*membership.Member
	// read is the linearizable read through this member (etcd's ReadIndex: the leader
	// confirms with a quorum of voters that it still leads and names its committed index;
	// the read completes once this member has applied up to that index).
	read readResult
	// status is what each member answered (this member's from its own etcd), by ID.
	status map[types.ID]memberStatus
}

// readResult is the outcome of the linearizable read through this member.
type readResult struct {
	ok   bool          // it completed within readTimeout
	took time.Duration // how long it took, or waited
	err  string        // why it did not complete ("" when ok)
}

// memberStatus is what a member answered to the status request.
type memberStatus struct {
	answered bool   // its etcd answered (maybe with an error: err)
	err      string // why it did not answer, or its error
	leader   types.ID
	learner  bool
	// committed and applied are its raft indexes: the newest committed entry it knows of
	// and the newest it applied.
	committed, applied uint64
}

// known reports whether the member answered its status (without an error).
func (m memberStatus) known() bool { return m.answered && m.err == "" }

// isLeader reports whether this member led at the end of the probe.
func (p *clusterProbe) isLeader() bool { return p.leader != 0 && p.leader == p.self }

// member returns the member with id (nil: not in the membership).
func (p *clusterProbe) member(id types.ID) *membership.Member {
	for _, m := range p.members {
		if m.ID == id {
			return m
		}
	}
	return nil
}

// learner reports whether this member is a learner.
func (p *clusterProbe) learner() bool {
	m := p.member(p.self)
	return m != nil && m.IsLearner
}

// voters returns the IDs of the voting members.
func (p *clusterProbe) voters() []types.ID {
	var ids []types.ID
	for _, m := range p.members {
		if !m.IsLearner {
			ids = append(ids, m.ID)
		}
	}
	return ids
}

// answering returns the members that answered the status request (this member always does).
func (p *clusterProbe) answering() []*membership.Member {
	var out []*membership.Member
	for _, m := range sortedMembers(p.members) {
		if p.status[m.ID].answered {
			out = append(out, m)
		}
	}
	return out
}

// leaderCommitted is the leader's committed index: this member's own when it leads, else
// what the leader answered (ok false when unknown).
func (p *clusterProbe) leaderCommitted() (uint64, bool) {
	if p.leader == 0 {
		return 0, false
	}
	st, ok := p.status[p.leader]
	if !ok || !st.known() {
		return 0, false
	}
	return st.committed, true
}

// lag is how many entries the member's applied index trails the leader's committed index
// (ok false when either is unknown).
func (p *clusterProbe) lag(id types.ID) (uint64, bool) {
	committed, ok := p.leaderCommitted()
	st := p.status[id]
	if !ok || !st.known() {
		return 0, false
	}
	if st.applied >= committed {
		return 0, true
	}
	return committed - st.applied, true
}

// quorum judges whether the cluster has quorum as this member sees it, and says why. It has
// when this member knows a leader and either the linearizable read through this member
// completed within readTimeout (the leader heard from a quorum of voters just now), or a
// majority of the voters answered their status naming a leader (etcd's CheckQuorum: a leader
// that has not heard from a majority for an election timeout steps down, and a follower
// that has not heard from its leader forgets it). The second covers a member whose read
// waits while it applies what it has not yet (a learner catching up).
func (p *clusterProbe) quorum() (bool, string) {
	voters := p.voters()
	withLeader := 0
	for _, id := range voters {
		if st := p.status[id]; st.known() && st.leader != 0 {
			withLeader++
		}
	}
	need := len(voters)/2 + 1
	answers := fmt.Sprintf("%d of %d voters answer with a leader (a quorum is %d); members answering: %s",
		withLeader, len(voters), need, memberNames(p.answering()))
	switch {
	case p.leader == 0:
		return false, "this member knows no leader; " + answers
	case p.read.ok:
		return true, fmt.Sprintf("a linearizable read through this member took %s; %s", p.read.took.Round(time.Millisecond), answers)
	case withLeader >= need:
		return true, answers
	default:
		return false, fmt.Sprintf("a linearizable read through this member did not complete within %s (%s), and %s", readTimeout, p.read.err, answers)
	}
}

// judgeQuorum is the quorum verdict of probe p (clusterProbe.quorum), where a member that
// had quorum (had) and has known no leader since leaderless keeps it for electionGrace: an
// election is under way.
func judgeQuorum(p *clusterProbe, had bool, leaderless time.Time) (bool, string) {
	q, why := p.quorum()
	if p.leader == 0 && had && p.at.Sub(leaderless) < electionGrace {
		return true, fmt.Sprintf("this member has known no leader since %s: an election, as long as it takes less than %s; %s",
			leaderless.UTC().Format(time.RFC3339Nano), electionGrace, strings.TrimPrefix(why, "this member knows no leader; "))
	}
	return q, why
}

// memberNames lists members by name ("(unstarted <id>)" for one that never started).
func memberNames(ms []*membership.Member) string {
	if len(ms) == 0 {
		return "none"
	}
	names := make([]string, 0, len(ms))
	for _, m := range ms {
		names = append(names, memberName(m))
	}
	return strings.Join(names, ", ")
}

// memberName names a member: its name, or "(unstarted <id>)".
func memberName(m *membership.Member) string {
	if m.Name == "" {
		return "(unstarted " + m.ID.String() + ")"
	}
	return m.Name
}

// sortedMembers returns ms by name, the unstarted (no name yet) last, then by ID.
func sortedMembers(ms []*membership.Member) []*membership.Member {
	out := slices.Clone(ms)
	slices.SortFunc(out, func(a, b *membership.Member) int {
		if (a.Name == "") != (b.Name == "") {
			if a.Name == "" {
				return 1
			}
			return -1
		}
		return cmp.Or(strings.Compare(a.Name, b.Name), cmp.Compare(a.ID, b.ID))
	})
	return out
}

// roleOf is the role of m.
func roleOf(m *membership.Member) string {
	if m.IsLearner {
		return RoleLearner
	}
	return RoleVoter
}

// cluster is what this member knows of its etcd cluster beyond its own etcd's state: the last
// probe of the cluster prober, whether this member has caught up with the leader since its
// etcd started, the quorum verdict and since when it holds, and since when each learner has
// been one. The prober (probeCluster, a goroutine of Run) writes it; the status, the
// readiness checks and the metrics read it (view).
//
// New creates it; it lives as long as the Supervisor, with nothing to start or stop.
type cluster struct {
	// mu guards the fields below. When the Supervisor's mutex is held too, it was taken
	// first; nothing else is locked while mu is held.
	mu sync.Mutex
	// probe is the last probe (nil: none of the serving etcd yet).
	probe *clusterProbe
	// caughtUp is when a linearizable read through the probed etcd first completed in time
	// (zero: not yet since that etcd started).
	caughtUp time.Time
	// quorum is the verdict of the last probe, since quorumSince (zero: never judged), and
	// why (judgeQuorum).
	quorum      bool
	quorumSince time.Time
	quorumWhy   string
	// leaderless is since when the probes found no leader (zero: the last found one).
	leaderless time.Time
	// learners are since when each learner of the membership has been one, as this member
	// saw it (from the first probe that found it a learner).
	learners map[types.ID]time.Time
}

// newCluster returns a cluster that knows nothing yet.
func newCluster() *cluster {
	return &cluster{learners: map[types.ID]time.Time{}}
}

// clusterView is a copy of cluster at one moment.
type clusterView struct {
	probe       *clusterProbe
	caughtUp    time.Time
	quorum      bool
	quorumSince time.Time
	quorumWhy   string
	learners    map[types.ID]time.Time
}

// view copies c; a probe of another etcd than e (a previous one) is left out.
func (c *cluster) view(e *embedded.Etcd) clusterView {
	c.mu.Lock()
	defer c.mu.Unlock()
	v := clusterView{quorumSince: c.quorumSince, learners: make(map[types.ID]time.Time, len(c.learners))}
	for id, t := range c.learners {
		v.learners[id] = t
	}
	if c.probe != nil && e != nil && c.probe.etcd == e {
		v.probe, v.caughtUp, v.quorum, v.quorumWhy = c.probe, c.caughtUp, c.quorum, c.quorumWhy
	}
	return v
}

// record keeps probe p as the last, with the quorum verdict it gives and since when each
// learner in it has been one.
func (c *cluster) record(p *clusterProbe) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.probe == nil || c.probe.etcd != p.etcd {
		c.caughtUp = time.Time{} // a new etcd catches up again
	}
	c.probe = p
	if c.caughtUp.IsZero() && (p.read.ok || p.isLeader()) {
		c.caughtUp = p.at
	}
	if p.leader != 0 {
		c.leaderless = time.Time{}
	} else if c.leaderless.IsZero() {
		c.leaderless = p.at
	}
	q, why := judgeQuorum(p, c.quorum && !c.quorumSince.IsZero(), c.leaderless)
	if c.quorumSince.IsZero() || q != c.quorum {
		c.quorumSince = p.at
		if !q && !c.leaderless.IsZero() {
			c.quorumSince = c.leaderless // lost with the leader
		}
	}
	c.quorum, c.quorumWhy = q, why
	seen := map[types.ID]bool{}
	for _, m := range p.members {
		if !m.IsLearner {
			continue
		}
		seen[m.ID] = true
		if _, ok := c.learners[m.ID]; !ok {
			c.learners[m.ID] = p.at
		}
	}
	for id := range c.learners {
		if !seen[id] {
			delete(c.learners, id)
		}
	}
}

// caughtUpCheck judges whether this member is a voter that has caught up with the leader
// (the "voter" readiness check; v is of a serving etcd): the leader has; another voter has
// once a linearizable read through it completed within readTimeout since its etcd started,
// and the last one did; a learner never is.
func caughtUpCheck(v clusterView) Check {
	c := Check{Name: checkVoter}
	p := v.probe
	if p == nil {
		c.Message = "this member has not caught up with the leader since etcd started: the cluster was not probed yet"
		return c
	}
	lag := ""
	if n, ok := p.lag(p.self); ok {
		lag = fmt.Sprintf(" (its applied index trails the leader's committed index by %d entries)", n)
	}
	switch {
	case p.learner():
		c.Message = "this member is a learner: it takes no part in the quorum and is not ready until a voter promotes it" + lag
	case p.isLeader():
		c.OK = true
		c.Message = "this member is a voter and the leader"
	case p.leader == 0:
		c.Message = "this member knows no leader: whether it has caught up cannot be told"
	case v.caughtUp.IsZero():
		c.Message = fmt.Sprintf("this member has not caught up with the leader since etcd started: no linearizable read through it "+
			"has completed within %s yet (%s)%s", readTimeout, p.read.err, lag)
	case !p.read.ok:
		c.Message = fmt.Sprintf("this member is behind: a linearizable read through it did not complete within %s (%s)%s",
			readTimeout, p.read.err, lag)
	default:
		c.OK = true
		c.Message = fmt.Sprintf("this member is a voter and has caught up with the leader: a linearizable read through it took %s",
			p.read.took.Round(time.Millisecond))
	}
	return c
}

// memberHealth is the health of member m as probe p found it; selfCaughtUp is the voter
// readiness check's verdict for this member.
func memberHealth(p *clusterProbe, m *membership.Member, selfCaughtUp bool) string {
	st, probed := p.status[m.ID]
	switch {
	case m.Name == "" && !st.answered:
		return MemberUnstarted
	case !probed:
		return MemberUnknown
	case !st.answered:
		return MemberUnreachable
	case st.err != "":
		return MemberUnknown
	case st.leader == 0:
		return MemberNoLeader
	}
	if m.ID == p.self && !m.IsLearner {
		if selfCaughtUp {
			return MemberHealthy
		}
		return MemberBehind
	}
	if n, ok := p.lag(m.ID); ok && n > maxLagEntries {
		return MemberBehind
	}
	return MemberHealthy
}
