package datadir

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/membershippb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/storage/wal"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"

	"github.com/etcdbr/etcdbr/embedded"
	"github.com/etcdbr/etcdbr/internal/embeddedtest"
)

// killedEtcdEnv, when set (to a JSON killedEtcdSpec), makes
// TestInspectMaxRevisionAfterSIGKILL run as the child process it starts: an
// etcd that serves until the parent SIGKILLs it.
const killedEtcdEnv = "ETCDBR_TEST_KILLED_ETCD"

// clientURLLine prefixes the line on which the child reports its client URL.
const clientURLLine = "etcd serves on "

// killedEtcdSpec configures the child's etcd.
type killedEtcdSpec struct {
	Dir string
	// BatchInterval is etcd's --backend-batch-interval (0: etcd's 100 ms). A
	// long one keeps the db far behind the WAL.
	BatchInterval time.Duration
	// SnapshotCount is etcd's --snapshot-count (0: etcd's default).
	SnapshotCount uint64
}

// TestInspectMaxRevisionAfterSIGKILL SIGKILLs an etcd (in a child process)
// under a write load and checks Verdict.MaxRevision against the revision etcd
// serves once started on the data dir: the db's Revision lags it (the writes
// since the backend's last commit are only in the WAL), MaxRevision does not.
// Every write of the load raises the revision (puts, deletes of existing keys,
// txns that write in both branches, revokes of leases with keys), and lease
// grants and compactions, which do not, are not counted: so MaxRevision is
// exactly the revision served, not only above it.
func TestInspectMaxRevisionAfterSIGKILL(t *testing.T) {
	if spec := os.Getenv(killedEtcdEnv); spec != "" {
		runKilledEtcdChild(t, spec)
		return
	}
	t.Parallel()
	ctx := context.Background()

	t.Run("db far behind the WAL", func(t *testing.T) {
		t.Parallel()
		// The backend commits at start, then only on a delete (etcd commits
		// deletes at once) or a compaction: the load has neither, so every
		// write of it is in the WAL alone.
		dir := killEtcdUnderLoad(t, killedEtcdSpec{BatchInterval: time.Hour}, loadOptions{})
		v := InspectWith(ctx, dir, "", InspectOptions{Depth: DepthAuto})
		require.Equal(t, StateValid, v.State, v.Reason)
		require.Equal(t, DepthFull, v.Depth, "no clean-stop marker: the full check")

		// The db rebuilt from the WAL alone (etcd replays it from entry 1):
		// judged before the original dir is started on.
		rebuilt := filepath.Join(t.TempDir(), "rebuilt")
		embeddedtest.CopyTree(t, dir, rebuilt)
		require.NoError(t, os.RemoveAll(filepath.Join(rebuilt, "member", "snap")))
		rv := InspectWith(ctx, rebuilt, "", InspectOptions{Depth: DepthFull})
		require.Equal(t, StateValid, rv.State, rv.Reason)
		require.Contains(t, rv.Reason, "rebuilds it")

		served := servedRevision(t, dir)
		t.Logf("SIGKILLed: db revision %d, MaxRevision %d, served after the WAL replay %d", v.Revision, v.MaxRevision, served)
		assert.Less(t, v.Revision, served, "the db lags the WAL (else this test checks nothing)")
		assert.Equal(t, served, v.MaxRevision)

		rebuiltServed := servedRevision(t, rebuilt)
		t.Logf("db rebuilt from the WAL: Revision %d, MaxRevision %d, served %d", rv.Revision, rv.MaxRevision, rebuiltServed)
		assert.Zero(t, rv.Revision)
		assert.Equal(t, served, rebuiltServed, "the rebuilt db serves the member's data")
		assert.Equal(t, rebuiltServed, rv.MaxRevision)
	})

	t.Run("raft snapshots and compactions, default batching", func(t *testing.T) {
		t.Parallel()
		dir := killEtcdUnderLoad(t, killedEtcdSpec{SnapshotCount: 100}, loadOptions{deletes: true, compact: true})
		snaps, err := filepath.Glob(filepath.Join(dir, "member", "snap", "*.snap"))
		require.NoError(t, err)
		require.NotEmpty(t, snaps, "etcd wrote raft snapshots")

		v := InspectWith(ctx, dir, "", InspectOptions{Depth: DepthFull})
		require.Equal(t, StateValid, v.State, v.Reason)
		served := servedRevision(t, dir)
		t.Logf("SIGKILLed: db revision %d, MaxRevision %d, served after the WAL replay %d", v.Revision, v.MaxRevision, served)
		assert.LessOrEqual(t, v.Revision, served)
		assert.Equal(t, served, v.MaxRevision)
	})
}

