package testsuite

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdbr/etcdbr/internal/etcdtest"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// waitNewest waits until the store's newest revision is at least rev.
func waitNewest(t *testing.T, store string, rev int64) {
	t.Helper()
	s := openStore(t, store)
	defer s.Close()
	deadline := time.Now().Add(time.Minute)
	for {
		newest, err := s.Newest(context.Background())
		if err == nil && newest >= rev {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the store's newest revision is %d (%v) after a minute, want %d", newest, err, rev)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// decompress writes the payload of a full snapshot object in a file store, decoded by a
// plain zstd decoder (which skips etcdbr's trailer frame), to path.
func decompress(t *testing.T, store string, snap catalog.Snapshot, path string) {
	t.Helper()
	in, err := os.Open(storeFile(store, snap))
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	dec, err := zstd.NewReader(in)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	out, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, dec); err != nil {
		t.Fatalf("plain zstd decode: %v", err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// hashKVOf is the member's HashKV at rev.
func hashKVOf(t *testing.T, cli *clientv3.Client, endpoint string, rev int64) *clientv3.HashKVResponse {
	t.Helper()
	resp, err := cli.HashKV(context.Background(), endpoint, rev)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// TestCompactCommand: `etcdbr compact` turns a store that etcdbr run wrote (a full snapshot
// and deltas of puts, overwrites, deletes and leased keys) into one full snapshot at the
// chain's end; decompressed by a plain zstd decoder it is a snapshot etcd's own tools accept
// (etcdutl reports its revision and restores it with its hash check), and etcd on the result
// serves the source's data with the source's HashKV. Refusals exit 1 with the reason, and a
// second run has nothing to do.
func TestCompactCommand(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	m := newMember(t, dir)
	store := "file://" + filepath.Join(dir, "store")
	p := start(t, m.runArgs(store, "--delta-snapshot-period", "1s", "--full-snapshot-schedule", "@daily", "--compact-period", "0"))
	cli := client(t, m.ClientURL)
	ctx := context.Background()
	last, err := etcdtest.Workload{Seed: 9, Keys: 600, Overwrites: 200, Deletes: 60, LeasedKeys: 30}.Run(ctx, cli)
	if err != nil {
		t.Fatal(err)
	}
	waitNewest(t, store, last)
	want, err := etcdtest.Take(ctx, cli, 0)
	if err != nil {
		t.Fatal(err)
	}
	wantHash := hashKVOf(t, cli, m.ClientURL, last)
	p.stop()
	before := fulls(t, store)
	if len(before) != 1 || before[0].Revision >= last {
		t.Fatalf("the store's full snapshots are %v, want one from before the writes", before)
	}

	empty := filepath.Join(dir, "empty")
	if err := os.Mkdir(empty, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--store", "file://" + empty}, "the store has no full snapshot"},
		{[]string{"--store", store, "--to-revision", fmt.Sprint(last + 5)}, fmt.Sprintf("revision %d is not in the store", last+5)},
	} {
		code, out := runToExit(t, append([]string{"compact"}, tc.args...))
		if code != 1 || !strings.Contains(out, tc.want) || !strings.Contains(out, "compaction refused") {
			t.Errorf("etcdbr compact %v: exit %d, want 1 with %q:\n%s", tc.args, code, tc.want, out)
		}
	}

	code, out := runToExit(t, []string{"compact", "--store", store, "--spool-dir", filepath.Join(dir, "spool")})
	if code != 0 || !strings.Contains(out, fmt.Sprintf("at revision %d", last)) {
		t.Fatalf("etcdbr compact: exit %d:\n%s", code, out)
	}
	if left, _ := os.ReadDir(filepath.Join(dir, "spool")); len(left) > 0 {
		t.Errorf("the spool dir holds %d entries after the compaction", len(left))
	}
	after := fulls(t, store)
	if len(after) != 2 || after[1].Revision != last {
		t.Fatalf("full snapshots after the compaction: %v, want a second one at revision %d", after, last)
	}
	if n := len(deltas(t, store)); n == 0 {
		t.Error("the compaction deleted the deltas")
	}
	if code, out := runToExit(t, []string{"compact", "--store", store}); code != 0 || !strings.Contains(out, "nothing to compact") {
		t.Errorf("etcdbr compact a second time: exit %d:\n%s", code, out)
	}

	dbPath := filepath.Join(dir, "compacted.db")
	decompress(t, store, after[1], dbPath)
	status, err := exec.Command(etcdutl, "snapshot", "status", dbPath, "-w", "json").Output()
	if err != nil {
		t.Fatalf("etcdutl snapshot status: %v", err)
	}
	var st struct{ Revision int64 }
	if err := json.Unmarshal(status, &st); err != nil {
		t.Fatalf("etcdutl snapshot status output %q: %v", status, err)
	}
	if st.Revision != last {
		t.Fatalf("etcdutl reports revision %d, want %d", st.Revision, last)
	}
	m2 := newMember(t, filepath.Join(dir, "restored"))
	restore := exec.Command(etcdutl, "snapshot", "restore", dbPath, "--data-dir", m2.DataDir,
		"--name", m2.Name, "--initial-cluster", m2.Name+"="+m2.PeerURL, "--initial-advertise-peer-urls", m2.PeerURL)
	if out, err := restore.CombinedOutput(); err != nil {
		t.Fatalf("etcdutl snapshot restore (hash check on): %v\n%s", err, out)
	}
	p2 := start(t, m2.runArgs("file://"+filepath.Join(dir, "store2"), "--compact-period", "0"))
	cli2 := client(t, m2.ClientURL)
	got, err := etcdtest.Take(ctx, cli2, 0)
	if err != nil {
		t.Fatal(err)
	}
	if diff := etcdtest.Diff(want, got, 20); len(diff) > 0 {
		t.Fatalf("etcd on the etcdutl-restored compacted snapshot differs from the source:\n%s", strings.Join(diff, "\n"))
	}
	gotHash := hashKVOf(t, cli2, m2.ClientURL, last)
	if gotHash.Hash != wantHash.Hash || gotHash.CompactRevision != wantHash.CompactRevision {
		t.Fatalf("HashKV at revision %d: %d (compacted at %d), the source's %d (compacted at %d)",
			last, gotHash.Hash, gotHash.CompactRevision, wantHash.Hash, wantHash.CompactRevision)
	}
	p2.stop()
}

// TestRunCompactsOnItsOwn: etcdbr run (a single member: the leader) compacts the chain once
// it passes --compact-after-revisions, at low priority, and says so in its log and metrics;
// the next restore starts from the compacted full snapshot.
func TestRunCompactsOnItsOwn(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	m := newMember(t, dir)
	store := "file://" + filepath.Join(dir, "store")
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := start(t, m.runArgs(store, "--delta-snapshot-period", "1s", "--full-snapshot-schedule", "@daily",
		"--compact-after-revisions", "200", "--compact-period", "1s", "--listen-api", addr))
	cli := client(t, m.ClientURL)
	var last int64
	for i := range 250 {
		resp, err := cli.Put(context.Background(), fmt.Sprintf("/k/%03d", i%40), strings.Repeat("v", i))
		if err != nil {
			t.Fatal(err)
		}
		last = resp.Header.Revision
	}
	p.waitLine("backup chain compacted", 2*time.Minute)
	if p.count("compacting the backup chain at low priority", "component=compact") == 0 {
		t.Error("no log line says why the chain is compacted")
	}
	// The metric follows the log line: wait for it.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		families := scrape(t, "http://"+addr)
		n := value(t, families, "etcdbr_compactions_total", "result", "succeeded")
		if n >= 1 {
			if chain := value(t, families, "etcdbr_backup_chain_revisions"); chain >= 200 {
				t.Errorf("etcdbr_backup_chain_revisions is %v after the compaction", chain)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("etcdbr_compactions_total{result=\"succeeded\"} is %v 30s after the compaction's log line", n)
		}
	}
	list := fulls(t, store)
	newest := list[len(list)-1]
	if len(list) != 2 || newest.Revision < 200 || newest.Revision > last {
		t.Fatalf("full snapshots %v, want the startup one and a compacted one at revision 200..%d", list, last)
	}
	if left, _ := os.ReadDir(m.DataDir + ".etcdbr-compact"); len(left) > 0 {
		t.Errorf("the spool dir holds %d entries after the compaction", len(left))
	}
	p.stop()

	// A restore of the compacted revision reads the new full snapshot alone.
	restored := filepath.Join(dir, "restored")
	args := append([]string{"restore", "--store", store, "--data-dir", restored, "--to-revision", fmt.Sprint(newest.Revision), "--"},
		m.etcdFlags()...)
	code, out := runToExit(t, args)
	if code != 0 || !strings.Contains(out, "restored "+newest.Key+" to revision") {
		t.Fatalf("etcdbr restore: exit %d:\n%s", code, out)
	}
}
