package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/client/pkg/v3/types"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/membership"
	"go.uber.org/zap"

	"github.com/etcdbr/etcdbr/backup"
	"github.com/etcdbr/etcdbr/embedded"
	"github.com/etcdbr/etcdbr/internal/embeddedtest"
	"github.com/etcdbr/etcdbr/snapstore"
)

// The quorum rule: a known leader, and either the linearizable read or a majority of the
// voters answering with a leader.
func TestClusterQuorumRule(t *testing.T) {
	voter := func(id types.ID, name string) *membership.Member {
		return &membership.Member{ID: id, Attributes: membership.Attributes{Name: name}}
	}
	learner := &membership.Member{ID: 4, RaftAttributes: membership.RaftAttributes{IsLearner: true}, Attributes: membership.Attributes{Name: "m3"}}
	members := []*membership.Member{voter(1, "m0"), voter(2, "m1"), voter(3, "m2"), learner}
	up := memberStatus{answered: true, leader: 1}
	down := memberStatus{err: "connection refused"}
	for _, tc := range []struct {
		name   string
		leader types.ID
		read   readResult
		status map[types.ID]memberStatus
		want   bool
		why    string
	}{
		{"the read completed", 1, readResult{ok: true, took: time.Millisecond}, map[types.ID]memberStatus{1: up, 2: down, 3: down},
			true, "a linearizable read through this member took 1ms"},
		{"a majority answers, the read waits", 1, readResult{err: "context deadline exceeded"}, map[types.ID]memberStatus{1: up, 2: up, 3: down, 4: up},
			true, "2 of 3 voters answer with a leader (a quorum is 2); members answering: m0, m1, m3"},
		{"a learner does not count", 1, readResult{err: "context deadline exceeded"}, map[types.ID]memberStatus{1: up, 2: down, 3: down, 4: up},
			false, "did not complete within 5s (context deadline exceeded), and 1 of 3 voters answer with a leader"},
		{"no leader known", 0, readResult{err: "this member knows no leader"}, map[types.ID]memberStatus{1: {answered: true}, 2: up, 3: up},
			false, "this member knows no leader; 2 of 3 voters answer with a leader"},
		{"answers refused are not counted", 1, readResult{err: "timeout"},
			map[types.ID]memberStatus{1: up, 2: {answered: true, err: "etcdserver: user name is empty", leader: 1}, 3: down},
			false, "1 of 3 voters answer with a leader (a quorum is 2); members answering: m0, m1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &clusterProbe{self: 1, leader: tc.leader, members: members, read: tc.read, status: tc.status}
			got, why := p.quorum()
			assert.Equal(t, tc.want, got, why)
			assert.Contains(t, why, tc.why)
		})
	}
}

// A member that had quorum and lost its leader keeps the quorum for electionGrace: an election.
func TestClusterQuorumElectionGrace(t *testing.T) {
	now := time.Now()
	members := []*membership.Member{{ID: 1, Attributes: membership.Attributes{Name: "m0"}}, {ID: 2, Attributes: membership.Attributes{Name: "m1"}},
		{ID: 3, Attributes: membership.Attributes{Name: "m2"}}}
	p := &clusterProbe{self: 1, members: members, at: now, read: readResult{err: "this member knows no leader"},
		status: map[types.ID]memberStatus{1: {answered: true}, 2: {answered: true}, 3: {answered: true}}}
	q, why := judgeQuorum(p, true, now.Add(-time.Second))
	assert.True(t, q)
	assert.Contains(t, why, "an election, as long as it takes less than 5s; 0 of 3 voters answer with a leader")
	q, why = judgeQuorum(p, true, now.Add(-electionGrace))
	assert.False(t, q)
	assert.Contains(t, why, "this member knows no leader; 0 of 3 voters answer")
	q, _ = judgeQuorum(p, false, now.Add(-time.Second))
	assert.False(t, q, "no quorum before: none now")
}

