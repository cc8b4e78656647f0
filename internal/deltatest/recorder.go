// Package deltatest records the events of a real etcd member into delta objects, for tests
// and benchmarks of restores. It writes what etcdbr's delta taker writes (the events of each
// revision together, lease records with their TTLs, a delta's time when it is cut), but the
// test decides where each delta ends, and it can write any range again (to make overlaps).
package deltatest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// Recorder watches a member from a revision and keeps the revisions it sees until they are
// written into deltas.
//
// A watch that falls behind etcd is served by etcd's slow path: on etcd 3.6, every 100 ms it
// reads every event from the watch's next revision up to the newest one and sends the first
// 1000 revisions of them, so catching up costs time quadratic in the backlog (minutes for a
// few hundred thousand revisions of 1 KiB values). When the recorder sees that it is more
// than Options.CatchUpLag revisions behind, it replaces its watch by Options.CatchUpWatchers
// watches, each from the start of its own segment of 1000 revisions: etcd serves all of them
// from one read, so one such read delivers that many segments. It goes back to a single
// watch once it is close to the newest revision again. The revisions and events recorded are
// the same either way (a round holds up to CatchUpWatchers x CatchUpSegment revisions in
// memory); a revision's time is when the recorder received it, later than the write when the
// recorder was behind.
type Recorder struct {
	cli   *clientv3.Client
	store *snapstore.Store
	keep  bool
	opts  Options
	stop  context.CancelFunc
	done  chan struct{}

	mu      sync.Mutex
	changed chan struct{}        // closed and replaced whenever a revision arrives
	revs    []snapstore.Revision // received and not cut yet (with keep: all received)
	first   int64                // the revision of revs[0] (or the next one expected)
	last    int64                // the last revision received
	cut     int64                // the last revision written into a delta by Cut
	ttls    map[int64]int64      // lease TTLs looked up (0: unknown)
	events  int64                // events received
	newest  int64                // the newest revision of etcd a watch response reported
	catchUp int                  // rounds of segment watches made to catch up
	err     error
}

// Options configures a Recorder.
type Options struct {
	// Keep keeps every revision after it was cut, so that WriteRange can write any range.
	Keep bool
	// CatchUpLag is how many revisions behind etcd's newest revision the watch may fall
	// before the recorder catches up with segment watches (default 5000; negative: never).
	CatchUpLag int64
	// CatchUpWatchers is how many segments one round of catching up watches at once
	// (default 32); CatchUpSegment how many revisions a segment holds (default 1000, the
	// most etcd 3.6 sends a watch that is behind at once).
	CatchUpWatchers int
	CatchUpSegment  int64
}

// withDefaults fills in the defaults of the zero fields.
func (o Options) withDefaults() Options {
	if o.CatchUpLag == 0 {
		o.CatchUpLag = 5000
	}
	if o.CatchUpWatchers <= 0 {
		o.CatchUpWatchers = 32
	}
	if o.CatchUpSegment <= 0 {
		o.CatchUpSegment = 1000
	}
	return o
}

// Start watches cli from revision from (etcd must still hold it) and records into store.
func Start(ctx context.Context, cli *clientv3.Client, store *snapstore.Store, from int64, opts Options) *Recorder {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	r := &Recorder{
		cli: cli, store: store, keep: opts.Keep, opts: opts.withDefaults(), stop: cancel, done: make(chan struct{}),
		changed: make(chan struct{}), first: from, last: from - 1, cut: from - 1, ttls: map[int64]int64{},
	}
	go r.run(wctx)
	return r
}

// run records until ctx ends or a watch fails: watching live, and catching up in segments
// whenever the live watch fell too far behind.
func (r *Recorder) run(ctx context.Context) {
	defer close(r.done)
	for {
		behind, err := r.live(ctx)
		if err == nil && behind {
			err = r.catchUpRounds(ctx)
		}
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			r.fail(err)
			return
		}
	}
}

// live watches from the revision after the last one received; it returns true once the
// watch is more than CatchUpLag revisions behind etcd's newest revision.
func (r *Recorder) live(ctx context.Context) (behind bool, err error) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wch := r.cli.Watch(wctx, "", clientv3.WithPrefix(), clientv3.WithRev(r.Last()+1))
	for resp := range wch {
		if err := resp.Err(); err != nil {
			return false, fmt.Errorf("watch: %w", err)
		}
		if err := r.accept(ctx, resp.Events, time.Now()); err != nil {
			return false, err
		}
		if r.behind(resp.Header.Revision) {
			return true, nil
		}
	}
	if ctx.Err() == nil {
		return false, errors.New("watch ended")
	}
	return false, nil
}