// TestInspectMaxRevisionCleanStop: after a clean stop the WAL holds nothing the
// db lacks: MaxRevision, Revision and the revision served agree, at both
// depths.
func TestInspectMaxRevisionCleanStop(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e, cfg := startOnFreePorts(t, "", func(cfg *embed.Config) { cfg.SnapshotCount = 100 })
	l := startRevisionLoad(t, cfg.AdvertiseClientUrls[0].String(), loadOptions{deletes: true, compact: true})
	l.waitAcked(t, 300)
	l.drain()
	e.Close()
	require.NoError(t, WriteCleanStopMarker(cfg.Dir, ""))

	quick := InspectWith(ctx, cfg.Dir, "", InspectOptions{Depth: DepthAuto})
	require.Equal(t, StateValid, quick.State, quick.Reason)
	require.Equal(t, DepthQuick, quick.Depth, "the marker matches: the quick check")
	full := InspectWith(ctx, cfg.Dir, "", InspectOptions{Depth: DepthFull})
	require.Equal(t, StateValid, full.State, full.Reason)
	served := servedRevision(t, cfg.Dir)
	t.Logf("clean stop after %d acknowledged writes: quick %d/%d, full %d/%d (Revision/MaxRevision), served %d",
		l.acked.Load(), quick.Revision, quick.MaxRevision, full.Revision, full.MaxRevision, served)
	for _, v := range []Verdict{quick, full} {
		assert.Equal(t, served, v.Revision, "depth %s", v.Depth)
		assert.Equal(t, served, v.MaxRevision, "depth %s", v.Depth)
	}
}

