package backup

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdbr/etcdbr/internal/backoff"
	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// chainBreak says why the watch cannot continue the chain.
type chainBreak string

func (c chainBreak) Error() string { return string(c) }

// uploadResult is the outcome of one upload attempt.
type uploadResult struct {
	snap catalog.Snapshot
	err  error
	took time.Duration
}

// follower is the event loop that follows the watch: it buffers revisions, uploads a delta
// every period (or when the buffer fills), retries failed uploads, re-creates a watch that
// ended and pauses the watch while the memory limit is reached. One goroutine runs it; the
// only other goroutine is the upload in flight, which reports on results.
type follower struct {
	t *deltaTaker

	wch       clientv3.WatchChan // nil while there is no watch
	stopWatch context.CancelFunc
	paused    bool // the watch is stopped because the memory limit is reached

	round  *catchUpRound // the segment watches that replace the watch while catching up
	newest int64         // the newest revision of the member a watch response reported

	uploading    bool
	tickMissed   bool // a period ended while an upload was in flight or waited for its retry
	cancelUpload context.CancelFunc
	results      chan uploadResult
	retry        <-chan time.Time // set while a failed upload waits to be retried
	rewatch      <-chan time.Time // set while an ended watch waits to be re-created

	uploadBackoff, watchBackoff backoff.Backoff

	flushes []*flushWait // flushes asked for and not yet served
}

// follow takes deltas from a watch starting at t.last+1. It returns a chainBreak when the
// chain cannot continue, or ctx's error once ctx ended; either way no upload is in flight
// then, and t.held and t.pending hold what is not in the store yet.
func (t *deltaTaker) follow(ctx context.Context) error {
	f := &follower{
		t:             t,
		results:       make(chan uploadResult, 1),
		uploadBackoff: backoff.Backoff{Min: t.cfg.RetryMin, Max: t.cfg.RetryMax},
		watchBackoff:  backoff.Backoff{Min: t.cfg.RetryMin, Max: t.cfg.RetryMax},
	}
	defer f.closeWatch()
	defer f.stopCatchUp()
	defer f.waitUpload(0)
	defer func() {
		f.failFlushes(fmt.Errorf("flush deltas: %w (it restarts, or stops)", ErrFlushAbandoned))
	}()
	ticker := time.NewTicker(t.cfg.Period)
	defer ticker.Stop()

	f.watch(ctx)
	for {
		select {
		case <-ctx.Done():
			if !errors.Is(context.Cause(ctx), ErrSkipped) && (f.wch != nil || f.round != nil) {
				f.drain(ctx)
			}
			f.waitUpload(deltaDrainTimeout)
			return ctx.Err()
		case resp, ok := <-f.wch:
			if err := f.receive(ctx, resp, ok); err != nil {
				return err
			}
			if len(f.flushes) > 0 {
				f.serveFlushes(ctx)
			}
		case s := <-f.segment():
			if err := f.receiveSegment(ctx, s); err != nil {
				return err
			}
			if len(f.flushes) > 0 {
				f.serveFlushes(ctx)
			}
		case req := <-f.flushRequests():
			f.startFlush(ctx, req)
		case <-ticker.C:
			if t.pending.empty() && (f.wch != nil || f.round != nil) {
				if err := f.checkNotBehind(ctx); err != nil {
					return err
				}
			}
			if t.pending.empty() && t.held.empty() {
				t.log.Debug("delta period ended without new revisions: no delta", "last_revision", t.last)
			}
			f.tickMissed = f.uploading || f.retry != nil
			f.upload(ctx)
		case res := <-f.results:
			if err := f.uploaded(ctx, res); err != nil {
				return err
			}
		case <-f.retry:
			f.retry = nil
			f.upload(ctx)
		case <-f.rewatch:
			f.rewatch = nil
			f.watch(ctx)
		}
	}
}

