package deltatest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdbr/etcdbr/internal/etcdtest"
)

// Churn is a seeded mix of every kind of write etcd has: puts of new keys and overwrites,
// deletes, range deletes, multi-op transactions, leases granted, attached, detached, revoked,
// and leases that expire. The same seed gives the same operations, and, since the
// operations run one at a time and each expiry is waited for, the same revisions.
type Churn struct {
	Seed      uint64
	Ops       int // operations
	Keys      int // size of the key space (default 200)
	ValueSize int // bytes per value, at most (default 64)
	// Expiring is how many leases are granted with ExpiringTTL, attached to keys and left to
	// expire (each waits for the expiry, about ExpiringTTL+1 seconds).
	Expiring    int
	ExpiringTTL int64 // default 2, etcd's minimum with its default timeouts
}

// ChurnResult is what a Churn did.
type ChurnResult struct {
	Revision int64           // the revision after the last operation
	TTLs     map[int64]int64 // every lease granted -> its TTL
}

// Run applies the operations one at a time through cli; after each one that wrote a
// revision, step is called with the operation's index and the new revision (nothing else
// writes while step runs, except leases expiring, which Run waits for).
func (c Churn) Run(ctx context.Context, cli *clientv3.Client, step func(op int, rev int64) error) (ChurnResult, error) {
	if c.Keys <= 0 {
		c.Keys = 200
	}
	if c.ValueSize <= 0 {
		c.ValueSize = 64
	}
	if c.ExpiringTTL <= 0 {
		c.ExpiringTTL = 2
	}
	rng := rand.New(rand.NewPCG(c.Seed, c.Seed^0x51ed2701))
	res := ChurnResult{TTLs: map[int64]int64{}}
	key := func() string { return fmt.Sprintf("/churn/k%04d", rng.IntN(c.Keys)) }
	value := func() string {
		b := make([]byte, 1+rng.IntN(c.ValueSize))
		for i := range b {
			b[i] = byte(' ' + rng.IntN(95))
		}
		return string(b)
	}
	var leases []clientv3.LeaseID // granted and not revoked
	grant := func(ttl int64) (clientv3.LeaseID, error) {
		l, err := cli.Grant(ctx, ttl)
		if err != nil {
			return 0, fmt.Errorf("grant: %w", err)
		}
		res.TTLs[int64(l.ID)] = l.TTL
		return l.ID, nil
	}
	// Expiring leases are spread over the run.
	expireAt := map[int]bool{}
	for i := range c.Expiring {
		expireAt[(i+1)*c.Ops/(c.Expiring+1)] = true
	}

	last, err := cli.Get(ctx, "/churn/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return res, fmt.Errorf("churn: %w", err)
	}
	res.Revision = last.Header.Revision
	for op := range c.Ops {
		var rev int64
		var err error
		switch p := rng.IntN(100); {
		case expireAt[op]:
			rev, err = c.expire(ctx, cli, grant, key, value)
		case p < 35: // put, often an overwrite, detaching any lease
			rev, err = header(cli.Put(ctx, key(), value()))
		case p < 47 && len(leases) > 0: // put with a lease (attach, or move to another lease)
			rev, err = header(cli.Put(ctx, key(), value(), clientv3.WithLease(leases[rng.IntN(len(leases))])))
		case p < 57: // delete
			rev, err = header(cli.Delete(ctx, key()))
		case p < 61: // range delete of a slice of the key space
			from := rng.IntN(c.Keys)
			rev, err = header(cli.Delete(ctx, fmt.Sprintf("/churn/k%04d", from),
				clientv3.WithRange(fmt.Sprintf("/churn/k%04d", from+1+rng.IntN(max(1, c.Keys/20))))))
		case p < 78: // a transaction of several puts and deletes of distinct keys
			rev, err = c.txn(ctx, cli, rng, leases, key, value)
		case p < 84: // grant
			var id clientv3.LeaseID
			id, err = grant(600 + rng.Int64N(3000))
			leases = append(leases, id)
		case p < 88 && len(leases) > 0: // revoke, deleting the lease's keys
			i := rng.IntN(len(leases))
			rev, err = header(cli.Revoke(ctx, leases[i]))
			leases = append(leases[:i], leases[i+1:]...)
		default:
			rev, err = header(cli.Put(ctx, key(), value()))
		}
		if err != nil {
			return res, fmt.Errorf("churn op %d: %w", op, err)
		}
		if rev > res.Revision {
			res.Revision = rev
			if step != nil {
				if err := step(op, rev); err != nil {
					return res, err
				}
			}
		}
	}
	return res, nil
}

// txn commits 2-6 puts and deletes of distinct keys in one transaction.
func (c Churn) txn(ctx context.Context, cli *clientv3.Client, rng *rand.Rand, leases []clientv3.LeaseID, key, value func() string) (int64, error) {
	seen := map[string]bool{}
	var ops []clientv3.Op
	for range 2 + rng.IntN(5) {
		k := key()
		if seen[k] {
			continue
		}
		seen[k] = true
		switch n := rng.IntN(10); {
		case n < 3:
			ops = append(ops, clientv3.OpDelete(k))
		case n < 5 && len(leases) > 0:
			ops = append(ops, clientv3.OpPut(k, value(), clientv3.WithLease(leases[rng.IntN(len(leases))])))
		default:
			ops = append(ops, clientv3.OpPut(k, value()))
		}
	}
	resp, err := cli.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return 0, fmt.Errorf("txn: %w", err)
	}
	return resp.Header.Revision, nil
}

