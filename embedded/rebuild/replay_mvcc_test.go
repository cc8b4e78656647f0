package rebuild

import (
	"bytes"
	"fmt"
	"log/slog"

	"github.com/coreos/go-semver/semver"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/pkg/v3/traceutil"
	"go.etcd.io/etcd/server/v3/lease"
	"go.etcd.io/etcd/server/v3/storage/backend"
	"go.etcd.io/etcd/server/v3/storage/mvcc"
	"go.etcd.io/etcd/server/v3/storage/schema"
	"go.uber.org/zap"

	"github.com/etcdbr/etcdbr/snapstore"
)

// mvccWriter replays through etcd's own mvcc store and lessor: the oracle the direct
// writer is compared with. Per original revision: Write -> Put / DeleteRange -> End.
type mvccWriter struct {
	path   string
	be     backend.Backend
	lessor lease.Lessor
	kv     mvcc.KV
}

func openMVCCWriter(path string, opts ReplayOptions) (w revisionWriter, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("open the db %q: etcd's storage failed: %v", path, p)
		}
	}()
	lg := zap.NewNop()
	bcfg := backend.DefaultBackendConfig(lg)
	bcfg.Path = path
	bcfg.UnsafeNoFsync = true
	m := &mvccWriter{path: path}
	m.be = backend.New(bcfg)
	m.lessor = lease.NewLessor(lg, m.be, noCluster{}, lease.LessorConfig{MinLeaseTTL: opts.MinLeaseTTL})
	m.kv = mvcc.NewStore(lg, m.be, m.lessor, mvcc.StoreConfig{})
	return m, nil
}

func (m *mvccWriter) revision() int64        { return m.kv.Rev() }
func (m *mvccWriter) hasLease(id int64) bool { return m.lessor.Lookup(lease.LeaseID(id)) != nil }

func (m *mvccWriter) longestTTL() int64 {
	var longest int64
	for _, l := range m.lessor.Leases() {
		longest = max(longest, l.TTL())
	}
	return longest
}

func (m *mvccWriter) grant(id, ttl int64) error {
	_, err := m.lessor.Grant(lease.LeaseID(id), ttl)
	return err
}

func (m *mvccWriter) apply(rev *snapstore.Revision) error {
	trace := traceutil.TODO()
	txn := m.kv.Write(trace)
	defer txn.End()
	for _, ev := range rev.Events {
		kv := ev.Kv
		switch ev.Type {
		case mvccpb.PUT:
			// etcd's store keeps the key in its index: apply keeps nothing of rev.
			if got := txn.Put(bytes.Clone(kv.Key), bytes.Clone(kv.Value), lease.LeaseID(kv.Lease)); got != rev.Revision {
				return fmt.Errorf("put of %q went to revision %d", kv.Key, got)
			}
		case mvccpb.DELETE:
			if n, got := txn.DeleteRange(bytes.Clone(kv.Key), nil); n != 1 || got != rev.Revision {
				return fmt.Errorf("delete of %q removed %d keys at revision %d: the key does not exist", kv.Key, n, got)
			}
		}
	}
	changes := txn.Changes()
	if len(changes) != len(rev.Events) {
		return fmt.Errorf("%d changes for %d events", len(changes), len(rev.Events))
	}
	for i, ev := range rev.Events {
		got, want := &changes[i], ev.Kv
		if string(got.Key) != string(want.Key) {
			return fmt.Errorf("change %d is of key %q, the event's of %q", i, got.Key, want.Key)
		}
		if ev.Type == mvccpb.PUT && (got.CreateRevision != want.CreateRevision || got.ModRevision != want.ModRevision ||
			got.Version != want.Version || got.Lease != want.Lease) {
			return fmt.Errorf("key %q: create %d mod %d version %d lease %x, the source had create %d mod %d version %d lease %x",
				got.Key, got.CreateRevision, got.ModRevision, got.Version, got.Lease,
				want.CreateRevision, want.ModRevision, want.Version, want.Lease)
		}
	}
	return nil
}

// bumpRevision is etcdutl's modifyLatestRevision through the backend.
func (m *mvccWriter) bumpRevision(amount int64, _ *slog.Logger) error {
	tx := m.be.BatchTx()
	tx.LockOutsideApply()
	defer tx.Unlock()
	var latest mvcc.Revision
	if err := tx.UnsafeForEach(schema.Key, func(k, _ []byte) error {
		if rev := mvcc.BytesToRev(k); rev.GreaterThan(latest) {
			latest = rev
		}
		return nil
	}); err != nil {
		return err
	}
	latest.Main += amount
	latest.Sub = 0
	tx.UnsafePut(schema.Key, mvcc.RevToBytes(latest, mvcc.NewRevBytes()), []byte{})
	mvcc.UnsafeSetScheduledCompact(tx, latest.Main)
	return nil
}

func (m *mvccWriter) close() error {
	m.kv.Close()
	m.lessor.Stop()
	return m.be.Close()
}

// noCluster is the cluster a lessor asks for its version: none offline (a lessor that is
// never promoted does not ask).
type noCluster struct{}

func (noCluster) Version() *semver.Version { return nil }
