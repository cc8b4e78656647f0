package membership

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/etcdbr/etcdbr/internal/backoff"
)

// clusterFuncs is the test double of Cluster: one function per method.
type clusterFuncs struct {
	probe      func(ctx context.Context) []PeerAnswer
	memberList func(ctx context.Context, endpoints []string) (uint64, []Member, error)
	addLearner func(ctx context.Context, endpoints []string, peerURLs []string) (Member, error)
	remove     func(ctx context.Context, endpoints []string, id uint64) error
}

var _ Cluster = (*clusterFuncs)(nil)

func (c *clusterFuncs) Probe(ctx context.Context) []PeerAnswer { return c.probe(ctx) }
func (c *clusterFuncs) MemberList(ctx context.Context, eps []string) (uint64, []Member, error) {
	return c.memberList(ctx, eps)
}
func (c *clusterFuncs) AddLearner(ctx context.Context, eps []string, urls []string) (Member, error) {
	return c.addLearner(ctx, eps, urls)
}
func (c *clusterFuncs) Remove(ctx context.Context, eps []string, id uint64) error {
	return c.remove(ctx, eps, id)
}

// sim is a cluster with a quorum that answers membership changes as etcd does: a peer URL
// belongs to one member, at most maxLearners learners, removing a member not there is "not
// found". Its funcs are the double Join talks to.
type sim struct {
	mu          sync.Mutex
	members     []Member
	nextID      uint64
	maxLearners int
	quorum      bool
	// after, when set, is called after a change was applied, before it is answered: a
	// crash there loses the answer.
	after func(op string) error
}

func newSim(ms ...Member) *sim {
	return &sim{members: slices.Clone(ms), nextID: 100, maxLearners: 1, quorum: true}
}

func (s *sim) snapshot() []Member {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.members)
}

func (s *sim) funcs() *clusterFuncs {
	return &clusterFuncs{
		probe: func(ctx context.Context) []PeerAnswer {
			s.mu.Lock()
			defer s.mu.Unlock()
			var leader uint64
			if s.quorum {
				leader = 1
			}
			return []PeerAnswer{
				{Endpoint: "http://p1:2379", MemberID: 1, Leader: leader, ClusterID: 100, Members: slices.Clone(s.members)},
				{Endpoint: "http://p2:2379", MemberID: 2, Leader: leader, ClusterID: 100, Members: slices.Clone(s.members)},
			}
		},
		memberList: func(ctx context.Context, eps []string) (uint64, []Member, error) {
			s.mu.Lock()
			defer s.mu.Unlock()
			if !s.quorum {
				return 0, nil, errors.New("context deadline exceeded")
			}
			return 100, slices.Clone(s.members), nil
		},
		addLearner: func(ctx context.Context, eps []string, urls []string) (Member, error) {
			s.mu.Lock()
			learners := 0
			for _, m := range s.members {
				if m.IsLearner {
					learners++
				}
				for _, u := range urls {
					if slices.Contains(m.PeerURLs, u) {
						s.mu.Unlock()
						return Member{}, rpctypes.ErrPeerURLExist
					}
				}
			}
			if learners >= s.maxLearners {
				s.mu.Unlock()
				return Member{}, rpctypes.ErrTooManyLearners
			}
			s.nextID++
			m := Member{ID: s.nextID, PeerURLs: slices.Clone(urls), IsLearner: true}
			s.members = append(s.members, m)
			s.mu.Unlock()
			if s.after != nil {
				if err := s.after("add"); err != nil {
					return Member{}, err
				}
			}
			return m, nil
		},
		remove: func(ctx context.Context, eps []string, id uint64) error {
			s.mu.Lock()
			i := slices.IndexFunc(s.members, func(m Member) bool { return m.ID == id })
			if i < 0 {
				s.mu.Unlock()
				return fmt.Errorf("remove member %x: %w", id, rpctypes.ErrMemberNotFound)
			}
			s.members = slices.Delete(s.members, i, i+1)
			s.mu.Unlock()
			if s.after != nil {
				return s.after("remove")
			}
			return nil
		},
	}
}

// start marks member id started (its etcd published itself) and, if promote, a voter.
func (s *sim) start(id uint64, name string, promote bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.members {
		if s.members[i].ID == id {
			s.members[i].Name = name
			s.members[i].ClientURLs = []string{"http://" + name + ":2379"}
			s.members[i].IsLearner = s.members[i].IsLearner && !promote
		}
	}
}

var fast = backoff.Backoff{Min: time.Millisecond, Max: 5 * time.Millisecond}

// joinCfg is a JoinConfig of self against s, with a data dir in state d that MoveAside
// records moving.
func joinCfg(s *sim, d Data, moved *int) JoinConfig {
	return JoinConfig{
		Self: self, Data: d, New: true, Cluster: s.funcs(), Wait: fast,
		MoveAside: func() (string, error) { *moved++; return fmt.Sprintf("/data.etcdbr-old-%d", *moved), nil },
	}
}

