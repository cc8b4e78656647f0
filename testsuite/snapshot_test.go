package testsuite

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/etcdbr/etcdbr/internal/embeddedtest"
	"github.com/etcdbr/etcdbr/internal/etcdtest"
	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// storeFile is the path of a snapshot object in a file:// store.
func storeFile(store string, s catalog.Snapshot) string {
	return filepath.Join(strings.TrimPrefix(store, "file://"), filepath.FromSlash(s.Key))
}

// TestFullSnapshotIsPlainEtcdSnapshot: a full snapshot object, once decompressed by a plain
// zstd decoder, is a snapshot etcd's own tools accept: etcdutl reports the revision in its
// name and restores it, and etcd serves the same data from the result.
func TestFullSnapshotIsPlainEtcdSnapshot(t *testing.T) {
	dir := t.TempDir()
	m := newMember(t, dir)
	store := "file://" + filepath.Join(dir, "store")
	p := start(t, m.runArgs(store, "--full-snapshot-schedule", "@every 1s"))
	cli := client(t, m.ClientURL)
	ctx := context.Background()
	rev, err := etcdtest.Workload{Seed: 3, Keys: 3000, Overwrites: 300, Deletes: 200, LeasedKeys: 50}.Run(ctx, cli)
	if err != nil {
		t.Fatal(err)
	}
	want, err := etcdtest.Take(ctx, cli, 0)
	if err != nil {
		t.Fatal(err)
	}
	snap := waitFull(t, store, rev, time.Minute)
	cli.Close()
	p.stop()
	if snap.Revision != rev {
		t.Fatalf("newest full snapshot at revision %d, want %d", snap.Revision, rev)
	}

	// Decompress with a plain zstd decoder: the trailer frame is skipped.
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
	dbPath := filepath.Join(dir, "snapshot.db")
	out, err := os.Create(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, dec); err != nil {
		t.Fatalf("plain zstd decode: %v", err)
	}
	out.Close()

	status, err := exec.Command(etcdutl, "snapshot", "status", dbPath, "-w", "json").Output()
	if err != nil {
		t.Fatalf("etcdutl snapshot status: %v", err)
	}
	var st struct{ Revision int64 }
	if err := json.Unmarshal(status, &st); err != nil {
		t.Fatalf("etcdutl snapshot status output %q: %v", status, err)
	}
	if st.Revision != snap.Revision {
		t.Fatalf("etcdutl reports revision %d, the object's name says %d", st.Revision, snap.Revision)
	}

	m2 := newMember(t, filepath.Join(dir, "restored"))
	m2.Name = m.Name
	restore := exec.Command(etcdutl, "snapshot", "restore", dbPath, "--data-dir", m2.DataDir,
		"--name", m2.Name, "--initial-cluster", m2.Name+"="+m2.PeerURL, "--initial-advertise-peer-urls", m2.PeerURL)
	if out, err := restore.CombinedOutput(); err != nil {
		t.Fatalf("etcdutl snapshot restore: %v\n%s", err, out)
	}
	p2 := start(t, m2.runArgs("file://"+filepath.Join(dir, "store2")))
	cli2 := client(t, m2.ClientURL)
	got, err := etcdtest.Take(ctx, cli2, 0)
	if err != nil {
		t.Fatal(err)
	}
	if diff := etcdtest.Diff(want, got, 20); len(diff) > 0 {
		t.Fatalf("etcd on the etcdutl-restored dir differs:\n%s", strings.Join(diff, "\n"))
	}
	p2.stop()
}

