package embedded

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/client/pkg/v3/types"

	"github.com/etcdbr/etcdbr/internal/embeddedtest"
)

func TestLeadVerdict(t *testing.T) {
	const me, other = types.ID(1), types.ID(2)
	leads := func(term uint64) raftView { return raftView{ID: me, Leader: me, Term: term} }
	follows := raftView{ID: me, Leader: other, Term: 7}
	alone := raftView{ID: me, Term: 7}
	readFailed := errors.New("read index timed out")
	for _, c := range []struct {
		name          string
		term          uint64 // 0: Lead
		before, after raftView
		readErr       error
		want          string // "": proven; "not leader": wraps ErrNotLeader; else: unproven
	}{
		{"leads, read served", 7, leads(7), leads(7), nil, ""},
		{"first proof, term rose as the member applied its own term's first entry", 0, leads(6), leads(7), nil, ""},
		{"follower", 7, follows, follows, nil, "not leader"},
		{"no leader", 7, alone, alone, nil, "not leader"},
		{"lost during the read", 7, leads(7), follows, nil, "not leader"},
		{"stepped down during the read (quorum lost)", 7, leads(7), alone, readFailed, "not leader"},
		{"lost and won again during the read", 7, leads(7), leads(9), nil, "not leader"},
		{"leads in a later term than proven", 7, leads(9), leads(9), nil, "not leader"},
		{"read failed, still says it leads", 7, leads(7), leads(7), readFailed, "unproven"},
		{"first proof, follower", 0, follows, follows, nil, "not leader"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := leadVerdict(c.term, c.before, c.after, c.readErr)
			switch c.want {
			case "":
				assert.NoError(t, err)
			case "not leader":
				assert.ErrorIs(t, err, ErrNotLeader)
			default:
				require.Error(t, err)
				assert.NotErrorIs(t, err, ErrNotLeader)
				assert.ErrorIs(t, err, c.readErr)
			}
		})
	}
}

// fakeRaft is a raftServer whose linearizable read runs onRead (which may change the
// state, as the raft loop would meanwhile) and returns its error.
type fakeRaft struct {
	id, leader types.ID
	term       uint64
	onRead     func(f *fakeRaft) error
	reads      int
}

func (f *fakeRaft) MemberID() types.ID { return f.id }
func (f *fakeRaft) Leader() types.ID   { return f.leader }
func (f *fakeRaft) Term() uint64       { return f.term }
func (f *fakeRaft) LinearizableReadNotify(context.Context) error {
	f.reads++
	if f.onRead == nil {
		return nil
	}
	return f.onRead(f)
}

func TestLeadershipChecks(t *testing.T) {
	ctx := context.Background()
	srv := &fakeRaft{id: 1, leader: 1, term: 4, onRead: func(f *fakeRaft) error { f.term = 5; return nil }}
	l, err := lead(ctx, srv)
	require.NoError(t, err)
	assert.Equal(t, uint64(5), l.Term(), "the term after the read: the member's own")
	srv.onRead = nil
	require.NoError(t, l.Check(ctx))
	assert.True(t, l.Held())

	// A follower is told without a read.
	srv.leader = 2
	reads := srv.reads
	require.ErrorIs(t, l.Check(ctx), ErrNotLeader)
	assert.Equal(t, reads, srv.reads)
	assert.False(t, l.Held())
	_, err = lead(ctx, srv)
	require.ErrorIs(t, err, ErrNotLeader)

	// Won back in a later term: the old leadership stays lost, a new one is proven.
	srv.leader, srv.term = 1, 7
	require.ErrorIs(t, l.Check(ctx), ErrNotLeader)
	assert.False(t, l.Held())
	l2, err := lead(ctx, srv)
	require.NoError(t, err)
	assert.Equal(t, uint64(7), l2.Term())

	// A read that fails proves nothing, but is no loss of the leadership either.
	srv.onRead = func(*fakeRaft) error { return context.DeadlineExceeded }
	err = l2.Check(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.NotErrorIs(t, err, ErrNotLeader)

	require.ErrorIs(t, Leadership{}.Check(ctx), ErrNotLeader)
	assert.False(t, Leadership{}.Held())
}

// With three members in-process: only the leader proves its leadership; once it handed
// the leadership over, its checks fail, and they keep failing after it won the leadership
// back (a later term), while a new proof succeeds. A leader whose peers are gone cannot
// prove its leadership.
func TestLeadershipInCluster(t *testing.T) {
	t.Parallel()
	members := embeddedtest.MustStartCluster(t, Start, embeddedtest.ClusterConfigs(t, 3))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	leaderOf := func() int {
		for {
			for i, e := range members {
				if srv := e.Server(); srv.Leader() == srv.MemberID() {
					if _, err := e.Lead(ctx); err == nil {
						return i
					}
				}
			}
			select {
			case <-ctx.Done():
				t.Fatal("no member proves its leadership")
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	first := leaderOf()
	l, err := members[first].Lead(ctx)
	require.NoError(t, err)
	require.NoError(t, l.Check(ctx))
	for i, e := range members {
		if i != first {
			_, err := e.Lead(ctx)
			require.ErrorIs(t, err, ErrNotLeader, "member %d", i)
		}
	}

	second := (first + 1) % 3
	_, err = members[first].Client().MoveLeader(ctx, uint64(members[second].Server().MemberID()))
	require.NoError(t, err)
	require.Equal(t, second, leaderOf())
	require.ErrorIs(t, l.Check(ctx), ErrNotLeader)

	_, err = members[second].Client().MoveLeader(ctx, uint64(members[first].Server().MemberID()))
	require.NoError(t, err)
	require.Equal(t, first, leaderOf())
	err = l.Check(ctx)
	require.ErrorIs(t, err, ErrNotLeader, "a leadership of an earlier term")
	l3, err := members[first].Lead(ctx)
	require.NoError(t, err)
	require.Greater(t, l3.Term(), l.Term())

	// Its peers stop: the leader steps down when it misses their heartbeats' answers (etcd's
	// check quorum), which fails the read waiting for them.
	for i, e := range members {
		if i != first {
			e.Close()
		}
	}
	require.ErrorIs(t, l3.Check(ctx), ErrNotLeader)
}
