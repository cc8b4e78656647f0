package supervisor

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/etcdbr/etcdbr/backup"
	"github.com/etcdbr/etcdbr/embedded"
)

// fenceTimeout bounds one proof of leadership (a linearizable read) of a fence or of Lead.
// etcd gives up a read index request after its own request timeout (5 s plus two election
// timeouts by default), and a leader cut off from its peers steps down within an election
// timeout, which fails the read sooner.
const fenceTimeout = 5 * time.Second

// leadershipFence is the backup.Fence of a leadership: each call proves, with a read etcd
// linearizes, that this member still leads in the leadership's term (embedded.Leadership.Check
// says what that proves). A lost leadership is an error wrapping backup.ErrFenced; a read
// etcd did not serve is another error (the upload is retried, and fenced again).
func leadershipFence(l embedded.Leadership) backup.Fence {
	return func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, fenceTimeout)
		defer cancel()
		return fenced(l.Check(ctx))
	}
}

// leaderFence is a backup.Fence that proves that this member leads now, in whatever term:
// for garbage collection, whose deletions do not depend on where the chain ends.
func leaderFence(e *embedded.Etcd) backup.Fence {
	return func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, fenceTimeout)
		defer cancel()
		_, err := e.Lead(ctx)
		return fenced(err)
	}
}

// lead proves that this member leads now, within fenceTimeout.
func lead(ctx context.Context, e *embedded.Etcd) (embedded.Leadership, error) {
	ctx, cancel := context.WithTimeout(ctx, fenceTimeout)
	defer cancel()
	return e.Lead(ctx)
}

// fenced turns an error wrapping embedded.ErrNotLeader into one wrapping backup.ErrFenced.
func fenced(err error) error {
	if errors.Is(err, embedded.ErrNotLeader) {
		return fmt.Errorf("%w: %w", backup.ErrFenced, err)
	}
	return err
}