// expire grants a short lease, attaches two keys to it and waits until etcd expired it and
// deleted them.
func (c Churn) expire(ctx context.Context, cli *clientv3.Client, grant func(int64) (clientv3.LeaseID, error), key, value func() string) (int64, error) {
	id, err := grant(c.ExpiringTTL)
	if err != nil {
		return 0, err
	}
	keys := []string{key() + "/expiring", key() + "/expiring"}
	for _, k := range keys {
		if _, err := cli.Put(ctx, k, value(), clientv3.WithLease(id)); err != nil {
			return 0, fmt.Errorf("put with an expiring lease: %w", err)
		}
	}
	deadline := time.Now().Add(time.Duration(c.ExpiringTTL)*time.Second + time.Minute)
	for {
		ttl, err := cli.TimeToLive(ctx, id)
		if err != nil {
			return 0, fmt.Errorf("wait for lease %x to expire: %w", id, err)
		}
		if ttl.TTL == -1 {
			resp, err := cli.Get(ctx, keys[0], clientv3.WithCountOnly())
			if err != nil {
				return 0, err
			}
			if resp.Count == 0 {
				return resp.Header.Revision, nil
			}
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("lease %x did not expire", id)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// header returns the revision in a response's header.
func header(resp any, err error) (int64, error) {
	if err != nil {
		return 0, err
	}
	switch r := resp.(type) {
	case *clientv3.PutResponse:
		return r.Header.Revision, nil
	case *clientv3.DeleteResponse:
		return r.Header.Revision, nil
	case *clientv3.LeaseRevokeResponse:
		return r.Header.Revision, nil
	}
	return 0, fmt.Errorf("response %T without a known header", resp)
}

// LeaseTTLs says which TTL a restore may give each lease.
type LeaseTTLs struct {
	Granted map[int64]int64 // the TTL the source granted
	// Unknown are the leases the deltas hold without a TTL: a restore that grants one from
	// a delta gives it MinTTL (one in the full snapshot keeps its TTL).
	Unknown map[int64]bool
	MinTTL  int64
}

// GrantedTTLs returns every lease the source behind cli holds with the TTL it was granted:
// churned (a Churn's TTLs, kept as they are, revoked leases included) and the others, such
// as a workload's own.
func GrantedTTLs(ctx context.Context, cli *clientv3.Client, churned map[int64]int64) (map[int64]int64, error) {
	leases, err := cli.Leases(ctx)
	if err != nil {
		return nil, fmt.Errorf("list the leases: %w", err)
	}
	granted := churned
	for _, l := range leases.Leases {
		if _, ok := granted[int64(l.ID)]; ok {
			continue
		}
		ttl, err := cli.TimeToLive(ctx, l.ID)
		if err != nil {
			return nil, fmt.Errorf("the TTL of lease %x: %w", l.ID, err)
		}
		granted[int64(l.ID)] = ttl.GrantedTTL
	}
	return granted, nil
}

// ExpectedTTLs describes the leases of a run: granted is what the source granted, recorded
// what the deltas hold (0: unknown), minTTL the restored member's minimum TTL.
func ExpectedTTLs(granted, recorded map[int64]int64, minTTL int64) LeaseTTLs {
	l := LeaseTTLs{Granted: granted, Unknown: map[int64]bool{}, MinTTL: minTTL}
	for id, ttl := range recorded {
		if ttl == 0 {
			l.Unknown[id] = true
		}
	}
	return l
}

// Compare lists the differences between the source's data at a revision and a restored
// member's, as a restore promises them (at most limit, 0: all): the revision; every key with
// its value, create and mod revisions, version and lease; and every lease a key uses, with
// the TTL it was granted (or the minimum, when the deltas do not know it). Leases no key
// uses are not compared: a restore does not bring back leases without keys, and leases
// revoked after the full snapshot stay (with no keys) until they expire.
func Compare(want, got etcdtest.Dump, ttls LeaseTTLs, limit int) []string {
	w, g := want, got
	w.Leases, g.Leases = nil, nil
	out := etcdtest.Diff(w, g, limit)
	used := map[int64]bool{}
	for _, kv := range want.KVs {
		if kv.Lease != 0 {
			used[kv.Lease] = true
		}
	}
	ids := make([]int64, 0, len(used))
	for id := range used {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		if limit > 0 && len(out) >= limit {
			break
		}
		wantTTL, known := ttls.Granted[id]
		gotTTL, ok := got.Leases[id]
		switch {
		case !known:
			out = append(out, fmt.Sprintf("lease %x: used by a key but its TTL is not known to the test", id))
		case ok && (gotTTL == wantTTL || (ttls.Unknown[id] && gotTTL == ttls.MinTTL)):
		default:
			out = append(out, fmt.Sprintf("lease %x: want TTL %d, got %d (present: %v, TTL unknown to the deltas: %v)",
				id, wantTTL, gotTTL, ok, ttls.Unknown[id]))
		}
	}
	return out
}
