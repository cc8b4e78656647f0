package supervisor

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/etcdbr/etcdbr/backup"
	"github.com/etcdbr/etcdbr/embedded"
)

// leaderPoll is how often leadership is checked besides etcd's leader change notifications.
const leaderPoll = time.Second

// deltasWhileLeader takes delta snapshots while this member is the leader (a single member
// always is) until ctx ends. When the member stops being the leader, its taker stops
// without a final delta (the cancel cause wraps backup.ErrSkipped): the new leader continues
// the chain from the store and reads the events that were not uploaded from its own
// history. It returns an error only for an unusable configuration.
func deltasWhileLeader(ctx context.Context, e *embedded.Etcd, cfg backup.DeltaConfig, lg *slog.Logger) error {
	srv := e.Server()
	isLeader := func() bool { return srv.Leader() == srv.MemberID() }
	tick := time.NewTicker(leaderPoll)
	defer tick.Stop()
	for {
		for !isLeader() {
			select {
			case <-ctx.Done():
				return nil
			case <-srv.LeaderChangedNotify():
			case <-tick.C:
			}
		}
		lctx, cancel := context.WithCancelCause(ctx)
		done := make(chan error, 1)
		go func() { done <- backup.RunDeltas(lctx, cfg) }()
		for leader := true; leader; leader = isLeader() {
			select {
			case err := <-done:
				cancel(nil)
				return err
			case <-srv.LeaderChangedNotify():
			case <-tick.C:
			}
		}
		lg.Info("this member is no longer the leader: delta snapshots stop until it leads again", "leader", srv.Leader())
		cancel(fmt.Errorf("member %s is no longer the leader: %w", srv.MemberID(), backup.ErrSkipped))
		if err := <-done; err != nil {
			return err
		}
	}
}