// TestSIGTERMDuringLargeSnapshot: SIGTERM while a full snapshot of a db over 200 MB streams
// stops etcdbr cleanly within 10 s, and the store holds no partial snapshot.
func TestSIGTERMDuringLargeSnapshot(t *testing.T) {
	if testing.Short() {
		t.Skip("writes a 220 MB db")
	}
	dir := t.TempDir()
	m := newMember(t, dir)
	p := start(t, m.runArgs("file://"+filepath.Join(dir, "store1"), "--full-snapshot-schedule", "@daily"))
	cli := client(t, m.ClientURL)
	value := make([]byte, 1<<20)
	for i := 0; i < 220; i++ {
		rand.Read(value) // incompressible, so that the snapshot takes a while
		if _, err := cli.Put(context.Background(), fmt.Sprintf("/big/%03d", i), string(value)); err != nil {
			t.Fatal(err)
		}
	}
	cli.Close()
	p.stop()
	if fi, err := os.Stat(filepath.Join(m.DataDir, "member", "snap", "db")); err != nil || fi.Size() < 200<<20 {
		t.Fatalf("db is not over 200 MB: %v %v", fi.Size(), err)
	}

	store := filepath.Join(dir, "store2")
	p = start(t, m.runArgs("file://"+store, "--full-snapshot-schedule", "@daily"))
	p.waitLine("taking full snapshot", time.Minute)
	sent := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(10 * time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM", code)
	}
	t.Logf("exited %v after SIGTERM", time.Since(sent).Round(time.Millisecond))
	if !strings.Contains(p.Output(), "full snapshot abandoned") {
		t.Fatalf("the snapshot was not in flight when SIGTERM arrived:\n%s", p.Output())
	}
	// Nothing in the store: no object, no temporary file (only the record of the store's
	// cluster, written before the first upload, and the cluster's liveness record).
	var files []string
	filepath.WalkDir(store, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && path != filepath.Join(store, snapstore.ClusterIDKey) &&
			!strings.HasPrefix(path, filepath.Join(store, "alive")+string(filepath.Separator)) {
			files = append(files, path)
		}
		return nil
	})
	if len(files) > 0 {
		t.Fatalf("the store holds files after an abandoned snapshot: %v", files)
	}
}

// TestSnapshotSidecar: `etcdbr snapshot` takes a full snapshot of an external etcd; `etcdbr
// restore` rebuilds a data dir from it offline; `etcdbr list` shows it.
func TestSnapshotSidecar(t *testing.T) {
	dir := t.TempDir()
	ext := newMember(t, dir)
	p := start(t, ext.runArgs("file://"+filepath.Join(dir, "own-store"), "--full-snapshot-schedule", "@daily"))
	cli := client(t, ext.ClientURL)
	ctx := context.Background()
	rev, err := etcdtest.Workload{Seed: 4, Keys: 2000, Overwrites: 200, Deletes: 100, LeasedKeys: 20}.Run(ctx, cli)
	if err != nil {
		t.Fatal(err)
	}
	want, err := etcdtest.Take(ctx, cli, 0)
	if err != nil {
		t.Fatal(err)
	}

	store := "file://" + filepath.Join(dir, "sidecar-store")
	code, out := runToExit(t, []string{"snapshot", "--once", "--endpoints", ext.ClientURL, "--store", store})
	if code != 0 {
		t.Fatalf("etcdbr snapshot: exit %d\n%s", code, out)
	}
	list := fulls(t, store)
	if len(list) != 1 || list[0].Revision != rev || !strings.Contains(out, list[0].Key) {
		t.Fatalf("want one full snapshot at revision %d, got %v; output:\n%s", rev, list, out)
	}
	cli.Close()
	p.stop()

	code, out = runToExit(t, []string{"list", "--store", store, "--objects"})
	if code != 0 || !strings.Contains(out, list[0].Key) || !strings.Contains(out, fmt.Sprint(rev)) {
		t.Fatalf("etcdbr list: exit %d\n%s", code, out)
	}

	m := newMember(t, filepath.Join(dir, "new"))
	code, out = runToExit(t, append([]string{"restore", "--data-dir", m.DataDir, "--store", store, "--force-restore", "--"}, m.etcdFlags()...))
	if code != 0 {
		t.Fatalf("etcdbr restore: exit %d\n%s", code, out)
	}
	code, out = runToExit(t, append([]string{"restore", "--data-dir", m.DataDir, "--store", store, "--"}, m.etcdFlags()...))
	if code != 2 || !strings.Contains(out, "not empty") {
		t.Fatalf("a second restore into the same dir: exit %d\n%s", code, out)
	}
	p = start(t, m.runArgs(store, "--full-snapshot-schedule", "@daily"))
	got, err := etcdtest.Take(ctx, client(t, m.ClientURL), 0)
	if err != nil {
		t.Fatal(err)
	}
	if diff := etcdtest.Diff(newHistory(want, want.Revision), got, 20); len(diff) > 0 {
		t.Fatalf("restored data differs:\n%s", strings.Join(diff, "\n"))
	}
	p.stop()
}

