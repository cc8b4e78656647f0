package backup

import (
	"context"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Catching up in segments.
//
// A watch that falls behind etcd is moved to etcd's unsynced watchers: on etcd 3.6, every
// 100 ms etcd reads every event from the watch's next revision up to its newest one and
// sends the first 1000 revisions of them, so a single watch catches up at about 6,600
// revisions/s and each pass re-reads the whole backlog (quadratic). When the taker's watch is
// more than catchUpLag revisions behind the member (the watch response's header revision
// against the last revision taken), the taker replaces it by up to catchUpWatchers watches,
// each from the start of its own segment of catchUpSegment revisions: etcd serves all of
// them from one read, so one pass delivers that many segments. The segments are accepted
// strictly in order into the pending batch, as a single watch's responses are; once the
// taker is within catchUpLag/2 of the newest revision it knows of, a single live watch
// resumes from the next revision.
const (
	catchUpLag      = 5000
	catchUpSegment  = 1000 // etcd 3.6's watchBatchMaxRevs: what a watch that is behind gets per pass
	catchUpWatchers = 32
)

// segmentResult is what one segment watch received: the events of revisions from..to.
type segmentResult struct {
	from, to  int64
	evs       []*clientv3.Event
	newest    int64 // the newest revision of the member the watch's responses reported
	compacted int64 // etcd's compact revision when it compacted from already
	err       error
}

// catchUpRound is one round of segment watches; its segments are accepted in order.
type catchUpRound struct {
	cancel context.CancelFunc
	segs   []chan segmentResult
	next   int // the segment to accept next
}

// behindBy is how far the chain's last revision is behind newest, a revision of the member.
func (f *follower) behindBy(newest int64) int64 {
	f.newest = max(f.newest, newest)
	return f.newest - f.t.last
}

// segment is the channel of the segment to accept next, nil while not catching up.
func (f *follower) segment() <-chan segmentResult {
	if f.round == nil {
		return nil
	}
	return f.round.segs[f.round.next]
}

// startCatchUp replaces the watch by a round of segment watches from the revision after the
// chain's last up to at most f.newest. The round holds its segments outside the pending
// batch until they are accepted, so the number of segments is bounded by half the memory
// limit at the size of the revisions taken so far.
func (f *follower) startCatchUp(ctx context.Context) {
	t := f.t
	f.closeWatch()
	f.stopCatchUp()
	watchers := int64(catchUpWatchers)
	if perRev := max(t.pending.bytesPerRevision(), t.held.bytesPerRevision()); perRev > 0 {
		free := t.cfg.MemoryLimit/2 - t.held.size() - t.pending.size()
		watchers = min(watchers, max(1, free/(perRev*catchUpSegment)))
	}
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	round := &catchUpRound{cancel: cancel}
	for from := t.last + 1; from <= f.newest && int64(len(round.segs)) < watchers; from += catchUpSegment {
		to := min(from+catchUpSegment-1, f.newest)
		done := make(chan segmentResult, 1)
		round.segs = append(round.segs, done)
		go func() { done <- watchSegment(rctx, t.cfg.Events, from, to) }()
	}
	f.round = round
	t.log.Debug("delta watch: a round of segment watches", "from", t.last+1, "member_revision", f.newest,
		"behind", f.newest-t.last, "segments", len(round.segs))
}

// stopCatchUp ends the round of segment watches, if any.
func (f *follower) stopCatchUp() {
	if f.round != nil {
		f.round.cancel()
		f.round = nil
	}
}

// acceptSegment accepts the next segment of the round into the pending batch. It then
// starts the next round, or the live watch once the taker is close to the member's newest
// revision. It reports full when the memory limit was reached (the round is stopped; the
// caller pauses the watch).
func (f *follower) acceptSegment(ctx context.Context, s segmentResult) (full bool, err error) {
	t := f.t
	switch {
	case s.compacted != 0:
		f.stopCatchUp()
		return false, chainBreak(fmt.Sprintf("etcd compacted its history up to revision %d and the chain needs revision %d",
			s.compacted, t.last+1))
	case s.err != nil:
		f.stopCatchUp()
		f.watchEnded(s.err)
		return false, nil
	}
	full, err = t.accept(ctx, s.evs, time.Now())
	if err != nil {
		f.stopCatchUp()
		return false, err
	}
	t.progress()
	f.watchBackoff.Reset()
	f.behindBy(s.newest)
	switch {
	case full:
		f.stopCatchUp()
		return true, nil
	case t.last < s.to:
		f.stopCatchUp()
		f.watchEnded(fmt.Errorf("the watch of revisions %d..%d ended at revision %d", s.from, s.to, t.last))
		return false, nil
	}
	f.round.next++
	if f.round.next < len(f.round.segs) {
		return false, nil
	}
	f.stopCatchUp()
	if f.newest-t.last > catchUpLag/2 {
		f.startCatchUp(ctx)
	} else {
		t.log.Info("the delta watch caught up: watching live again", "from", t.last+1, "member_revision", f.newest)
		f.watch(ctx)
	}
	return false, nil
}

// watchSegment watches every key from revision from until it received revision to (etcd
// never splits a revision across watch responses) and returns the events of from..to.
func watchSegment(ctx context.Context, events func(context.Context, int64) clientv3.WatchChan, from, to int64) segmentResult {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	res := segmentResult{from: from, to: to}
	for resp := range events(ctx, from) {
		if resp.CompactRevision != 0 {
			res.compacted = resp.CompactRevision
			return res
		}
		if err := resp.Err(); err != nil {
			res.err = fmt.Errorf("watch revisions %d..%d: %w", from, to, err)
			return res
		}
		res.newest = max(res.newest, resp.Header.Revision)
		for i, ev := range resp.Events {
			if ev.Kv != nil && ev.Kv.ModRevision > to {
				res.evs = append(res.evs, resp.Events[:i]...)
				return res
			}
		}
		res.evs = append(res.evs, resp.Events...)
		if n := len(res.evs); n > 0 && res.evs[n-1].Kv != nil && res.evs[n-1].Kv.ModRevision == to {
			return res
		}
	}
	if err := ctx.Err(); err != nil {
		res.err = fmt.Errorf("watch revisions %d..%d: %w", from, to, err)
	} else {
		res.err = fmt.Errorf("watch revisions %d..%d ended", from, to)
	}
	return res
}