// TestEntryCanRaiseRevision classifies every kind of raft entry etcd 3.6
// applies.
func TestEntryCanRaiseRevision(t *testing.T) {
	t.Parallel()
	put := &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("k"), Value: []byte("v")}}}
	del := &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: []byte("k")}}}
	get := &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte("k")}}}
	nested := func(txn *pb.TxnRequest) *pb.RequestOp {
		return &pb.RequestOp{Request: &pb.RequestOp_RequestTxn{RequestTxn: txn}}
	}
	header := &pb.RequestHeader{ID: 7}
	tests := []struct {
		name string
		req  *pb.InternalRaftRequest
		want bool
	}{
		{"put", &pb.InternalRaftRequest{Header: header, Put: &pb.PutRequest{Key: []byte("k")}}, true},
		{"delete range", &pb.InternalRaftRequest{Header: header, DeleteRange: &pb.DeleteRangeRequest{Key: []byte("k")}}, true},
		{"txn put on success", &pb.InternalRaftRequest{Header: header, Txn: &pb.TxnRequest{Success: []*pb.RequestOp{get, put}}}, true},
		{"txn delete on failure", &pb.InternalRaftRequest{Header: header, Txn: &pb.TxnRequest{Success: []*pb.RequestOp{get}, Failure: []*pb.RequestOp{del}}}, true},
		{"txn nested write", &pb.InternalRaftRequest{Header: header, Txn: &pb.TxnRequest{Success: []*pb.RequestOp{nested(&pb.TxnRequest{Failure: []*pb.RequestOp{put}})}}}, true},
		{"txn read-only", &pb.InternalRaftRequest{Header: header, Txn: &pb.TxnRequest{Success: []*pb.RequestOp{get}, Failure: []*pb.RequestOp{get}}}, false},
		{"txn nested read-only", &pb.InternalRaftRequest{Header: header, Txn: &pb.TxnRequest{Success: []*pb.RequestOp{nested(&pb.TxnRequest{Success: []*pb.RequestOp{get}})}}}, false},
		{"txn empty", &pb.InternalRaftRequest{Header: header, Txn: &pb.TxnRequest{}}, false},
		{"txn op without a request", &pb.InternalRaftRequest{Header: header, Txn: &pb.TxnRequest{Success: []*pb.RequestOp{{}}}}, true},
		// Revoking a lease deletes its keys.
		{"lease revoke", &pb.InternalRaftRequest{Header: header, LeaseRevoke: &pb.LeaseRevokeRequest{ID: 1}}, true},
		{"lease grant", &pb.InternalRaftRequest{Header: header, LeaseGrant: &pb.LeaseGrantRequest{ID: 1, TTL: 10}}, false},
		{"lease checkpoint", &pb.InternalRaftRequest{Header: header, LeaseCheckpoint: &pb.LeaseCheckpointRequest{}}, false},
		{"compaction", &pb.InternalRaftRequest{Header: header, Compaction: &pb.CompactionRequest{Revision: 5}}, false},
		{"range", &pb.InternalRaftRequest{Header: header, Range: &pb.RangeRequest{Key: []byte("k")}}, false},
		{"alarm", &pb.InternalRaftRequest{Header: header, Alarm: &pb.AlarmRequest{Action: pb.AlarmRequest_ACTIVATE, Alarm: pb.AlarmType_NOSPACE}}, false},
		{"auth enable", &pb.InternalRaftRequest{Header: header, AuthEnable: &pb.AuthEnableRequest{}}, false},
		{"auth user add", &pb.InternalRaftRequest{Header: header, AuthUserAdd: &pb.AuthUserAddRequest{Name: "u"}}, false},
		{"authenticate", &pb.InternalRaftRequest{Header: header, Authenticate: &pb.InternalAuthenticateRequest{Name: "u"}}, false},
		{"cluster version", &pb.InternalRaftRequest{Header: header, ClusterVersionSet: &membershippb.ClusterVersionSetRequest{Ver: "3.6.0"}}, false},
		{"member attributes", &pb.InternalRaftRequest{Header: header, ClusterMemberAttrSet: &membershippb.ClusterMemberAttrSetRequest{Member_ID: 1}}, false},
		{"downgrade info", &pb.InternalRaftRequest{Header: header, DowngradeInfoSet: &membershippb.DowngradeInfoSetRequest{}}, false},
		{"v2 request", &pb.InternalRaftRequest{V2: &pb.Request{ID: 3, Method: "PUT", Path: "/0/version", Val: "3.6.0"}}, false},
		// A request kind this build does not know: counted.
		{"header only", &pb.InternalRaftRequest{Header: header}, true},
	}
	for _, tt := range tests {
		data, err := tt.req.Marshal()
		require.NoError(t, err, tt.name)
		assert.Equal(t, tt.want, entryCanRaiseRevision(raftpb.Entry{Type: raftpb.EntryNormal, Index: 9, Data: data}), tt.name)
	}

	legacy, err := (&pb.Request{ID: 3, Method: "PUT", Path: "/0/version", Val: "3.6.0"}).Marshal()
	require.NoError(t, err)
	cc, err := (&raftpb.ConfChange{Type: raftpb.ConfChangeAddNode, NodeID: 2}).Marshal()
	require.NoError(t, err)
	for _, c := range []struct {
		name string
		e    raftpb.Entry
		want bool
	}{
		{"empty entry of a new leader", raftpb.Entry{Type: raftpb.EntryNormal}, false},
		{"conf change", raftpb.Entry{Type: raftpb.EntryConfChange, Data: cc}, false},
		{"legacy v2 request", raftpb.Entry{Type: raftpb.EntryNormal, Data: legacy}, false},
		{"undecodable", raftpb.Entry{Type: raftpb.EntryNormal, Data: []byte{0xff, 0xff, 0xff}}, true},
	} {
		assert.Equal(t, c.want, entryCanRaiseRevision(c.e), c.name)
	}
}

