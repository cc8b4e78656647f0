package etcdtest

import (
	"context"
	"fmt"
	"math/rand/v2"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Workload describes a seeded mix of writes.
type Workload struct {
	Seed       uint64
	Keys       int // keys created, in multi-put transactions
	Overwrites int // single puts to existing keys
	Deletes    int // single deletes of existing keys
	LeasedKeys int // keys put with one of a few long leases (up to 3, each with a key)
	ValueSize  int // bytes per value (default 100)
}

// Run applies the workload through cli. Leases get a TTL of an hour so that none expires
// during a test. It returns the header revision after the last write.
func (w Workload) Run(ctx context.Context, cli *clientv3.Client) (int64, error) {
	rng := rand.New(rand.NewPCG(w.Seed, w.Seed^0x9e3779b97f4a7c15))
	size := w.ValueSize
	if size <= 0 {
		size = 100
	}
	value := func() string {
		b := make([]byte, size)
		for i := range b {
			b[i] = byte('a' + rng.IntN(26))
		}
		return string(b)
	}
	key := func(i int) string { return fmt.Sprintf("/registry/k%06d", i) }
	var rev int64
	const batch = 100
	for i := 0; i < w.Keys; i += batch {
		var ops []clientv3.Op
		for j := i; j < min(i+batch, w.Keys); j++ {
			ops = append(ops, clientv3.OpPut(key(j), value()))
		}
		resp, err := cli.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return 0, fmt.Errorf("put keys %d..: %w", i, err)
		}
		rev = resp.Header.Revision
	}
	if w.Keys == 0 {
		return rev, nil
	}
	for i := 0; i < w.Overwrites; i++ {
		resp, err := cli.Put(ctx, key(rng.IntN(w.Keys)), value())
		if err != nil {
			return 0, fmt.Errorf("overwrite: %w", err)
		}
		rev = resp.Header.Revision
	}
	for i := 0; i < w.Deletes; i++ {
		resp, err := cli.Delete(ctx, key(rng.IntN(w.Keys)))
		if err != nil {
			return 0, fmt.Errorf("delete: %w", err)
		}
		rev = resp.Header.Revision
	}
	var leases []clientv3.LeaseID
	for i := 0; i < min(3, w.LeasedKeys); i++ {
		l, err := cli.Grant(ctx, int64(3600+i))
		if err != nil {
			return 0, fmt.Errorf("grant lease: %w", err)
		}
		leases = append(leases, l.ID)
	}
	for i := 0; i < w.LeasedKeys; i++ {
		// The first keys go to each lease in turn, so that every lease has a key: a lease
		// granted after a full snapshot reaches a restore only through a key that uses it
		// (docs/pitr.md), and a test comparing every lease must not depend on the seed.
		lease := leases[i%len(leases)]
		if i >= len(leases) {
			lease = leases[rng.IntN(len(leases))]
		}
		resp, err := cli.Put(ctx, fmt.Sprintf("/leased/k%05d", i), value(), clientv3.WithLease(lease))
		if err != nil {
			return 0, fmt.Errorf("put with lease: %w", err)
		}
		rev = resp.Header.Revision
	}
	return rev, nil
}