// wantJoined checks that out joins self's one unstarted learner entry and that no stale
// entry of self is left.
func wantJoined(t *testing.T, s *sim, out Outcome) {
	t.Helper()
	require.Equal(t, OutcomeJoin.String(), out.Kind.String(), out.Reason)
	var mine []Member
	for _, m := range s.snapshot() {
		if self.Matches(m) {
			mine = append(mine, m)
		}
	}
	require.Len(t, mine, 1, "this member's entries: %v", mine)
	assert.Equal(t, mine[0].ID, out.MemberID)
	assert.True(t, mine[0].IsLearner)
	assert.False(t, mine[0].Started())
	assert.Equal(t, InitialCluster(s.snapshot(), self, out.MemberID), out.InitialCluster)
	assert.Contains(t, out.InitialCluster, "m3=http://p3:2380")
}

// The whole path, from each data dir state: the stale entry removed, a learner added, and
// the join; a valid dir of a member still in the cluster starts as it is.
func TestJoinPaths(t *testing.T) {
	t.Parallel()
	for _, d := range []Data{DataMissing, DataCorrupt} {
		t.Run(d.String(), func(t *testing.T) {
			t.Parallel()
			s := newSim(m1, m2, m3)
			moved := 0
			out, err := Join(context.Background(), joinCfg(s, d, &moved))
			require.NoError(t, err)
			wantJoined(t, s, out)
			assert.Equal(t, map[Data]int{DataMissing: 0, DataCorrupt: 1}[d], moved)
		})
	}
	t.Run("valid and removed", func(t *testing.T) {
		t.Parallel()
		s := newSim(m1, m2)
		moved := 0
		cfg := joinCfg(s, DataValid, &moved)
		cfg.DataMember, cfg.DataCluster = 3, 100
		out, err := Join(context.Background(), cfg)
		require.NoError(t, err)
		wantJoined(t, s, out)
		assert.Equal(t, 1, moved)
		assert.Equal(t, "/data.etcdbr-old-1", out.MovedAside)
	})
	t.Run("peers of another cluster than the store's", func(t *testing.T) {
		t.Parallel()
		s := newSim(m1, m2, m3)
		moved := 0
		cfg := joinCfg(s, DataCorrupt, &moved)
		cfg.StoreCluster = func(context.Context) (uint64, error) { return 99, nil }
		_, err := Join(context.Background(), cfg)
		assert.ErrorContains(t, err, "--cluster-endpoints and --store")
		assert.Equal(t, 0, moved, "nothing is moved aside")
		assert.Equal(t, []Member{m1, m2, m3}, s.snapshot(), "nothing is changed")
	})
	t.Run("valid and a member", func(t *testing.T) {
		t.Parallel()
		s := newSim(m1, m2, m3)
		moved := 0
		cfg := joinCfg(s, DataValid, &moved)
		cfg.DataMember, cfg.DataCluster = 3, 100
		out, err := Join(context.Background(), cfg)
		require.NoError(t, err)
		assert.Equal(t, OutcomeStart, out.Kind)
		assert.Equal(t, 0, moved)
		assert.Equal(t, []Member{m1, m2, m3}, s.snapshot())
	})
}

// A crash at any point of the replacement (before each step, or after a change was applied
// but before its answer came back), then a new Join from what the crash left, finishes the
// job: one learner entry of this member, no stale one.
func TestJoinCrashPoints(t *testing.T) {
	t.Parallel()
	type point struct {
		name   string
		before StepKind // crash before this step is carried out...
		after  string   // ...or after this change was applied ("add", "remove")
	}
	points := []point{
		{name: "before moving aside", before: StepMoveAside},
		{name: "before removing the stale entry", before: StepRemove},
		{name: "after removing, before the answer", after: "remove"},
		{name: "before adding the learner", before: StepAddLearner},
		{name: "after adding, before the answer", after: "add"},
		{name: "after the learner was added, before etcd started", before: StepJoin},
	}
	for _, p := range points {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			s := newSim(m1, m2, m3)
			moved := 0
			ctx, crash := context.WithCancel(context.Background())
			cfg := joinCfg(s, DataCorrupt, &moved)
			crashed := false
			cfg.OnStep = func(st Step) {
				if p.after == "" && st.Kind == p.before && !crashed {
					crashed = true
					crash()
				}
			}
			s.after = func(op string) error {
				if op == p.after && !crashed {
					crashed = true
					crash()
					return context.Canceled
				}
				return nil
			}
			cfg.MoveAside = func() (string, error) {
				if ctx.Err() != nil {
					return "", ctx.Err() // the crash came first
				}
				moved++
				return "/aside", nil
			}
			out, err := Join(ctx, cfg)
			if p.before == StepJoin && p.after == "" {
				// Join's answer was the join; the process died before etcd started.
				require.NoError(t, err)
				require.Equal(t, OutcomeJoin, out.Kind)
			} else {
				require.Error(t, err, "Join went on after the crash: %+v", out)
			}
			require.True(t, crashed)

			// The restart: the data dir is missing once it was moved aside.
			s.after = nil
			data := DataCorrupt
			if moved > 0 {
				data = DataMissing
			}
			again := joinCfg(s, data, &moved)
			out, err = Join(context.Background(), again)
			require.NoError(t, err)
			wantJoined(t, s, out)
			assert.Equal(t, 1, moved, "the data dir is moved aside once")
		})
	}
}