// TestEtcdDropInKubeadm runs the binary under the name "etcd" with exactly the flags kubeadm's
// static pod passes: a TLS member that a client with the client certificate can use, metrics
// on their own URL, and backups configured from ETCDBR_* variables.
func TestEtcdDropInKubeadm(t *testing.T) {
	dir := t.TempDir()
	certs := embeddedtest.NewPKI(t)
	etcdPath := filepath.Join(dir, "bin", "etcd")
	if err := os.MkdirAll(filepath.Dir(etcdPath), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(binary, etcdPath); err != nil {
		t.Fatal(err)
	}
	clientPort, peerPort, metricsPort := freePort(t), freePort(t), freePort(t)
	clientURL := fmt.Sprintf("https://127.0.0.1:%d", clientPort)
	peerURL := fmt.Sprintf("https://127.0.0.1:%d", peerPort)
	metricsURL := fmt.Sprintf("http://127.0.0.1:%d", metricsPort)
	dataDir := filepath.Join(dir, "var-lib-etcd")
	store := "file://" + filepath.Join(dir, "backups")
	args := []string{
		"--advertise-client-urls=" + clientURL,
		"--cert-file=" + certs.ServerCert,
		"--client-cert-auth=true",
		"--data-dir=" + dataDir,
		"--experimental-initial-corrupt-check=true",
		"--experimental-watch-progress-notify-interval=5s",
		"--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=node=" + peerURL,
		"--key-file=" + certs.ServerKey,
		"--listen-client-urls=" + clientURL,
		"--listen-metrics-urls=" + metricsURL,
		"--listen-peer-urls=" + peerURL,
		"--name=node",
		"--peer-cert-file=" + certs.PeerCert,
		"--peer-client-cert-auth=true",
		"--peer-key-file=" + certs.PeerKey,
		"--peer-trusted-ca-file=" + certs.CA,
		"--snapshot-count=10000",
		"--trusted-ca-file=" + certs.CA,
	}
	p := startAs(t, etcdPath, args, "ETCDBR_STORE="+store, "ETCDBR_FULL_SNAPSHOT_SCHEDULE=@daily")

	tlsInfo := transport.TLSInfo{CertFile: certs.ClientCert, KeyFile: certs.ClientKey, TrustedCAFile: certs.CA}
	tlsCfg, err := tlsInfo.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{clientURL}, TLS: tlsCfg, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	waitServing(t, cli, clientURL)
	ctx := context.Background()
	if _, err := cli.Put(ctx, "/registry/pods/x", "v"); err != nil {
		t.Fatal(err)
	}
	if resp, err := cli.Get(ctx, "/registry/pods/x"); err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
		t.Fatalf("get over TLS: %v %v", resp, err)
	}

	// Without a client certificate the member refuses.
	noCert, err := clientv3.New(clientv3.Config{Endpoints: []string{clientURL}, DialTimeout: 2 * time.Second, Logger: zap.NewNop(),
		TLS: &tls.Config{RootCAs: tlsCfg.RootCAs, MinVersion: tls.VersionTLS12}})
	if err == nil {
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		_, err = noCert.Get(cctx, "/registry/pods/x")
		cancel()
		noCert.Close()
	}
	if err == nil {
		t.Fatal("a client without a certificate was served")
	}

	resp, err := http.Get(metricsURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "etcd_server_has_leader") {
		t.Fatalf("metrics URL does not serve etcd metrics: %.200s", body)
	}
	waitFull(t, store, 1, time.Minute)

	// The sidecar reaches the same member over TLS with the client certificate.
	sidecar := "file://" + filepath.Join(dir, "sidecar")
	code, out := runToExit(t, []string{"snapshot", "--once", "--endpoints", clientURL,
		"--cacert", certs.CA, "--cert", certs.ClientCert, "--key", certs.ClientKey, "--store", sidecar})
	if code != 0 || len(fulls(t, sidecar)) != 1 {
		t.Fatalf("etcdbr snapshot over TLS: exit %d, %d snapshots\n%s", code, len(fulls(t, sidecar)), out)
	}
	p.stop()

	// Invoked as etcd, every line is JSON by default (etcd's own default), etcd's and etcdbr's.
	lines := strings.Split(strings.TrimSpace(p.Output()), "\n")
	for _, line := range lines {
		if !json.Valid([]byte(line)) {
			t.Fatalf("a line of the etcd drop-in is not JSON: %q", line)
		}
	}
	if len(lines) < 5 {
		t.Fatalf("the etcd drop-in logged %d lines", len(lines))
	}
}