// runKilledEtcdChild is the child of TestInspectMaxRevisionAfterSIGKILL: it
// starts etcd as spec says, prints its client URL and serves until killed.
func runKilledEtcdChild(t *testing.T, specJSON string) {
	var spec killedEtcdSpec
	require.NoError(t, json.Unmarshal([]byte(specJSON), &spec))
	e, cfg := startOnFreePorts(t, spec.Dir, func(cfg *embed.Config) {
		if spec.BatchInterval > 0 {
			cfg.BackendBatchInterval = spec.BatchInterval
		}
		if spec.SnapshotCount > 0 {
			cfg.SnapshotCount = spec.SnapshotCount
			cfg.SnapshotCatchUpEntries = 10
		}
	})
	fmt.Printf("%s%s\n", clientURLLine, cfg.AdvertiseClientUrls[0].String())
	err := <-e.Err()
	t.Fatalf("etcd stopped before it was killed: %v", err)
}

// killEtcdUnderLoad runs etcd in a child process on a new data dir, writes to
// it until 400 writes were acknowledged, SIGKILLs it while the writes go on,
// and returns the data dir.
func killEtcdUnderLoad(t *testing.T, spec killedEtcdSpec, opts loadOptions) string {
	t.Helper()
	root := t.TempDir()
	spec.Dir = filepath.Join(root, "data")
	// The child's own temporary dirs go under root, so they are removed too.
	childTmp := filepath.Join(root, "tmp")
	require.NoError(t, os.Mkdir(childTmp, 0o700))
	specJSON, err := json.Marshal(spec)
	require.NoError(t, err)

	cmd := exec.Command(os.Args[0], "-test.run=^TestInspectMaxRevisionAfterSIGKILL$", "-test.timeout=5m")
	cmd.Env = append(os.Environ(), killedEtcdEnv+"="+string(specJSON), "TMPDIR="+childTmp)
	var stderr embeddedtest.SyncBuffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	killed := false
	t.Cleanup(func() {
		if !killed {
			_ = cmd.Process.Kill()
			<-exited
		}
	})

	urlc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if url, ok := strings.CutPrefix(sc.Text(), clientURLLine); ok {
				urlc <- url
				continue
			}
			// The child's test output (a failure to start included).
			fmt.Fprintln(&stderr, sc.Text())
		}
		// Wait only once stdout is drained (os/exec closes the pipe in Wait).
		exited <- cmd.Wait()
	}()
	var url string
	select {
	case url = <-urlc:
	case err := <-exited:
		killed = true
		t.Fatalf("the etcd child exited before it served: %v\n%s", err, stderr.String())
	case <-time.After(embeddedtest.StartTimeout):
		t.Fatalf("the etcd child did not serve within %s\n%s", embeddedtest.StartTimeout, stderr.String())
	}

	l := startRevisionLoad(t, url, opts)
	l.waitAcked(t, 400)
	require.NoError(t, cmd.Process.Kill()) // SIGKILL, while the writes go on
	err = <-exited
	killed = true
	require.ErrorContains(t, err, "killed", "the child died of the SIGKILL\n%s", stderr.String())
	l.stop()
	t.Logf("SIGKILLed etcd after %d acknowledged writes", l.acked.Load())
	return spec.Dir
}