// behind notes newest, a revision etcd reported, and reports whether the recorder is more
// than CatchUpLag revisions behind the newest one seen.
func (r *Recorder) behind(newest int64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.newest = max(r.newest, newest)
	return r.opts.CatchUpLag >= 0 && r.newest-r.last > r.opts.CatchUpLag
}

// catchUpRounds catches up in rounds of segment watches until the recorder is within half
// of CatchUpLag of the newest revision etcd reported.
func (r *Recorder) catchUpRounds(ctx context.Context) error {
	for {
		r.mu.Lock()
		next, newest := r.last+1, r.newest
		r.mu.Unlock()
		if newest-next < r.opts.CatchUpLag/2 {
			return nil
		}
		if err := r.catchUpRound(ctx, next, newest); err != nil {
			return err
		}
	}
}

// catchUpRound receives the revisions from next up to at most newest (which etcd holds) with
// one watch per segment, all at once, and accepts them in order.
func (r *Recorder) catchUpRound(ctx context.Context, next, newest int64) error {
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type segment struct {
		evs    []*clientv3.Event
		newest int64
		err    error
	}
	segs := make([]chan segment, 0, r.opts.CatchUpWatchers)
	for from := next; from <= newest && len(segs) < r.opts.CatchUpWatchers; from += r.opts.CatchUpSegment {
		to := min(from+r.opts.CatchUpSegment-1, newest)
		done := make(chan segment, 1)
		segs = append(segs, done)
		go func() {
			evs, newest, err := r.watchSegment(rctx, from, to)
			done <- segment{evs, newest, err}
		}()
	}
	r.mu.Lock()
	r.catchUp++
	r.mu.Unlock()
	for _, done := range segs {
		s := <-done
		if s.err != nil {
			return s.err
		}
		r.behind(s.newest)
		if err := r.accept(ctx, s.evs, time.Now()); err != nil {
			return err
		}
	}
	return nil
}

// watchSegment watches from revision from until it received revision to (a watch response
// never splits a revision) and returns the events of from..to and the newest revision etcd
// reported.
func (r *Recorder) watchSegment(ctx context.Context, from, to int64) ([]*clientv3.Event, int64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var evs []*clientv3.Event
	var newest int64
	for resp := range r.cli.Watch(ctx, "", clientv3.WithPrefix(), clientv3.WithRev(from)) {
		if err := resp.Err(); err != nil {
			return nil, 0, fmt.Errorf("watch revisions %d..%d: %w", from, to, err)
		}
		newest = max(newest, resp.Header.Revision)
		for _, ev := range resp.Events {
			if ev.Kv.ModRevision > to {
				return evs, newest, nil
			}
			evs = append(evs, ev)
		}
		if n := len(evs); n > 0 && evs[n-1].Kv.ModRevision == to {
			return evs, newest, nil
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, 0, fmt.Errorf("watch revisions %d..%d: %w", from, to, err)
	}
	return nil, 0, fmt.Errorf("watch revisions %d..%d ended", from, to)
}

// accept groups a response's events by revision; a revision is never split across
// responses.
func (r *Recorder) accept(ctx context.Context, evs []*clientv3.Event, at time.Time) error {
	var group []*mvccpb.Event
	flush := func() error {
		if len(group) == 0 {
			return nil
		}
		rev := group[0].Kv.ModRevision
		r.mu.Lock()
		defer r.mu.Unlock()
		if rev != r.last+1 {
			return fmt.Errorf("watch skipped from revision %d to %d", r.last, rev)
		}
		r.revs = append(r.revs, snapstore.Revision{Revision: rev, Time: at, Events: group})
		r.last = rev
		r.events += int64(len(group))
		close(r.changed)
		r.changed = make(chan struct{})
		group = nil
		return nil
	}
	for _, ev := range evs {
		e := (*mvccpb.Event)(ev)
		if len(group) > 0 && e.Kv.ModRevision != group[0].Kv.ModRevision {
			if err := flush(); err != nil {
				return err
			}
		}
		if e.Type == mvccpb.PUT && e.Kv.Lease != 0 {
			if err := r.lookup(ctx, e.Kv.Lease); err != nil {
				return err
			}
		}
		group = append(group, e)
	}
	return flush()
}

// lookup learns a lease's TTL the first time a key is attached to it; 0 when the lease is
// gone already.
func (r *Recorder) lookup(ctx context.Context, id int64) error {
	r.mu.Lock()
	_, ok := r.ttls[id]
	r.mu.Unlock()
	if ok {
		return nil
	}
	resp, err := r.cli.TimeToLive(ctx, clientv3.LeaseID(id))
	var ttl int64
	switch {
	case err == nil && resp.TTL != -1:
		ttl = resp.GrantedTTL
	case err == nil:
		ttl = 0 // expired or revoked already
	default:
		return fmt.Errorf("look up lease %x: %w", id, err)
	}
	r.mu.Lock()
	r.ttls[id] = ttl
	r.mu.Unlock()
	return nil
}

func (r *Recorder) fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err == nil {
		r.err = err
		close(r.changed)
		r.changed = make(chan struct{})
	}
}