// The voter readiness check and the members' health: a learner is never ready, a voter once a
// read through it completed since its etcd started, and not while the last one did not; the
// other members' health comes from their answers and their lag behind the leader.
func TestClusterCaughtUpAndHealth(t *testing.T) {
	self := &membership.Member{ID: 2, Attributes: membership.Attributes{Name: "m1"}}
	leader := &membership.Member{ID: 1, Attributes: membership.Attributes{Name: "m0"}}
	far := &membership.Member{ID: 3, Attributes: membership.Attributes{Name: "m2"}}
	unstarted := &membership.Member{ID: 5, RaftAttributes: membership.RaftAttributes{IsLearner: true, PeerURLs: []string{"http://x:2380"}}}
	status := map[types.ID]memberStatus{
		1: {answered: true, leader: 1, committed: 5000, applied: 5000},
		2: {answered: true, leader: 1, committed: 4990, applied: 4990},
		3: {answered: true, leader: 1, committed: 1000, applied: 900},
		5: {err: "it has no client URL: its etcd has not started yet"},
	}
	probe := func(read readResult, members ...*membership.Member) *clusterProbe {
		return &clusterProbe{self: 2, leader: 1, members: members, read: read, status: status, at: time.Now()}
	}
	ok, timeout := readResult{ok: true, took: 2 * time.Millisecond}, readResult{err: "context deadline exceeded", took: readTimeout}
	learnerSelf := &membership.Member{ID: 2, RaftAttributes: membership.RaftAttributes{IsLearner: true}, Attributes: membership.Attributes{Name: "m1"}}

	for _, tc := range []struct {
		name string
		v    clusterView
		ok   bool
		msg  string
	}{
		{"not probed yet", clusterView{}, false, "has not caught up with the leader since etcd started: the cluster was not probed yet"},
		{"a learner", clusterView{probe: probe(ok, leader, learnerSelf), caughtUp: time.Now()}, false,
			"this member is a learner: it takes no part in the quorum and is not ready until a voter promotes it (its applied index trails the leader's committed index by 10 entries)"},
		{"no read completed since start", clusterView{probe: probe(timeout, leader, self)}, false,
			"has not caught up with the leader since etcd started: no linearizable read through it has completed within 5s yet (context deadline exceeded)"},
		{"behind", clusterView{probe: probe(timeout, leader, self), caughtUp: time.Now()}, false,
			"this member is behind: a linearizable read through it did not complete within 5s"},
		{"caught up", clusterView{probe: probe(ok, leader, self), caughtUp: time.Now()}, true, "this member is a voter and has caught up with the leader"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := caughtUpCheck(tc.v)
			assert.Equal(t, checkVoter, c.Name)
			assert.Equal(t, tc.ok, c.OK, c.Message)
			assert.Contains(t, c.Message, tc.msg)
		})
	}

	p := probe(ok, leader, self, far, unstarted)
	for m, want := range map[*membership.Member]string{leader: MemberHealthy, self: MemberHealthy, far: MemberBehind, unstarted: MemberUnstarted} {
		assert.Equal(t, want, memberHealth(p, m, true), memberName(m))
	}
	assert.Equal(t, MemberBehind, memberHealth(p, self, false))
	p.status = map[types.ID]memberStatus{1: {answered: true, leader: 1}, 3: {err: "connection refused"}}
	assert.Equal(t, MemberUnreachable, memberHealth(p, far, true))
	assert.Equal(t, MemberUnknown, memberHealth(p, self, true), "not probed")
	p.status[3] = memberStatus{answered: true}
	assert.Equal(t, MemberNoLeader, memberHealth(p, far, true))
}

// clusterMember is one Supervisor of an in-process cluster.
type clusterMember struct {
	t    *testing.T
	name string
	s    *Supervisor
	etcd *embed.Config
	url  string // the API's base URL
	log  *embeddedtest.SyncBuffer
	stop func()
}

// clusterConfigs returns the etcd configurations of n members named m0.. that form one new
// cluster.
func clusterConfigs(t *testing.T, n int) []*embed.Config {
	var cfgs []*embed.Config
	var initial []string
	for i := range n {
		cfg := embeddedtest.NewConfig(t)
		cfg.Name = fmt.Sprintf("m%d", i)
		cfg.InitialClusterToken = "etcdbr-" + strings.ReplaceAll(t.Name(), "/", "-")
		cfgs = append(cfgs, cfg)
		initial = append(initial, cfg.Name+"="+cfg.AdvertisePeerUrls[0].String())
	}
	for _, cfg := range cfgs {
		cfg.InitialCluster = strings.Join(initial, ",")
	}
	return cfgs
}

// startMember runs a Supervisor of cfg with the store at storeURL and the API on a free
// loopback port, until the test ends or stop is called.
func startMember(t *testing.T, cfg *embed.Config, storeURL string) *clusterMember {
	t.Helper()
	store, err := snapstore.Open(context.Background(), storeURL, snapstore.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { store.Close() })
	sched, err := backup.ParseSchedule("@daily")
	require.NoError(t, err)
	logs := &embeddedtest.SyncBuffer{}
	s, err := New(Config{Etcd: cfg, Store: store, Schedule: sched, DeltaPeriod: time.Second, API: APIConfig{Listen: "127.0.0.1:0"},
		Log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	m := &clusterMember{t: t, name: cfg.Name, s: s, etcd: cfg, log: logs}
	stopped := false
	m.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			assert.NoError(t, err, "member %s", cfg.Name)
		case <-time.After(2 * time.Minute):
			t.Errorf("member %s: Run did not return after its context ended", cfg.Name)
		}
	}
	t.Cleanup(func() {
		m.stop()
		if t.Failed() {
			t.Logf("log of member %s:\n%s", cfg.Name, logs.String())
		}
	})
	waitWithin(t, "the API of "+cfg.Name, time.Minute, func() bool { return s.APIAddr() != "" })
	m.url = "http://" + s.APIAddr()
	return m
}

