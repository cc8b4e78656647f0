package embedded

import (
	"context"
	"errors"
	"fmt"

	"go.etcd.io/etcd/client/pkg/v3/types"
	"go.etcd.io/etcd/server/v3/etcdserver"
)

// ErrNotLeader is wrapped by the errors of Lead and Leadership.Check when this member does
// not lead: another member or none does, or it leads in another term than the one its
// Leadership was proven in.
var ErrNotLeader = errors.New("this member is not the leader")

// raftServer is what a leadership check reads of etcd's server: the member's own ID, the
// leader it knows of, the term of the last entry it applied, and a read etcd linearizes.
type raftServer interface {
	MemberID() types.ID
	Leader() types.ID
	Term() uint64
	LinearizableReadNotify(ctx context.Context) error
}

var _ raftServer = (*etcdserver.EtcdServer)(nil)

// Leadership is this member's leadership in one raft term, proven by a read etcd
// linearizes. Check proves again that it still holds; the term ties every check to the
// leadership that was proven first, so that a member that lost the leadership and won it
// back fails the checks of its earlier Leadership.
//
// What a Check that passes proves: etcd's ReadIndex, which serves a linearizable read, made
// this member, as the leader of the term, confirm with a heartbeat that a quorum still
// follows it, after the Check began. Any later leader is elected by a quorum, which shares a
// member with that one: the later leader's election comes after the confirmation.
//
// The term is the term of the last entry the member applied (etcd's Term). After a
// linearizable read it is the term of the leader that confirmed the read: a leader confirms
// a read only once it committed an entry of its own term, and the read returns only once
// the member applied that far.
type Leadership struct {
	srv  raftServer
	term uint64
}

// raftView is what the member's server says of the leader and the applied term, at one
// moment.
type raftView struct {
	ID, Leader types.ID
	Term       uint64
}

func viewOf(srv raftServer) raftView {
	// The term first: a term that is the same before and after the leader was read covers
	// that read (terms only grow).
	term := srv.Term()
	return raftView{ID: srv.MemberID(), Leader: srv.Leader(), Term: term}
}

// Lead proves that this member leads now and returns its Leadership, or an error wrapping
// ErrNotLeader when it does not, or another error when etcd could not serve the
// linearizable read (ctx ended, etcd is slow or stopping): then leadership is not proven.
func (e *Etcd) Lead(ctx context.Context) (Leadership, error) {
	return lead(ctx, e.etcd.Server)
}

func lead(ctx context.Context, srv raftServer) (Leadership, error) {
	before := viewOf(srv)
	if err := leadVerdict(0, before, before, nil); err != nil {
		return Leadership{}, err // no read is needed to tell a follower
	}
	err := srv.LinearizableReadNotify(ctx)
	after := viewOf(srv)
	if err := leadVerdict(0, before, after, err); err != nil {
		return Leadership{}, err
	}
	return Leadership{srv: srv, term: after.Term}, nil
}

// Term is the raft term of the leadership.
func (l Leadership) Term() uint64 { return l.term }

// Held reports whether the member's server still says that this member leads in the
// leadership's term. It reads the server's state only, which is not linearized: a member
// cut off from its peers still says so until it notices (an election timeout); use it to
// notice a lost leadership soon, and Check before anything that needs the proof.
func (l Leadership) Held() bool {
	if l.srv == nil {
		return false
	}
	v := viewOf(l.srv)
	return leadVerdict(l.term, v, v, nil) == nil
}

// Check proves, with a read etcd linearizes, that this member still leads in the
// leadership's term. It returns nil then; an error wrapping ErrNotLeader when it does not
// (another member or none leads, or the term moved on: an error that stays); or another
// error when the read failed while the member's state still says it leads (ctx ended, etcd
// is slow or stopping): leadership is not proven, and a later Check may prove it again.
func (l Leadership) Check(ctx context.Context) error {
	if l.srv == nil {
		return fmt.Errorf("no leadership was proven: %w", ErrNotLeader)
	}
	before := viewOf(l.srv)
	if err := leadVerdict(l.term, before, before, nil); err != nil {
		return err
	}
	err := l.srv.LinearizableReadNotify(ctx)
	return leadVerdict(l.term, before, viewOf(l.srv), err)
}

// leadVerdict decides a leadership check from the member's state before and after a
// linearizable read and the read's error (nil when it succeeded). term is the leadership's
// term, or 0 when it is being proven for the first time (Lead): then the applied term may
// rise during the read, as the member applies the first entry of its own term.
func leadVerdict(term uint64, before, after raftView, readErr error) error {
	for _, v := range []raftView{before, after} {
		switch {
		case v.Leader != v.ID && v.Leader == 0:
			return fmt.Errorf("member %s knows of no leader: %w", v.ID, ErrNotLeader)
		case v.Leader != v.ID:
			return fmt.Errorf("member %s is the leader, not %s: %w", v.Leader, v.ID, ErrNotLeader)
		case term != 0 && v.Term != term:
			return fmt.Errorf("member %s leads in term %d, not in term %d any more: %w", v.ID, v.Term, term, ErrNotLeader)
		}
	}
	if readErr != nil {
		return fmt.Errorf("cannot prove that member %s leads: etcd did not serve a linearizable read: %w", before.ID, readErr)
	}
	return nil
}