// WaitFor waits until every revision up to rev was received.
func (r *Recorder) WaitFor(ctx context.Context, rev int64) error {
	for {
		r.mu.Lock()
		last, err, changed := r.last, r.err, r.changed
		r.mu.Unlock()
		switch {
		case last >= rev:
			return nil
		case err != nil:
			return err
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("wait for revision %d (received up to %d): %w", rev, last, ctx.Err())
		}
	}
}

// Events is how many events the recorder received.
func (r *Recorder) Events() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.events
}

// CatchUpRounds is how many rounds of segment watches the recorder made to catch up with
// etcd (0 while it kept up).
func (r *Recorder) CatchUpRounds() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.catchUp
}

// Last is the last revision received.
func (r *Recorder) Last() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last
}

// Cut waits for revision to and writes the revisions after the previous cut up to it as one
// delta, taken now.
func (r *Recorder) Cut(ctx context.Context, to int64) (catalog.Snapshot, error) {
	if err := r.WaitFor(ctx, to); err != nil {
		return catalog.Snapshot{}, err
	}
	r.mu.Lock()
	from := r.cut + 1
	r.mu.Unlock()
	if to < from {
		return catalog.Snapshot{}, fmt.Errorf("cut at %d: revisions up to %d are cut already", to, r.cut)
	}
	s, err := r.WriteRange(ctx, from, to, time.Now())
	if err != nil {
		return s, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cut = to
	if !r.keep {
		n := int(to - r.first + 1)
		r.revs = append(r.revs[:0], r.revs[n:]...)
		r.first = to + 1
	}
	return s, nil
}

// WriteRange writes the received revisions from..to as a delta named with time at, whether
// or not they were cut before (they must still be kept).
func (r *Recorder) WriteRange(ctx context.Context, from, to int64, at time.Time) (catalog.Snapshot, error) {
	r.mu.Lock()
	if from < r.first || to > r.last {
		r.mu.Unlock()
		return catalog.Snapshot{}, fmt.Errorf("write %d..%d: the recorder holds revisions %d..%d", from, to, r.first, r.last)
	}
	revs := r.revs[from-r.first : to-r.first+1]
	ttls := make(map[int64]int64, len(r.ttls))
	for id, ttl := range r.ttls {
		ttls[id] = ttl
	}
	r.mu.Unlock()
	return Write(ctx, r.store, revs, ttls, at)
}

// Write stores revs (consecutive) as one delta named with time at, with a lease record
// (TTL from ttls, 0 when missing) before the first revision that attaches a key to a lease.
func Write(ctx context.Context, store *snapstore.Store, revs []snapstore.Revision, ttls map[int64]int64, at time.Time) (catalog.Snapshot, error) {
	if len(revs) == 0 {
		return catalog.Snapshot{}, errors.New("write delta: no revisions")
	}
	from, to := revs[0].Revision, revs[len(revs)-1].Revision
	w, err := store.Create(ctx, catalog.Snapshot{Kind: catalog.KindDelta, From: from, Revision: to, Time: at})
	if err != nil {
		return catalog.Snapshot{}, err
	}
	defer w.Abort() //nolint:errcheck // a no-op after Commit
	enc, err := snapstore.NewDeltaEncoder(w, from, to)
	if err != nil {
		return catalog.Snapshot{}, err
	}
	written := map[int64]bool{}
	for _, rev := range revs {
		for _, ev := range rev.Events {
			if id := ev.Kv.Lease; ev.Type == mvccpb.PUT && id != 0 && !written[id] {
				if err := enc.Lease(snapstore.Lease{ID: id, TTL: ttls[id]}); err != nil {
					return catalog.Snapshot{}, err
				}
				written[id] = true
			}
		}
		if err := enc.Revision(rev); err != nil {
			return catalog.Snapshot{}, err
		}
	}
	if err := enc.Close(); err != nil {
		return catalog.Snapshot{}, err
	}
	return w.Commit()
}

// TTLs returns the lease TTLs the recorder learned (0: the lease was gone when it asked,
// and the deltas say the TTL is unknown).
func (r *Recorder) TTLs() map[int64]int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[int64]int64, len(r.ttls))
	for id, ttl := range r.ttls {
		out[id] = ttl
	}
	return out
}

// Stop ends the watch.
func (r *Recorder) Stop() {
	r.stop()
	<-r.done
}
