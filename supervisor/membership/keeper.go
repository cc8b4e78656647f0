package membership

import (
	"fmt"
	"sort"
	"time"
)

// readyFraction is how far a learner's log must reach, as a fraction of the leader's, for
// etcd to promote it (etcd's own readyPercentThreshold).
const readyFraction = 0.9

// View is what the leader sees when it looks after the learners.
type View struct {
	// Members is the member list (the leader's own).
	Members []Member
	// Match is each member's raft match index as the leader's raft sees it (nil: unknown);
	// Match[leader] is the leader's own last index.
	Match map[uint64]uint64
	// Leader is the leader's member ID.
	Leader uint64
}

// ActionKind is what the keeper does next.
type ActionKind int

const (
	// ActionNone: nothing to do.
	ActionNone ActionKind = iota
	// ActionSnapshot: take a full snapshot, before the learner Action.ID is promoted or
	// removed (then tell the keeper with Snapshotted).
	ActionSnapshot
	// ActionPromote: promote learner Action.ID (etcd refuses while it is behind: then try
	// again at the next look).
	ActionPromote
	// ActionRemove: remove learner Action.ID: it made no progress for the keeper's Timeout.
	ActionRemove
)

// String names the kind, as the logs show it.
func (k ActionKind) String() string {
	switch k {
	case ActionNone:
		return "none"
	case ActionSnapshot:
		return "full-snapshot"
	case ActionPromote:
		return "promote"
	case ActionRemove:
		return "remove-learner"
	}
	return fmt.Sprintf("ActionKind(%d)", int(k))
}

// Action is the keeper's answer.
type Action struct {
	Kind   ActionKind
	ID     uint64
	Member Member
	Reason string
}

// Keeper is the leader's care of the learners: it promotes a learner once it has started
// and caught up, and removes one that made no progress (its log did not grow, or it never
// started) for Timeout, so that its member tries again and the single learner slot is not
// held forever. Before the first change it makes for a learner, it asks for a full
// snapshot. Look decides from a View and what earlier looks saw; it does no I/O.
//
// The zero Keeper is ready (with a Timeout of 0 it removes learners at their second look:
// set one). A Keeper is used by one goroutine; a new leader starts a new one, so the bound
// starts again at a change of leader.
type Keeper struct {
	// Timeout is how long a learner may make no progress before it is removed.
	Timeout time.Duration

	learners map[uint64]*learnerWatch
}

// learnerWatch is what the keeper remembers of one learner.
type learnerWatch struct {
	match       uint64    // its match index at the last look it grew
	progressed  time.Time // when it was first seen, or its match last grew
	snapshotted bool      // the full snapshot before a change for it was taken (or tried)
}

// Look returns the next action for the learners of v at time now: a full snapshot first
// (once per learner), then a promotion once the learner started and its log reaches 90% of
// the leader's (when the progress is unknown, once it started: etcd checks it again), or its
// removal after Timeout without progress. Learners are looked at in the order of their IDs,
// one action per look.
func (k *Keeper) Look(now time.Time, v View) Action {
	if k.learners == nil {
		k.learners = map[uint64]*learnerWatch{}
	}
	learners := map[uint64]Member{}
	for _, m := range v.Members {
		if m.IsLearner {
			learners[m.ID] = m
		}
	}
	for id := range k.learners {
		if _, ok := learners[id]; !ok {
			delete(k.learners, id) // promoted or removed
		}
	}
	ids := make([]uint64, 0, len(learners))
	for id := range learners {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		m := learners[id]
		match, known := v.Match[id]
		w := k.learners[id]
		if w == nil {
			w = &learnerWatch{match: match, progressed: now}
			k.learners[id] = w
		} else if known && match > w.match {
			w.match, w.progressed = match, now
		}
		leaderMatch, leaderKnown := v.Match[v.Leader]
		ready := m.Started() && (!known || !leaderKnown || float64(match) >= float64(leaderMatch)*readyFraction)
		stuck := now.Sub(w.progressed) > k.Timeout
		switch {
		case !w.snapshotted:
			return Action{Kind: ActionSnapshot, ID: id, Member: m, Reason: fmt.Sprintf("learner %s joined: a full snapshot before it is promoted or removed", m)}
		case ready:
			return Action{Kind: ActionPromote, ID: id, Member: m, Reason: fmt.Sprintf("learner %s started and caught up (match %d of %d)", m, match, leaderMatch)}
		case stuck && !m.Started():
			return Action{Kind: ActionRemove, ID: id, Member: m, Reason: fmt.Sprintf("learner %s has not started for %v: it is removed so that its member can try again "+
				"(the member's etcdbr adds it again when it runs)", m, now.Sub(w.progressed).Round(time.Second))}
		case stuck:
			return Action{Kind: ActionRemove, ID: id, Member: m, Reason: fmt.Sprintf("learner %s made no progress for %v (match %d, the leader's %d): it is removed so that its member can try again",
				m, now.Sub(w.progressed).Round(time.Second), match, leaderMatch)}
		}
	}
	return Action{Kind: ActionNone}
}

// Snapshotted records that the full snapshot before a change for learner id was taken (or
// tried: a store that cannot be reached does not hold the cluster's membership back).
func (k *Keeper) Snapshotted(id uint64) {
	if w := k.learners[id]; w != nil {
		w.snapshotted = true
	}
}

// Forget forgets learner id (it was promoted or removed), so that a later learner of the
// same ID is looked after afresh.
func (k *Keeper) Forget(id uint64) {
	delete(k.learners, id)
}