// The learner slot: a member waits while another member is a learner, and joins once it was
// promoted; "too many learners" from etcd (a race the member list did not show) waits too.
func TestJoinOneLearnerAtATime(t *testing.T) {
	t.Parallel()
	other := Member{ID: 4, PeerURLs: []string{"http://p4:2380"}, IsLearner: true}
	s := newSim(m1, m2, other)
	moved := 0
	cfg := joinCfg(s, DataMissing, &moved)
	var waits int
	promoted := make(chan struct{})
	cfg.OnStep = func(st Step) {
		if st.Kind == StepWait {
			waits++
			if waits == 3 {
				s.start(4, "m4", true)
				close(promoted)
			}
		}
	}
	out, err := Join(context.Background(), cfg)
	require.NoError(t, err)
	<-promoted
	wantJoined(t, s, out)

	// etcd's own refusal, the list not showing the other learner yet.
	s2 := newSim(m1, m2)
	var refusals int
	f := s2.funcs()
	add := f.addLearner
	f.addLearner = func(ctx context.Context, eps, urls []string) (Member, error) {
		if refusals < 2 {
			refusals++
			return Member{}, rpctypes.ErrTooManyLearners
		}
		return add(ctx, eps, urls)
	}
	cfg2 := joinCfg(s2, DataMissing, &moved)
	cfg2.Cluster = f
	out, err = Join(context.Background(), cfg2)
	require.NoError(t, err)
	assert.Equal(t, 2, refusals)
	wantJoined(t, s2, out)
}

// Two members with no data, racing for one learner slot in a cluster of five, both end up
// joined, one after the other.
func TestJoinTwoAtOnce(t *testing.T) {
	t.Parallel()
	a := Self{Name: "m3", PeerURLs: []string{"http://p3:2380"}}
	b := Self{Name: "m4", PeerURLs: []string{"http://p4:2380"}}
	started := func(id uint64, s Self) Member {
		return Member{ID: id, Name: s.Name, PeerURLs: s.PeerURLs, ClientURLs: []string{"http://" + s.Name + ":2379"}}
	}
	s := newSim(m1, m2, started(3, a), started(4, b), started(5, Self{Name: "m5", PeerURLs: []string{"http://p5:2380"}}))
	var wg sync.WaitGroup
	order := make(chan string, 2)
	for _, me := range []Self{a, b} {
		wg.Go(func() {
			out, err := Join(context.Background(), JoinConfig{Self: me, Data: DataMissing, Cluster: s.funcs(), Wait: fast,
				MoveAside: func() (string, error) { return "", nil }})
			if err != nil || out.Kind != OutcomeJoin {
				t.Errorf("%s: %v %+v", me.Name, err, out)
				return
			}
			order <- me.Name
			s.start(out.MemberID, me.Name, true) // its etcd starts, catches up, is promoted
		})
	}
	wg.Wait()
	close(order)
	var names []string
	for n := range order {
		names = append(names, n)
	}
	assert.ElementsMatch(t, []string{"m3", "m4"}, names)
	ms := s.snapshot()
	assert.Len(t, ms, 5)
	for _, m := range ms {
		assert.False(t, m.IsLearner, "%v", m)
		assert.True(t, m.Started(), "%v", m)
	}
}

// Without a quorum, a member with no data waits (the store records the cluster), and joins
// once the quorum is back; the wait ends only with ctx.
func TestJoinWaitsForQuorum(t *testing.T) {
	t.Parallel()
	s := newSim(m1, m2, m3)
	s.quorum = false
	moved := 0
	cfg := joinCfg(s, DataMissing, &moved)
	cfg.StoreCluster = func(context.Context) (uint64, error) { return 100, nil }
	looks := 0
	cfg.OnStep = func(st Step) {
		looks++
		if looks == 5 {
			s.mu.Lock()
			s.quorum = true
			s.mu.Unlock()
		}
		if looks < 5 && st.Kind != StepWait {
			t.Errorf("look %d without quorum: %s (%s)", looks, st.Kind, st.Reason)
		}
	}
	out, err := Join(context.Background(), cfg)
	require.NoError(t, err)
	wantJoined(t, s, out)

	s.quorum = false
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	cfg = joinCfg(newSim(m1, m2, m3), DataMissing, &moved)
	cfg.StoreCluster = func(context.Context) (uint64, error) { return 0, errors.New("store unreachable") }
	cfg.Cluster.(*clusterFuncs).probe = func(context.Context) []PeerAnswer {
		return []PeerAnswer{{Endpoint: "http://p1:2379", Err: errors.New("connection refused")}}
	}
	_, err = Join(ctx, cfg)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
}
