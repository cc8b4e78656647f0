package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/etcdbr/etcdbr/backup"
	"github.com/etcdbr/etcdbr/embedded"
)

// leaderPoll is how often leadership is checked besides etcd's leader change notifications.
const leaderPoll = time.Second

// deltasWhileLeader takes delta snapshots while this member leads (a single member always
// does) until ctx ends: one delta taker per leadership, that is per raft term it leads in.
//
// A taker starts once this member proved its leadership (embedded.Etcd.Lead, a read etcd
// linearizes). In a cluster of several voting members it then waits
// backup.DeltaCommitWindow before it reads where the store's chain ends: a delta of the
// previous leader that passed its fence before this member was elected becomes visible
// within that window or never, so that the new chain continues the store's exactly, without
// an overlap. Every delta of the taker is fenced by the leadership: it becomes visible only
// if this member still leads in the same term just before (leadershipFence).
//
// When the member stops leading (etcd's state says so) or its term moves on, the taker stops
// without a final delta (the cancel cause wraps backup.ErrSkipped); when the fence refused
// an upload, the taker has stopped by itself. Either way the next leader continues the chain
// from the store and reads the events that were not uploaded from its own history. It
// returns an error only for an unusable configuration.
func deltasWhileLeader(ctx context.Context, e *embedded.Etcd, cfg backup.DeltaConfig, lg *slog.Logger) error {
	srv := e.Server()
	tick := time.NewTicker(leaderPoll)
	defer tick.Stop()
	// next waits for a leader change, the next poll or the end of ctx (false).
	next := func() bool {
		select {
		case <-ctx.Done():
			return false
		case <-srv.LeaderChangedNotify():
		case <-tick.C:
		}
		return true
	}
	for {
		l, err := lead(ctx, e)
		if err != nil {
			if !errors.Is(err, embedded.ErrNotLeader) && ctx.Err() == nil {
				lg.Warn("cannot prove that this member leads: delta snapshots wait", "err", err)
			}
			if !next() {
				return nil
			}
			continue
		}
		if voters := votingMembers(e); voters > 1 {
			lg.Info("this member leads: delta snapshots continue the store's chain once any delta of the previous leader has landed or can no longer land",
				"term", l.Term(), "voting_members", voters, "in", backup.DeltaCommitWindow)
			if !settle(ctx, l, next) {
				if ctx.Err() != nil {
					return nil
				}
				lg.Info("this member stopped leading before its delta snapshots began", "leader", srv.Leader())
				continue
			}
		}
		lctx, cancel := context.WithCancelCause(ctx)
		done := make(chan error, 1)
		tcfg := cfg
		tcfg.Fence = leadershipFence(l)
		go func() { done <- backup.RunDeltas(lctx, tcfg) }()
		var runErr error
		stopped := false
		for !stopped && l.Held() {
			select {
			case runErr = <-done:
				stopped = true
			case <-srv.LeaderChangedNotify():
			case <-tick.C:
			}
		}
		if !stopped {
			lg.Info("this member no longer leads in the term its delta snapshots began in: they stop until it leads again",
				"term", l.Term(), "leader", srv.Leader())
			cancel(fmt.Errorf("member %s no longer leads in term %d: %w", srv.MemberID(), l.Term(), backup.ErrSkipped))
			runErr = <-done
		}
		cancel(nil)
		switch {
		case errors.Is(runErr, backup.ErrFenced):
			lg.Info("delta snapshots were fenced: they resume when this member leads again", "term", l.Term(), "leader", srv.Leader())
		case runErr != nil:
			return runErr
		case ctx.Err() != nil:
			return nil
		}
	}
}

// settle waits backup.DeltaCommitWindow while l holds; it reports whether it still holds
// then (false also when ctx ended).
func settle(ctx context.Context, l embedded.Leadership, next func() bool) bool {
	deadline := time.Now().Add(backup.DeltaCommitWindow)
	for l.Held() {
		if !time.Now().Before(deadline) {
			return true
		}
		if !next() {
			return false
		}
	}
	return false
}

// votingMembers counts the voting members (not learners) of e's cluster.
func votingMembers(e *embedded.Etcd) int {
	n := 0
	for _, m := range e.Server().Cluster().Members() {
		if !m.IsLearner {
			n++
		}
	}
	return n
}