// watch starts a watch of every key from the revision after the chain's last. It does not
// end with ctx, so that the events of the writes made before a stop can still be drained.
func (f *follower) watch(ctx context.Context) {
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	f.wch = f.t.cfg.Events(wctx, f.t.last+1)
	f.stopWatch = cancel
}

func (f *follower) closeWatch() {
	if f.stopWatch != nil {
		f.stopWatch()
		f.stopWatch = nil
	}
	f.wch = nil
}

// receive handles one watch response.
func (f *follower) receive(ctx context.Context, resp clientv3.WatchResponse, ok bool) error {
	t := f.t
	switch {
	case !ok:
		f.watchEnded(errors.New("the watch channel closed"))
		return nil
	case resp.CompactRevision != 0:
		return chainBreak(fmt.Sprintf("etcd compacted its history up to revision %d and the chain needs revision %d",
			resp.CompactRevision, t.last+1))
	case resp.Err() != nil:
		f.watchEnded(resp.Err())
		return nil
	case len(resp.Events) == 0:
		return nil // progress notification
	}
	full, err := t.accept(ctx, resp.Events, time.Now())
	if err != nil {
		return err
	}
	t.progress()
	f.watchBackoff.Reset()
	if behind := f.behindBy(resp.Header.Revision); !full && behind > catchUpLag {
		t.log.Info("the delta watch is behind the member: catching up with segment watches",
			"from", t.last+1, "member_revision", f.newest, "behind", behind)
		f.startCatchUp(ctx)
	}
	f.accepted(ctx, full)
	return nil
}

// receiveSegment handles the next segment of a catch-up round.
func (f *follower) receiveSegment(ctx context.Context, s segmentResult) error {
	full, err := f.acceptSegment(ctx, s)
	if err != nil {
		return err
	}
	f.accepted(ctx, full)
	return nil
}

// accepted pauses the watch when the memory limit is reached (full) and starts an upload
// once the pending batch holds half of it.
func (f *follower) accepted(ctx context.Context, full bool) {
	t := f.t
	if full {
		t.log.Warn("the delta buffer reached its memory limit: pausing the watch until an upload makes room; etcd keeps the revisions until it compacts them",
			"buffered_bytes", t.held.size()+t.pending.size(), "limit", t.cfg.MemoryLimit, "last_revision", t.last)
		f.closeWatch()
		f.stopCatchUp()
		f.paused = true
	}
	if t.pending.size() >= t.cfg.MemoryLimit/2 {
		f.upload(ctx)
	}
}

// checkNotBehind breaks the chain when the member's revision is below the chain's last: it
// went back in history under the watch (an external etcd restored from a backup), and a
// resumed watch would append the new history's revisions to the old chain once they pass
// it. Checked on every period without events; a failed check is only logged.
func (f *follower) checkNotBehind(ctx context.Context) error {
	rev, err := f.t.memberRevision(ctx)
	switch {
	case err != nil:
		f.t.log.Debug("delta snapshots: cannot read the member's revision", "err", err)
		return nil
	case rev < f.t.last:
		return chainBreak(fmt.Sprintf("the member's revision %d is below the chain's last revision %d: it went back in history (restored from a backup?)",
			rev, f.t.last))
	}
	return nil
}

// watchEnded schedules a new watch after an error ended the current one.
func (f *follower) watchEnded(err error) {
	f.closeWatch()
	wait := f.watchBackoff.Next()
	f.t.log.Warn("the delta watch ended; watching again", "err", err, "from", f.t.last+1, "in", wait)
	f.rewatch = time.After(wait)
}

