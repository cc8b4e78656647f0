package backup

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/etcdbr/etcdbr/snapstore"
)

// eventOverhead approximates the memory an event takes beyond its protobuf size (the
// Event and KeyValue structs, slice headers, the revision's slot).
const eventOverhead = 128

// deltaBatch is a run of consecutive revisions with their events: what one delta holds.
type deltaBatch struct {
	revs   []snapstore.Revision
	bytes  int64 // approximate memory held
	events int
	// leases are the leases the events reference with their TTLs, resolved before the
	// first upload attempt and kept for the retries.
	leases []snapstore.Lease
}

func (b *deltaBatch) empty() bool { return b == nil || len(b.revs) == 0 }
func (b *deltaBatch) from() int64 { return b.revs[0].Revision }
func (b *deltaBatch) to() int64   { return b.revs[len(b.revs)-1].Revision }

func (b *deltaBatch) size() int64 {
	if b == nil {
		return 0
	}
	return b.bytes
}

// bytesPerRevision is the average memory a revision of the batch holds (0: empty).
func (b *deltaBatch) bytesPerRevision() int64 {
	if b.empty() {
		return 0
	}
	return b.bytes / int64(len(b.revs))
}

// observed returns when the batch's first revision was observed (zero for an empty batch).
func (b *deltaBatch) observed() time.Time {
	if b.empty() {
		return time.Time{}
	}
	return b.revs[0].Time
}

// add appends the next revision.
func (b *deltaBatch) add(r snapstore.Revision) {
	b.revs = append(b.revs, r)
	b.events += len(r.Events)
	for _, ev := range r.Events {
		b.bytes += int64(ev.Size()) + eventOverhead
	}
}

// leaseIDs returns the leases the batch's events reference, sorted.
func (b *deltaBatch) leaseIDs() []int64 {
	seen := map[int64]bool{}
	for _, r := range b.revs {
		for _, ev := range r.Events {
			if id := eventLease(ev); id != 0 {
				seen[id] = true
			}
		}
	}
	ids := make([]int64, 0, len(seen))
	for id := range seen {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// eventLease returns the lease a put attaches its key to (0 for none or a delete).
func eventLease(ev *mvccpb.Event) int64 {
	if ev.Type != mvccpb.PUT || ev.Kv == nil {
		return 0
	}
	return ev.Kv.Lease
}

// leaseCache holds the granted TTLs of the leases recent events referenced. A lease is
// looked up when an event first references it (soon after the write, while it most likely
// still exists) and again only if it was not referenced by the last two deltas. A lease
// that no longer exists is recorded with TTL 0.
type leaseCache struct {
	lookup   func(ctx context.Context, id int64) (int64, error)
	cur, old map[int64]int64
}

func newLeaseCache(lookup func(ctx context.Context, id int64) (int64, error)) *leaseCache {
	return &leaseCache{lookup: lookup, cur: map[int64]int64{}, old: map[int64]int64{}}
}

// see records that an event referenced lease id and looks it up if it is not cached. A
// failed lookup is left for resolve to retry.
func (c *leaseCache) see(ctx context.Context, id int64) {
	_, _ = c.get(ctx, id)
}

// get returns lease id's TTL, from the cache or looked up: 0 when the lease no longer
// exists.
func (c *leaseCache) get(ctx context.Context, id int64) (int64, error) {
	if ttl, ok := c.cur[id]; ok {
		return ttl, nil
	}
	if ttl, ok := c.old[id]; ok {
		c.cur[id] = ttl
		return ttl, nil
	}
	lctx, cancel := context.WithTimeout(ctx, leaseLookupTimeout)
	defer cancel()
	ttl, err := c.lookup(lctx, id)
	switch {
	case errors.Is(err, ErrLeaseNotFound):
		ttl = 0
	case err != nil:
		return 0, classify(ReasonEtcd, fmt.Errorf("look up the TTL of lease %x: %w", id, err))
	}
	c.cur[id] = ttl
	return ttl, nil
}

// resolve returns the leases with their TTLs.
func (c *leaseCache) resolve(ctx context.Context, ids []int64) ([]snapstore.Lease, error) {
	leases := make([]snapstore.Lease, 0, len(ids))
	for _, id := range ids {
		ttl, err := c.get(ctx, id)
		if err != nil {
			return nil, err
		}
		leases = append(leases, snapstore.Lease{ID: id, TTL: ttl})
	}
	return leases, nil
}

// rotate forgets the leases not referenced since the previous rotation; it is called after
// every delta, so the cache holds only the leases of the last two.
func (c *leaseCache) rotate() {
	c.old = c.cur
	c.cur = make(map[int64]int64, len(c.old))
}
