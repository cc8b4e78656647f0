package embedded

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/etcdserver"
	"go.etcd.io/etcd/server/v3/storage/backend"
	"go.etcd.io/etcd/server/v3/storage/mvcc"
	"go.etcd.io/etcd/server/v3/storage/schema"

	"github.com/etcdbr/etcdbr/internal/dbrev"
)

// Reading the member's events from its backend.
//
// etcd keeps every revision of every key in the "key" bucket of its backend, keyed by the
// revision (8 bytes main revision, '_', 8 bytes sub revision, and a 't' for a deletion), until
// a compaction removes the ones superseded before the compaction revision. That bucket is
// what etcd's watch reads for a watcher that is behind; a watcher that keeps up instead gets
// every write's events handed over on etcd's apply path, one response per revision. Events
// reads the bucket itself, every eventsPoll and as fast as it can while it is behind: the
// same events, without a watcher on the apply path.
const (
	eventsPoll      = 50 * time.Millisecond
	eventsWindow    = 1000    // revisions per read of the bucket
	eventsBatchSize = 8 << 20 // bytes of keys and values per response, past the first revision
)

// Events returns the events of every key of the member from revision from on, in revision
// order, the events of one revision in one response, as a watch of every key from that
// revision would send them (a deletion's Kv holds the key and the revision only). They are
// read from the member's backend (the db and the writes etcd has not committed to it yet):
// no watcher is added to etcd, whose watchers get every write's events on its apply path, so
// reading them costs the member's writes nothing. The responses' header revision is the
// member's revision when they were read.
//
// A response with CompactRevision set (and Canceled) says that etcd compacted revisions the
// reader still needed; the channel then closes. It also closes when ctx ends, when the member
// stops (the reader runs as one of the server's goroutines, so the backend is never closed
// under it) and after an error, which is logged.
func (e *Etcd) Events(ctx context.Context, from int64) clientv3.WatchChan {
	return ServerEvents(e.etcd.Server, e.lg)(ctx, from)
}

// ServerEvents returns Events for the etcd server srv running in this process; errors are
// logged to lg.
func ServerEvents(srv *etcdserver.EtcdServer, lg *slog.Logger) func(ctx context.Context, from int64) clientv3.WatchChan {
	if lg == nil {
		lg = slog.Default()
	}
	return func(ctx context.Context, from int64) clientv3.WatchChan {
		return serverEvents(ctx, srv, lg, from)
	}
}

func serverEvents(ctx context.Context, srv *etcdserver.EtcdServer, lg *slog.Logger, from int64) clientv3.WatchChan {
	ch := make(chan clientv3.WatchResponse, 1)
	var once sync.Once
	closeCh := func() { once.Do(func() { close(ch) }) }
	r := &eventReader{kv: srv.KV(), backend: srv.Backend, next: max(from, 1), out: ch, stopping: srv.StoppingNotify()}
	attached := make(chan struct{})
	srv.GoAttach(func() {
		close(attached)
		defer closeCh()
		if err := r.run(ctx); err != nil {
			lg.Error("reading the member's events from its backend", "from", r.next, "err", err)
		}
	})
	go func() {
		// GoAttach skips the reader when the server is stopping; the server's done channel
		// closes only after every goroutine it attached returned.
		select {
		case <-attached:
		case <-srv.StopNotify():
			closeCh()
		}
	}()
	return ch
}

// eventReader reads the events of the "key" bucket from revision next on into out.
type eventReader struct {
	kv       mvcc.KV
	backend  func() backend.Backend
	next     int64 // the first revision not sent yet
	out      chan<- clientv3.WatchResponse
	stopping <-chan struct{}
}

// run sends responses until ctx ends, the member stops, etcd compacted a revision the reader
// needs, or an error.
func (r *eventReader) run(ctx context.Context) error {
	poll := time.NewTimer(0)
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.stopping:
			return nil
		case <-poll.C:
		}
		for {
			resp, more, err := r.read()
			if err != nil {
				return err
			}
			if resp != nil {
				select {
				case r.out <- *resp:
				case <-ctx.Done():
					return nil
				case <-r.stopping:
					return nil
				}
				if resp.CompactRevision != 0 {
					return nil
				}
			}
			if !more {
				break
			}
		}
		poll.Reset(eventsPoll)
	}
}

// read reads the revisions from r.next on that the member holds, up to eventsWindow of them
// and eventsBatchSize bytes (at least one revision), and reports whether there are more.
func (r *eventReader) read() (resp *clientv3.WatchResponse, more bool, err error) {
	// The member's revision is read first: etcd raises it only once the revision's writes
	// are in the backend's read buffer, so the view opened after it holds every revision up
	// to it, each whole (a write transaction reaches the buffer at once).
	rev := r.kv.Rev()
	if rev < r.next {
		return nil, false, nil
	}
	tx := r.backend().ConcurrentReadTx()
	tx.RLock()
	defer tx.RUnlock()
	if compacted, ok := mvcc.UnsafeReadScheduledCompact(tx); ok && r.next < compacted {
		// Revisions before the compaction revision may be gone: a watch from r.next is
		// refused the same way.
		return &clientv3.WatchResponse{Header: pb.ResponseHeader{Revision: rev}, CompactRevision: compacted, Canceled: true}, false, nil
	}
	end := min(r.next+eventsWindow, rev+1)
	// Without a limit: with one, the backend returns the newest uncommitted writes alone
	// once they fill it.
	keys, vals := tx.UnsafeRange(schema.Key, revKey(r.next), revKey(end), 0)
	var evs []*clientv3.Event
	size, last := 0, int64(0)
	var prev []byte
	for i, k := range keys {
		// The range is the db's keys, then the read buffer's. Right after a commit etcd
		// 3.6 may hand out a copy of the buffer made before it (its cache is keyed by a
		// version the commit does not raise), whose writes are in the db too: they come
		// again, after keys as high or higher. Writes not committed yet are newer than
		// every committed one, so a key that does not rise is such a repeat.
		if prev != nil && bytes.Compare(k, prev) <= 0 {
			continue
		}
		prev = k
		main, tombstone, err := dbrev.ParseKey(k)
		if err != nil {
			return nil, false, err
		}
		if main != last && last != 0 && size >= eventsBatchSize {
			end = main // the rest in the next response
			break
		}
		var kv mvccpb.KeyValue
		if err := kv.Unmarshal(vals[i]); err != nil {
			return nil, false, fmt.Errorf("decode revision %d of the backend's key bucket: %w", main, err)
		}
		ev := &clientv3.Event{Type: mvccpb.PUT, Kv: &kv}
		if tombstone {
			ev.Type, kv.ModRevision = mvccpb.DELETE, main
		}
		evs = append(evs, ev)
		size += len(k) + len(vals[i])
		last = main
	}
	// Revisions missing below end (the member's revision was raised without writes, as a
	// restore that bumps it does) are skipped, as a watch skips them.
	r.next = end
	if len(evs) > 0 {
		resp = &clientv3.WatchResponse{Header: pb.ResponseHeader{Revision: max(rev, last)}, Events: evs}
	}
	return resp, end <= rev, nil
}

// revKey is the key of the "key" bucket that sorts before every write of revision main.
func revKey(main int64) []byte {
	return mvcc.RevToBytes(mvcc.Revision{Main: main}, mvcc.NewRevBytes())
}