// startOnFreePorts starts etcd on dataDir ("": a new one) with the test
// configuration of embeddedtest.NewConfig, changed by edit (when not nil), and
// closes it when the test ends. A port embeddedtest picked can be taken by
// another connection before etcd binds it (the load's clients open many):
// etcd fails to listen before it touches the data dir, and this tries again
// with other ports.
func startOnFreePorts(t testing.TB, dataDir string, edit func(*embed.Config)) (*embedded.Etcd, *embed.Config) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		cfg := embeddedtest.NewConfig(t)
		if dataDir != "" {
			cfg.Dir = dataDir
		}
		if edit != nil {
			edit(cfg)
		}
		ctx, cancel := context.WithTimeout(context.Background(), embeddedtest.StartTimeout)
		e, err := embedded.Start(ctx, cfg, embeddedtest.Logger(t))
		cancel()
		if errors.Is(err, syscall.EADDRINUSE) && attempt < 5 {
			t.Logf("start etcd, attempt %d: %v; picking other ports", attempt, err)
			continue
		}
		require.NoError(t, err)
		t.Cleanup(e.Close)
		return e, cfg
	}
}

// servedRevision starts etcd on a copy of the data dir and returns the
// revision it serves.
func servedRevision(t *testing.T, dataDir string) int64 {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	embeddedtest.CopyTree(t, dataDir, dir)
	e, _ := startOnFreePorts(t, dir, nil)
	defer e.Close()
	ctx, cancel := context.WithTimeout(context.Background(), embeddedtest.StartTimeout)
	defer cancel()
	resp, err := e.Client().Get(ctx, "", clientv3.WithPrefix(), clientv3.WithCountOnly())
	require.NoError(t, err)
	return resp.Header.Revision
}

// revisionLoad writes to an etcd from several clients, with writes that each
// raise the revision by one (puts, txns that write in both branches, and
// optionally deletes of existing keys and revokes of leases that hold keys)
// and, in between, requests that do not (lease grants, read-only txns,
// optionally compactions). A writer stops at its first error (the member was
// killed).
type revisionLoad struct {
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	acked    atomic.Int64
	draining atomic.Bool // writers stop before their next request
}

// loadOptions choose the requests of a revisionLoad besides puts and txns.
type loadOptions struct {
	deletes bool // deletes of existing keys, revokes of leases with keys
	compact bool // compactions (they raise nothing)
}

func startRevisionLoad(t *testing.T, endpoint string, opts loadOptions) *revisionLoad {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	l := &revisionLoad{cancel: cancel}
	t.Cleanup(l.stop)
	newClient := func() *clientv3.Client {
		c, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
		require.NoError(t, err)
		return c
	}
	const writers = 3
	for w := range writers {
		c := newClient()
		l.wg.Go(func() {
			defer c.Close()
			for i := 0; ; i++ {
				a, b, k := fmt.Sprintf("/w%d/a%d", w, i%10), fmt.Sprintf("/w%d/b%d", w, i%10), fmt.Sprintf("/w%d/c%d", w, i%10)
				ops := []func() error{
					func() error { _, err := c.Put(ctx, a, fmt.Sprint(i)); return err },
					func() error { _, err := c.Put(ctx, b, fmt.Sprint(i)); return err },
					func() error {
						_, err := c.Txn(ctx).If(clientv3.Compare(clientv3.Version(a), ">", 0)).
							Then(clientv3.OpPut(k, "then"), clientv3.OpGet(b)).Else(clientv3.OpPut(k, "else")).Commit()
						return err
					},
				}
				if opts.deletes {
					ops = append(ops, func() error { _, err := c.Delete(ctx, a); return err }) // put above
				}
				for _, op := range ops {
					if l.draining.Load() || op() != nil {
						return
					}
					l.acked.Add(1)
				}
				if _, err := c.Txn(ctx).Then(clientv3.OpGet(b)).Commit(); err != nil {
					return
				}
			}
		})
	}
	c := newClient()
	l.wg.Go(func() {
		defer c.Close()
		for i := 0; !l.draining.Load(); i++ {
			lease, err := c.Grant(ctx, 3600)
			if err != nil {
				return
			}
			for _, k := range []string{"x", "y"} {
				if _, err := c.Put(ctx, fmt.Sprintf("/lease/%d/%s", i, k), "v", clientv3.WithLease(lease.ID)); err != nil {
					return
				}
				l.acked.Add(1)
			}
			if !opts.deletes {
				continue
			}
			resp, err := c.Revoke(ctx, lease.ID) // deletes both keys
			if err != nil {
				return
			}
			l.acked.Add(1)
			if opts.compact && i%5 == 4 {
				if _, err := c.Compact(ctx, resp.Header.Revision); err != nil {
					return
				}
			}
		}
	})
	return l
}

