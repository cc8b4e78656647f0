package embedded

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdbr/etcdbr/internal/deltatest"
	"github.com/etcdbr/etcdbr/internal/embeddedtest"
)

// Events sends what a watch of every key from the same revision sends: every event of every
// revision, in order, a revision never split across responses, equal field by field (type,
// key, value, create and mod revision, version, lease), while the member is written to by a
// churn of every kind of write (overwrites, deletes, range deletes, transactions, leases
// attached, revoked and expiring), by concurrent writers (more revisions than one read of
// the bucket holds, some still in the backend's uncommitted buffer when read) and with values
// large enough that one read is cut into several responses.
func TestEventsEqualWatch(t *testing.T) {
	e := embeddedtest.MustStart(t, Start, embeddedtest.NewConfig(t))
	cli := e.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	from := revisionNow(t, cli) + 1

	// The backend commits every millisecond: right after a commit etcd 3.6 hands concurrent
	// reads a copy of its read buffer made before it, whose writes are also in the db.
	commits, stopCommits := context.WithCancel(ctx)
	defer stopCommits()
	go func() {
		for commits.Err() == nil {
			e.Server().Backend().ForceCommit()
			time.Sleep(time.Millisecond)
		}
	}()
	// Started before the writes: the reader follows them as they come, and from the middle.
	got := collect(ctx, e.Events(ctx, from))
	res, err := deltatest.Churn{Seed: 11, Ops: 300, Keys: 80, Expiring: 1}.Run(ctx, cli, func(int, int64) error { return nil })
	require.NoError(t, err)
	mid := res.Revision + 1
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 400 {
				if _, err := cli.Put(ctx, fmt.Sprintf("/bulk/%d/%d", w, i%50), strings.Repeat("v", 100+i)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	big := strings.Repeat("b", 1<<20) // ten of these exceed one response's bytes
	for i := range 10 {
		_, err := cli.Put(ctx, fmt.Sprintf("/big/%d", i), big)
		require.NoError(t, err)
	}
	_, err = cli.Delete(ctx, "/big/", clientv3.WithPrefix())
	require.NoError(t, err)
	last := revisionNow(t, cli)
	require.Greater(t, last-from, int64(eventsWindow), "the writes must span more than one read of the bucket")

	want := deltatest.WatchRevisions(ctx, t, cli, from, last)
	requireSameRevisions(t, want, got.until(t, last))
	fromMid := collect(ctx, e.Events(ctx, mid))
	requireSameRevisions(t, want[mid-from:], fromMid.until(t, last))
	// The reader from mid started after the writes: it reads the ten large revisions at once
	// and cuts them into responses of at most the batch size and one revision more.
	withBig := 0
	for _, n := range fromMid.sizes() {
		require.LessOrEqual(t, n, eventsBatchSize+(1<<20)+1024, "a response holds at most the batch size and one revision more")
		if n >= 1<<20 {
			withBig++
		}
	}
	require.GreaterOrEqual(t, withBig, 2, "the large revisions came in one response")
}

// Once etcd compacted revisions the reader needs, it sends one response with the compaction
// revision (as a watch from there is refused) and closes; from the compaction revision on it
// reads as before. Its channel closes when its context ends and when the member stops.
func TestEventsCompactedAndClosing(t *testing.T) {
	e := embeddedtest.MustStart(t, Start, embeddedtest.NewConfig(t))
	cli := e.Client()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	first := revisionNow(t, cli) + 1
	for i := range 20 {
		_, err := cli.Put(ctx, "/k", fmt.Sprint(i))
		require.NoError(t, err)
	}
	compactAt := revisionNow(t, cli) - 5
	_, err := cli.Compact(ctx, compactAt, clientv3.WithCompactPhysical())
	require.NoError(t, err)

	resps := drain(ctx, t, e.Events(ctx, first))
	require.Len(t, resps, 1)
	require.Equal(t, compactAt, resps[0].CompactRevision)
	require.True(t, resps[0].Canceled)
	require.Error(t, resps[0].Err())

	after := collect(ctx, e.Events(ctx, compactAt))
	want := deltatest.WatchRevisions(ctx, t, cli, compactAt, revisionNow(t, cli))
	requireSameRevisions(t, want, after.until(t, revisionNow(t, cli)))

	cctx, ccancel := context.WithCancel(ctx)
	ch := e.Events(cctx, revisionNow(t, cli)+1)
	ccancel()
	require.Empty(t, drain(ctx, t, ch), "a reader whose context ended sends nothing more")

	live := e.Events(ctx, revisionNow(t, cli)+1)
	e.Close()
	require.Empty(t, drain(ctx, t, live), "a reader of a stopped member sends nothing more")
	require.Empty(t, drain(ctx, t, e.Events(ctx, 1)), "a reader started after the member stopped sends nothing")
}

// revisionNow is the member's revision.
func revisionNow(t *testing.T, cli *clientv3.Client) int64 {
	t.Helper()
	resp, err := cli.Get(context.Background(), "revision-probe")
	require.NoError(t, err)
	return resp.Header.Revision
}

// drain reads ch until it closes and returns what came.
func drain(ctx context.Context, t *testing.T, ch clientv3.WatchChan) []clientv3.WatchResponse {
	t.Helper()
	var out []clientv3.WatchResponse
	for {
		select {
		case resp, ok := <-ch:
			if !ok {
				return out
			}
			out = append(out, resp)
		case <-ctx.Done():
			t.Fatal("the channel did not close")
		}
	}
}

// collected is what a reader sent, read on a goroutine of its own.
type collected struct {
	mu    sync.Mutex
	resps []clientv3.WatchResponse
	cond  chan struct{} // receives after each response
}

func collect(ctx context.Context, ch clientv3.WatchChan) *collected {
	c := &collected{cond: make(chan struct{}, 1)}
	go func() {
		for resp := range ch {
			c.mu.Lock()
			c.resps = append(c.resps, resp)
			c.mu.Unlock()
			select {
			case c.cond <- struct{}{}:
			default:
			}
		}
	}()
	return c
}

// until waits for the responses up to revision last and returns their events up to it
// grouped by revision (leases of the churn may still expire after it), checking that no
// revision is split across responses.
func (c *collected) until(t *testing.T, last int64) [][]*mvccpb.Event {
	t.Helper()
	deadline := time.After(time.Minute)
	for {
		c.mu.Lock()
		var out [][]*mvccpb.Event
		for _, resp := range c.resps {
			require.NoError(t, resp.Err())
			out = deltatest.GroupRevisions(t, out, resp.Events)
		}
		c.mu.Unlock()
		if upTo, ok := deltatest.UpTo(out, last); ok {
			return upTo
		}
		select {
		case <-c.cond:
		case <-deadline:
			t.Fatalf("the reader did not reach revision %d", last)
		}
	}
}

// sizes are the bytes of keys and values of each response.
func (c *collected) sizes() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []int
	for _, resp := range c.resps {
		n := 0
		for _, ev := range resp.Events {
			n += len(ev.Kv.Key) + len(ev.Kv.Value)
		}
		out = append(out, n)
	}
	return out
}

// requireSameRevisions checks that got holds the revisions of want, event by event.
func requireSameRevisions(t *testing.T, want, got [][]*mvccpb.Event) {
	t.Helper()
	require.Equal(t, len(want), len(got), "revisions")
	for i := range want {
		require.Equal(t, len(want[i]), len(got[i]), "events of revision %d", want[i][0].Kv.ModRevision)
		for j := range want[i] {
			require.Equal(t, deltatest.EventString(want[i][j]), deltatest.EventString(got[i][j]), "event %d of revision %d", j, want[i][0].Kv.ModRevision)
		}
	}
}