// ready asks the member's /readyz, without the backup check (only the leader backs up, and
// the store is not what these tests are about).
func (m *clusterMember) ready() (int, readyAnswer) {
	m.t.Helper()
	var ans readyAnswer
	code := getJSON(m.t, m.url+"/readyz?exclude=backup", &ans)
	return code, ans
}

// metric reads g as a scrape of /metrics would: after bringing the metrics up to date.
func (m *clusterMember) metric(g prometheus.Collector) float64 {
	m.s.refresh(time.Now())
	return testutil.ToFloat64(g)
}

// waitWithin polls cond until it holds, or fails the test after timeout.
func waitWithin(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// getJSON GETs url and decodes its JSON answer into out; it returns the status code.
func getJSON(t *testing.T, url string, out any) int {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.NoError(t, json.NewDecoder(resp.Body).Decode(out), url)
	return resp.StatusCode
}

// membersOf is the cluster's members in st as "name=role" (with "*" after the leader's).
func membersOf(st Status) string {
	if st.Cluster == nil {
		return ""
	}
	var out []string
	for _, m := range st.Cluster.Members {
		s := m.Name + "=" + m.Role
		if m.IsLeader {
			s += "*"
		}
		out = append(out, s)
	}
	return strings.Join(out, " ")
}

// A cluster of three Supervisors with embedded etcd: every member shows the same members,
// their roles and one leader, a size of 3 and quorum. A fourth member added as a learner is
// a learner on every member's status and not ready (the reason names it) until it is
// promoted; then it is ready. With two of the four voters stopped, the others see no quorum:
// /readyz fails saying so, and etcdbr_cluster_quorum is 0.
func TestClusterRolesQuorumAndLearner(t *testing.T) {
	storeURL := "file://" + t.TempDir()
	cfgs := clusterConfigs(t, 4)
	for _, cfg := range cfgs[:3] { // the fourth is added later, as a learner
		cfg.InitialCluster = strings.Join(strings.Split(cfg.InitialCluster, ",")[:3], ",")
	}
	var members []*clusterMember
	for _, cfg := range cfgs[:3] {
		members = append(members, startMember(t, cfg, storeURL))
	}
	sameView := func(what, want string, check func(st Status) bool) {
		t.Helper()
		waitWithin(t, what, 2*time.Minute, func() bool {
			for _, m := range members {
				st := m.s.Status()
				if membersOf(st) == "" || !check(st) {
					return false
				}
				if got := strings.ReplaceAll(membersOf(st), "*", ""); got != want {
					return false
				}
			}
			leaders := map[string]bool{}
			for _, m := range members {
				for _, cm := range m.s.Status().Cluster.Members {
					if cm.IsLeader {
						leaders[cm.Name] = true
					}
				}
			}
			return len(leaders) == 1
		})
	}
	sameView("three voters, one leader, and quorum on every member", "m0=voter m1=voter m2=voter", func(st Status) bool {
		c := st.Cluster
		return c.Size == 3 && c.Voters == 3 && c.Learners == 0 && c.Quorum != nil && *c.Quorum && c.Answering == 3 && st.Etcd.Role == RoleVoter
	})
	for _, m := range members {
		waitWithin(t, m.name+" to be ready", time.Minute, func() bool { code, _ := m.ready(); return code == http.StatusOK })
		st := m.s.Status()
		for _, cm := range st.Cluster.Members {
			assert.Equal(t, MemberHealthy, cm.Health, "%s on %s: %+v", cm.Name, m.name, cm)
			assert.Equal(t, cm.Name == m.name, cm.Self)
		}
		assert.Equal(t, 3.0, m.metric(m.s.metrics.clusterMembers.WithLabelValues(RoleVoter)))
		assert.Equal(t, 1.0, m.metric(m.s.metrics.clusterQuorum))
	}

	// A learner: added through etcd's API, then started as an existing member.
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{cfgs[0].AdvertiseClientUrls[0].String()}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	require.NoError(t, err)
	t.Cleanup(func() { cli.Close() })
	ctx := context.Background()
	var added *clientv3.MemberAddResponse
	waitWithin(t, "etcd to add the learner", time.Minute, func() bool {
		// etcd adds a member once every voter was connected for 5 s (ErrUnhealthy before).
		added, err = cli.MemberAddAsLearner(ctx, []string{cfgs[3].AdvertisePeerUrls[0].String()})
		if err != nil && !errors.Is(err, rpctypes.ErrUnhealthy) {
			t.Fatalf("add the learner: %v", err)
		}
		return err == nil
	})
	sameView("the learner added, not started, on every member", "m0=voter m1=voter m2=voter =learner", func(st Status) bool {
		c := st.Cluster
		return c.Size == 4 && c.Learners == 1 && c.Members[3].Health == MemberUnstarted
	})
	cfgs[3].ClusterState = embed.ClusterStateFlagExisting
	learner := startMember(t, cfgs[3], storeURL)
	members = append(members, learner)
	sameView("the learner as a learner on every member", "m0=voter m1=voter m2=voter m3=learner", func(st Status) bool {
		c := st.Cluster
		return c.Size == 4 && c.Voters == 3 && c.Learners == 1 && c.Members[3].LearnerSince != nil
	})
	code, ans := learner.ready()
	require.Equal(t, http.StatusServiceUnavailable, code, "%+v", ans)
	assert.Contains(t, ans.Failed, "voter: this member is a learner")
	assert.Equal(t, RoleLearner, learner.s.Status().Etcd.Role)
	assert.Equal(t, 1.0, learner.metric(learner.s.metrics.etcdLearner))
	assert.Equal(t, 1.0, members[0].metric(members[0].s.metrics.clusterMembers.WithLabelValues(RoleLearner)))

	// Promoted once etcd finds it caught up: then it is ready, and a voter everywhere.
	waitWithin(t, "etcd to promote the learner", 2*time.Minute, func() bool {
		_, err := cli.MemberPromote(ctx, added.Member.ID)
		if err != nil && !errors.Is(err, rpctypes.ErrMemberLearnerNotReady) {
			t.Logf("promote: %v", err)
		}
		return err == nil
	})
	sameView("the promoted member as a voter on every member", "m0=voter m1=voter m2=voter m3=voter", func(st Status) bool {
		return st.Cluster.Voters == 4 && st.Cluster.Learners == 0
	})
	waitWithin(t, "the promoted member to be ready", time.Minute, func() bool { code, _ := learner.ready(); return code == http.StatusOK })
	assert.Equal(t, 0.0, learner.metric(learner.s.metrics.etcdLearner))
	assert.Contains(t, learner.log.String(), "this member's role changed")
	assert.Contains(t, members[0].log.String(), "a member's role changed")

	// Two of the four voters stop: the other two see no quorum.
	members[1].stop()
	members[2].stop()
	for _, m := range []*clusterMember{members[0], learner} {
		waitWithin(t, m.name+" to see no quorum", time.Minute, func() bool {
			st := m.s.Status()
			return st.Cluster != nil && st.Cluster.Quorum != nil && !*st.Cluster.Quorum
		})
		code, ans := m.ready()
		assert.Equal(t, http.StatusServiceUnavailable, code)
		assert.Contains(t, ans.Failed, "etcd: ")
		assert.Regexp(t, "no leader|no quorum", ans.Failed)
		waitWithin(t, m.name+"'s quorum metric to be 0", time.Minute, func() bool {
			return m.metric(m.s.metrics.clusterQuorum) == 0
		})
		assert.Contains(t, m.log.String(), "the cluster lost its quorum")
		st := m.s.Status()
		assert.Equal(t, 2, st.Cluster.Answering, "%+v", st.Cluster)
		for _, cm := range st.Cluster.Members {
			if cm.Name == "m1" || cm.Name == "m2" {
				assert.Equal(t, MemberUnreachable, cm.Health, "%+v", cm)
			}
		}
	}
}

// The cluster prober asks a member whose client URL takes only TLS with client certificates
// (kubeadm's etcd) for its status with etcd's own client TLS settings; without them the
// member is unreachable.
func TestMemberStatusClientCertificates(t *testing.T) {
	t.Parallel()
	cfg := embeddedtest.NewConfig(t)
	pki := embeddedtest.NewPKI(t)
	u := url.URL{Scheme: "https", Host: cfg.ListenClientUrls[0].Host}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{u}, []url.URL{u}
	cfg.ClientTLSInfo = transport.TLSInfo{CertFile: pki.ServerCert, KeyFile: pki.ServerKey, TrustedCAFile: pki.CA, ClientCertAuth: true}
	e := embeddedtest.MustStart(t, embedded.Start, cfg)
	m := &membership.Member{ID: e.Server().MemberID(), Attributes: membership.Attributes{Name: cfg.Name, ClientURLs: []string{u.String()}}}
	ctx := context.Background()

	clients := newMemberClients(cfg.ClientTLSInfo, false)
	defer clients.close()
	st := clients.status(ctx, m)
	require.True(t, st.known(), "%+v", st)
	assert.Equal(t, e.Server().MemberID(), st.leader)
	assert.Positive(t, st.applied)

	plain := newMemberClients(transport.TLSInfo{}, false) // no TLS settings
	defer plain.close()
	st = plain.status(ctx, m)
	assert.False(t, st.answered, "%+v", st)
	assert.NotEmpty(t, st.err)
}