// waitAcked waits until n writes were acknowledged.
func (l *revisionLoad) waitAcked(t *testing.T, n int64) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for l.acked.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d writes were acknowledged within 2 minutes", l.acked.Load(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// drain lets every writer finish its request (and the lease writer its
// revoke) and waits for them: no write is left in flight.
func (l *revisionLoad) drain() {
	l.draining.Store(true)
	l.wg.Wait()
}

// stop ends the load, cancelling the requests in flight, and waits for its
// writers.
func (l *revisionLoad) stop() {
	l.cancel()
	l.wg.Wait()
}

// TestWALRaisingCountsTheLogEtcdKeeps: a later entry at a lower index
// truncates the log (raft overwrote an uncommitted tail); only the entries of
// the log etcd keeps, after the index the db applied, are counted.
func TestWALRaisingCountsTheLogEtcdKeeps(t *testing.T) {
	t.Parallel()
	data := func(r *pb.InternalRaftRequest) []byte {
		b, err := r.Marshal()
		require.NoError(t, err)
		return b
	}
	put := data(&pb.InternalRaftRequest{Header: &pb.RequestHeader{ID: 1}, Put: &pb.PutRequest{Key: []byte("k")}})
	grant := data(&pb.InternalRaftRequest{Header: &pb.RequestHeader{ID: 2}, LeaseGrant: &pb.LeaseGrantRequest{ID: 1, TTL: 10}})
	entry := func(term, index uint64, d []byte) raftpb.Entry {
		return raftpb.Entry{Term: term, Index: index, Type: raftpb.EntryNormal, Data: d}
	}

	root := t.TempDir()
	walDir := filepath.Join(root, "wal")
	w, err := wal.Create(zap.NewNop(), walDir, []byte("metadata"))
	require.NoError(t, err)
	// Term 1: five puts; term 2 overwrites from index 3: a put, a grant.
	require.NoError(t, w.Save(raftpb.HardState{Term: 1, Commit: 2}, []raftpb.Entry{
		entry(1, 1, put), entry(1, 2, put), entry(1, 3, put), entry(1, 4, put), entry(1, 5, put),
	}))
	require.NoError(t, w.Save(raftpb.HardState{Term: 2, Commit: 4}, []raftpb.Entry{entry(2, 3, put), entry(2, 4, grant), entry(2, 5, nil)}))
	// Term 3 overwrites from index 5 again: a put.
	require.NoError(t, w.Save(raftpb.HardState{Term: 3, Commit: 5}, []raftpb.Entry{entry(3, 5, put)}))
	require.NoError(t, w.Close())

	snapDir := filepath.Join(root, "snap") // none: etcd reads from entry 1
	for _, c := range []struct {
		applied uint64
		want    int64
	}{
		{0, 4}, // puts 1, 2, 3 (term 2) and 5 (term 3); the grant does not count
		{2, 2}, // 3 and 5
		{4, 1}, // 5
		{5, 0},
	} {
		ws, err := readWALAsEtcd(walDir, snapDir, c.applied)
		require.NoError(t, err)
		assert.Equal(t, uint64(5), ws.lastIndex)
		assert.Equal(t, c.want, ws.raising, "applied %d", c.applied)
	}
}