// accept appends the revisions of a watch response's events to the pending batch. Events
// of one revision arrive together in one response (etcd's watch never splits a revision
// without WithFragment, which the taker does not use). Revisions already in the chain are
// skipped; a revision that does not follow the chain's last breaks the chain. It reports
// full when the memory limit is reached; the rest of the response is then not taken.
func (t *deltaTaker) accept(ctx context.Context, wevs []*clientv3.Event, at time.Time) (full bool, err error) {
	evs := make([]*mvccpb.Event, len(wevs))
	for i, ev := range wevs {
		evs[i] = (*mvccpb.Event)(ev)
	}
	for i := 0; i < len(evs); {
		if evs[i].Kv == nil {
			return false, chainBreak("the watch sent an event without a key")
		}
		rev := evs[i].Kv.ModRevision
		j := i + 1
		for j < len(evs) && evs[j].Kv != nil && evs[j].Kv.ModRevision == rev {
			j++
		}
		group := evs[i:j:j]
		i = j
		if rev <= t.last {
			t.log.Debug("delta watch: skipping a revision already in the chain", "revision", rev)
			continue
		}
		if rev != t.last+1 {
			return false, chainBreak(fmt.Sprintf("the watch skipped from revision %d to %d (does the etcd user lack read access to some keys?)",
				t.last, rev))
		}
		t.pending.add(snapstore.Revision{Revision: rev, Time: at, Events: group})
		t.last = rev
		for _, ev := range group {
			if id := eventLease(ev); id != 0 {
				t.leases.see(ctx, id)
			}
		}
		if t.held.size()+t.pending.size() >= t.cfg.MemoryLimit {
			return true, nil
		}
	}
	return false, nil
}

// upload starts uploading the held batch (a retry) or the pending one, unless an upload is
// in flight or waits for its retry.
func (f *follower) upload(ctx context.Context) {
	t := f.t
	if f.uploading || f.retry != nil {
		return
	}
	if t.held.empty() {
		if t.pending.empty() {
			return
		}
		t.held, t.pending = t.pending, &deltaBatch{}
	}
	b := t.held
	if b.leases == nil {
		leases, err := t.leases.resolve(ctx, b.leaseIDs())
		if err != nil {
			f.failed(b, err)
			return
		}
		b.leases = leases
	}
	uctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	f.uploading, f.cancelUpload = true, cancel
	go func() {
		start := time.Now()
		snap, err := writeDelta(uctx, t.cfg.Store, b, t.cfg.Fence)
		f.results <- uploadResult{snap: snap, err: err, took: time.Since(start)}
	}()
}

// uploaded handles the end of an upload and starts what it makes possible. It returns the
// error of an upload that was fenced: the taker stops.
func (f *follower) uploaded(ctx context.Context, res uploadResult) error {
	t := f.t
	b := t.held
	if !f.settle(res) {
		if errors.Is(res.err, ErrFenced) {
			t.fencedUpload(b.from(), b.to(), res.err)
			f.failFlushes(fmt.Errorf("flush deltas: %w", res.err))
			return res.err
		}
		f.failed(b, res.err)
		return nil
	}
	f.flushUploaded(res.snap)
	if f.paused && t.held.size()+t.pending.size() < t.cfg.MemoryLimit {
		t.log.Info("resuming the delta watch", "from", t.last+1)
		f.paused = false
		f.watch(ctx)
	}
	if f.tickMissed || t.pending.size() >= t.cfg.MemoryLimit/2 {
		f.tickMissed = false
		f.upload(ctx)
	}
	f.serveFlushes(ctx)
	return nil
}

// settle records the outcome of the upload in flight; it reports whether it succeeded.
func (f *follower) settle(res uploadResult) bool {
	f.uploading = false
	f.cancelUpload()
	if res.err != nil {
		return false
	}
	f.uploadBackoff.Reset()
	f.t.committed(res.snap, f.t.held, res.took)
	return true
}

// failed schedules a retry of batch b, which stays held with its revision range.
func (f *follower) failed(b *deltaBatch, err error) {
	f.t.cfg.Observer.Failed(Failure{Kind: catalog.KindDelta, Op: OpSnapshot, Reason: ReasonOf(err), Err: err})
	f.failFlushes(fmt.Errorf("flush deltas: upload of revisions %d..%d failed (retried in the background): %w", b.from(), b.to(), err))
	wait := f.uploadBackoff.Next()
	f.t.log.Error("delta upload failed; the events stay in memory and the upload is retried",
		"from", b.from(), "to", b.to(), "err", err, "retry_in", wait,
		"buffered_bytes", f.t.held.size()+f.t.pending.size(), "limit", f.t.cfg.MemoryLimit)
	f.retry = time.After(wait)
}

