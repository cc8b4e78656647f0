package backup

import (
	"context"
	"errors"
	"fmt"

	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// Flusher lets its owner ask a running delta taker to upload at once every revision the
// member had applied when asked, instead of waiting for the end of the period. Make one with
// NewFlusher and put it in DeltaConfig.Flusher: it serves whichever RunDeltas runs with it
// (one at a time), across restarts of the taker.
type Flusher struct {
	reqs chan flushRequest
}

// NewFlusher returns a Flusher.
func NewFlusher() *Flusher {
	return &Flusher{reqs: make(chan flushRequest)}
}

// FlushResult is what a flush uploaded.
type FlushResult struct {
	// Revision is the member's revision when the flush began: every revision up to it is in
	// the store now (for a chain that started in an empty store, the revisions up to its
	// start are in the full snapshot runner's first snapshot).
	Revision int64
	// Deltas are the deltas uploaded to get there, oldest first; empty when the store
	// already held Revision.
	Deltas []catalog.Snapshot
}

// ErrFlushAbandoned is wrapped by the error of a flush that the taker gave up: it stopped,
// or its chain broke and restarts from a full snapshot.
var ErrFlushAbandoned = errors.New("the delta taker stopped before the flush completed")

// Flush asks the running taker to upload what it holds up to the member's current revision
// now, and waits for it. It fails at the first failed upload (the taker goes on retrying it
// in the background), or when ctx ends; when no taker runs (delta snapshots are disabled or
// this member is not the leader), it waits for one until ctx ends.
func (f *Flusher) Flush(ctx context.Context) (FlushResult, error) {
	req := flushRequest{reply: make(chan flushReply, 1)}
	select {
	case f.reqs <- req:
	case <-ctx.Done():
		return FlushResult{}, fmt.Errorf("flush deltas: no delta taker took the request: %w", ctx.Err())
	}
	select {
	case r := <-req.reply:
		return r.res, r.err
	case <-ctx.Done():
		return FlushResult{}, fmt.Errorf("flush deltas: %w (the upload goes on in the background)", ctx.Err())
	}
}

type flushRequest struct {
	reply chan flushReply // buffered: the taker never blocks on it
}

type flushReply struct {
	res FlushResult
	err error
}

// flushWait is a flush the follower serves: it waits until the store holds target.
type flushWait struct {
	target int64
	deltas []catalog.Snapshot
	reply  chan flushReply
}

// flushRequests returns the channel flush requests arrive on (nil, never ready, without a
// Flusher).
func (f *follower) flushRequests() chan flushRequest {
	if f.t.cfg.Flusher == nil {
		return nil
	}
	return f.t.cfg.Flusher.reqs
}

// startFlush registers a flush up to the member's current revision and starts uploading.
func (f *follower) startFlush(ctx context.Context, req flushRequest) {
	t := f.t
	rev, err := t.memberRevision(ctx)
	if err != nil {
		req.reply <- flushReply{err: fmt.Errorf("flush deltas: %w", err)}
		return
	}
	if f.uploadedThrough() >= rev {
		req.reply <- flushReply{res: FlushResult{Revision: rev}}
		return
	}
	t.log.Info("flushing delta snapshots on request", "up_to_revision", rev)
	f.flushes = append(f.flushes, &flushWait{target: rev, reply: req.reply})
	if f.retry != nil {
		f.retry = nil // asked for now: do not wait for the backoff
	}
	f.serveFlushes(ctx)
}

// serveFlushes answers the flushes the store now satisfies and starts an upload for the
// others once the watch delivered their revisions.
func (f *follower) serveFlushes(ctx context.Context) {
	t := f.t
	waiting := f.flushes[:0]
	lowest := int64(-1)
	done := f.uploadedThrough()
	for _, w := range f.flushes {
		if done >= w.target {
			w.reply <- flushReply{res: FlushResult{Revision: w.target, Deltas: w.deltas}}
			continue
		}
		waiting = append(waiting, w)
		if lowest < 0 || w.target < lowest {
			lowest = w.target
		}
	}
	f.flushes = waiting
	if len(waiting) > 0 && t.last >= lowest {
		f.upload(ctx)
	}
}

// uploadedThrough is the revision up to which every revision of the chain is uploaded:
// the one before the first revision held or pending. (An empty store's chain starts at the
// member's revision without an object: the full snapshot runner's first snapshot covers it.)
func (f *follower) uploadedThrough() int64 {
	t := f.t
	switch {
	case !t.held.empty():
		return t.held.from() - 1
	case !t.pending.empty():
		return t.pending.from() - 1
	default:
		return t.last
	}
}

// flushUploaded records an uploaded delta in the flushes it serves.
func (f *follower) flushUploaded(snap catalog.Snapshot) {
	for _, w := range f.flushes {
		w.deltas = append(w.deltas, snap)
	}
}

// failFlushes ends every flush with err.
func (f *follower) failFlushes(err error) {
	for _, w := range f.flushes {
		w.reply <- flushReply{err: err}
	}
	f.flushes = nil
}
