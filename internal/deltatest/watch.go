package deltatest

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// WatchRevisions returns the events of revisions from..to as one plain watch of every key
// sends them, grouped by revision. It fails t when a revision is split across responses or
// the watch ends before revision to.
func WatchRevisions(ctx context.Context, t testing.TB, cli *clientv3.Client, from, to int64) [][]*mvccpb.Event {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var revs [][]*mvccpb.Event
	for resp := range cli.Watch(ctx, "", clientv3.WithPrefix(), clientv3.WithRev(from)) {
		require.NoError(t, resp.Err())
		revs = GroupRevisions(t, revs, resp.Events)
		if upTo, ok := UpTo(revs, to); ok {
			return upTo
		}
	}
	t.Fatalf("the watch ended before revision %d", to)
	return nil
}

// GroupRevisions appends the events of one watch response to revs, grouped by revision. It
// fails t when the response continues the last revision of revs: a revision split across
// responses.
func GroupRevisions(t testing.TB, revs [][]*mvccpb.Event, evs []*clientv3.Event) [][]*mvccpb.Event {
	t.Helper()
	for i, ev := range evs {
		e := (*mvccpb.Event)(ev)
		if n := len(revs); n > 0 && revs[n-1][0].Kv.ModRevision == e.Kv.ModRevision {
			require.NotZero(t, i, "revision %d is split across responses", e.Kv.ModRevision)
			revs[n-1] = append(revs[n-1], e)
		} else {
			revs = append(revs, []*mvccpb.Event{e})
		}
	}
	return revs
}

// UpTo returns the revisions of revs up to revision to, and whether revs reaches it.
func UpTo(revs [][]*mvccpb.Event, to int64) ([][]*mvccpb.Event, bool) {
	for i, rev := range revs {
		if r := rev[0].Kv.ModRevision; r >= to {
			if r > to {
				return revs[:i], true
			}
			return revs[:i+1], true
		}
	}
	return revs, false
}

// EventString is everything an event says.
func EventString(e *mvccpb.Event) string {
	kv := e.Kv
	return fmt.Sprintf("%v %q=%q create %d mod %d version %d lease %x", e.Type, kv.Key, kv.Value,
		kv.CreateRevision, kv.ModRevision, kv.Version, kv.Lease)
}
