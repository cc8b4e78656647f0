// Package etcdtest has what tests need to drive an etcd member and to compare its data with
// another's: a seeded workload and a full dump of keys and leases.
package etcdtest

import (
	"context"
	"fmt"
	"sort"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Dump is everything a client can see of a member's key space at one revision.
type Dump struct {
	Revision int64                       // the header revision the dump was read at
	KVs      map[string]*mvccpb.KeyValue // every key with value, create/mod revision, version, lease
	Leases   map[int64]int64             // lease ID -> granted TTL in seconds
}

// Take reads every key at revision rev (0: the current revision) and every lease.
func Take(ctx context.Context, cli *clientv3.Client, rev int64) (Dump, error) {
	d := Dump{KVs: map[string]*mvccpb.KeyValue{}, Leases: map[int64]int64{}}
	const page = 1000
	key := []byte{0}
	for {
		opts := []clientv3.OpOption{clientv3.WithFromKey(), clientv3.WithLimit(page), clientv3.WithSerializable()}
		if rev > 0 || d.Revision > 0 {
			opts = append(opts, clientv3.WithRev(max(rev, d.Revision)))
		}
		resp, err := cli.Get(ctx, string(key), opts...)
		if err != nil {
			return Dump{}, fmt.Errorf("dump keys from %q: %w", key, err)
		}
		if d.Revision == 0 {
			d.Revision = resp.Header.Revision
			if rev > 0 {
				d.Revision = rev
			}
		}
		for _, kv := range resp.Kvs {
			d.KVs[string(kv.Key)] = kv
		}
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		key = append(resp.Kvs[len(resp.Kvs)-1].Key, 0)
	}
	leases, err := cli.Leases(ctx)
	if err != nil {
		return Dump{}, fmt.Errorf("dump leases: %w", err)
	}
	for _, l := range leases.Leases {
		ttl, err := cli.TimeToLive(ctx, l.ID)
		if err != nil {
			return Dump{}, fmt.Errorf("dump lease %x: %w", l.ID, err)
		}
		if ttl.TTL > 0 {
			d.Leases[int64(l.ID)] = ttl.GrantedTTL
		}
	}
	return d, nil
}

// Diff lists the differences between want and got, at most limit of them (0: all).
func Diff(want, got Dump, limit int) []string {
	var out []string
	add := func(format string, args ...any) bool {
		out = append(out, fmt.Sprintf(format, args...))
		return limit > 0 && len(out) >= limit
	}
	if want.Revision != got.Revision && add("revision: want %d, got %d", want.Revision, got.Revision) {
		return out
	}
	keys := make([]string, 0, len(want.KVs)+len(got.KVs))
	for k := range want.KVs {
		keys = append(keys, k)
	}
	for k := range got.KVs {
		if _, ok := want.KVs[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		w, g := want.KVs[k], got.KVs[k]
		switch {
		case w == nil:
			if add("key %q: not expected, got mod_revision %d", k, g.ModRevision) {
				return out
			}
		case g == nil:
			if add("key %q: missing (want mod_revision %d)", k, w.ModRevision) {
				return out
			}
		case string(w.Value) != string(g.Value) || w.CreateRevision != g.CreateRevision ||
			w.ModRevision != g.ModRevision || w.Version != g.Version || w.Lease != g.Lease:
			if add("key %q: want value %d bytes create %d mod %d version %d lease %x; got value %d bytes (equal: %v) create %d mod %d version %d lease %x",
				k, len(w.Value), w.CreateRevision, w.ModRevision, w.Version, w.Lease,
				len(g.Value), string(w.Value) == string(g.Value), g.CreateRevision, g.ModRevision, g.Version, g.Lease) {
				return out
			}
		}
	}
	for id, ttl := range want.Leases {
		if gttl, ok := got.Leases[id]; !ok || gttl != ttl {
			if add("lease %x: want TTL %d, got %d (present: %v)", id, ttl, gttl, ok) {
				return out
			}
		}
	}
	for id := range got.Leases {
		if _, ok := want.Leases[id]; !ok {
			if add("lease %x: not expected", id) {
				return out
			}
		}
	}
	return out
}