// waitUpload waits for the upload in flight; after timeout (0: none) it cancels it.
func (f *follower) waitUpload(timeout time.Duration) {
	if !f.uploading {
		return
	}
	var expired <-chan time.Time
	if timeout > 0 {
		timer := time.NewTimer(timeout)
		defer timer.Stop()
		expired = timer.C
	}
	select {
	case res := <-f.results:
		if !f.settle(res) {
			f.unsettled(res.err, "delta upload failed")
		}
		return
	case <-expired:
	}
	f.cancelUpload()
	if res := <-f.results; !f.settle(res) {
		f.unsettled(res.err, "delta upload abandoned: it did not finish in time")
	}
}

// unsettled reports an upload that failed while the follower stops.
func (f *follower) unsettled(err error, msg string) {
	if errors.Is(err, ErrFenced) {
		f.t.fencedUpload(f.t.held.from(), f.t.held.to(), err)
		f.failFlushes(fmt.Errorf("flush deltas: %w", err))
		return
	}
	f.t.log.Warn(msg, "err", err)
}

// drain takes the events of the writes etcd applied before the stop began, so that the
// final delta covers them.
func (f *follower) drain(ctx context.Context) {
	t := f.t
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), deltaDrainTimeout)
	defer cancel()
	target, err := t.memberRevision(dctx)
	if err != nil {
		t.log.Warn("stopping: cannot read the member's revision; the final delta holds the events seen so far", "err", err)
		return
	}
	for t.last < target {
		select {
		case <-dctx.Done():
			t.log.Warn("stopping before the watch delivered every revision: the final delta ends earlier",
				"last_revision", t.last, "member_revision", target)
			return
		case s := <-f.segment():
			if full, err := f.acceptSegment(dctx, s); err != nil || full || (f.round == nil && f.wch == nil) {
				return
			}
		case resp, ok := <-f.wch:
			if !ok || resp.CompactRevision != 0 || resp.Err() != nil {
				return
			}
			if full, err := t.accept(dctx, resp.Events, time.Now()); err != nil || full {
				return
			}
		}
	}
}

// committed records a delta that reached the store.
func (t *deltaTaker) committed(snap catalog.Snapshot, b *deltaBatch, took time.Duration) {
	t.log.Info("delta taken", "from", snap.From, "to", snap.Revision, "revisions", len(b.revs), "events", b.events,
		"leases", len(b.leases), "bytes", snap.Size, "duration", took.Round(time.Millisecond), "object", snap.Key)
	t.stored = max(t.stored, snap.Revision)
	if t.held == b {
		t.held = nil
	}
	t.leases.rotate()
	t.cfg.Observer.Taken(Taken{Snapshot: snap, Duration: took, Revisions: len(b.revs), Events: b.events})
	t.progress()
}

// flush uploads the held batch, then the pending one, retrying until they are in the store
// or ctx ends.
func (t *deltaTaker) flush(ctx context.Context) error {
	for !t.held.empty() || !t.pending.empty() {
		if t.held.empty() {
			t.held, t.pending = t.pending, &deltaBatch{}
		}
		b := t.held
		err := t.retry(ctx, fmt.Sprintf("upload delta %d..%d", b.from(), b.to()), OpSnapshot, func() error {
			if b.leases == nil {
				leases, err := t.leases.resolve(ctx, b.leaseIDs())
				if err != nil {
					return err
				}
				b.leases = leases
			}
			start := time.Now()
			snap, err := writeDelta(ctx, t.cfg.Store, b, t.cfg.Fence)
			if errors.Is(err, ErrFenced) {
				t.fencedUpload(b.from(), b.to(), err)
			}
			if err != nil {
				return err
			}
			t.committed(snap, b, time.Since(start))
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}
