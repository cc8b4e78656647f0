package testsuite

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/etcdbr/etcdbr/embedded"
	"github.com/etcdbr/etcdbr/internal/deltatest"
	"github.com/etcdbr/etcdbr/internal/embeddedtest"
	"github.com/etcdbr/etcdbr/internal/etcdtest"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
	"github.com/etcdbr/etcdbr/snapstore/foreign"
)

// EnvEtcdbrctl names an etcd-backup-restore binary (etcdbrctl) to use instead of the one
// scripts/etcd-backup-restore builds and caches.
const EnvEtcdbrctl = "ETCDBR_ETCDBRCTL"

// etcdbrctl returns the path of etcd-backup-restore's etcdbrctl: $ETCDBR_ETCDBRCTL, or the one
// scripts/etcd-backup-restore builds once into the user's cache (make test builds it before
// the tests start).
func etcdbrctl(t *testing.T) string {
	t.Helper()
	if p := os.Getenv(EnvEtcdbrctl); p != "" {
		return p
	}
	var out bytes.Buffer
	cmd := exec.Command("go", "run", "./scripts/etcd-backup-restore")
	cmd.Dir = ".."
	cmd.Stdout, cmd.Stderr = &out, os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("go run ./scripts/etcd-backup-restore: %v", err)
	}
	p := strings.TrimSpace(out.String())
	if p == "" {
		t.Fatal("go run ./scripts/etcd-backup-restore printed no path")
	}
	return p
}

// ebrObjects lists the snapshots of the etcd-backup-restore store at dir (its v2 layout).
func ebrObjects(t *testing.T, dir string) (fulls, deltas []foreign.EBRObject) {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dir, "v2"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	for _, e := range entries {
		o, ok := foreign.ParseEBRKey("v2/" + e.Name())
		switch {
		case !ok:
		case o.Kind == foreign.EBRFull:
			fulls = append(fulls, o)
		default:
			deltas = append(deltas, o)
		}
	}
	return fulls, deltas
}

// waitEBR waits until the etcd-backup-restore store at dir satisfies done, or fails t with
// etcdbrctl's output.
func waitEBR(t *testing.T, dir string, logs *embeddedtest.SyncBuffer, what string, done func(fulls, deltas []foreign.EBRObject) bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !done(ebrObjects(t, dir)) {
		if time.Now().After(deadline) {
			t.Fatalf("etcd-backup-restore wrote no %s within a minute:\n%s", what, logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestMigrateFromEtcdBackupRestore moves a member's backup history from etcd-backup-restore
// to etcdbr. The real etcd-backup-restore (etcdbrctl snapshot, built from the Go module
// proxy) backs up a real etcd: a full snapshot at its start, then delta snapshots every
// second while a workload writes (keys created, overwritten and deleted, leases granted
// before and after the full snapshot). Then etcdbr reads its store, detected: etcdbr list
// shows the window; etcdbr restore --exact to the newest point and to a revision inside the
// deltas gives a member that serves every key with the value, create and mod revision,
// version and lease of the source at that revision; the leases the deltas hold no TTL for
// are reported and granted the longest TTL of the full snapshot's leases; etcdbr copy
// converts the store into an etcdbr store that restores the same. And a snapshot file of
// the same member as etcdctl snapshot save writes it restores and serves.
func TestMigrateFromEtcdBackupRestore(t *testing.T) {
	t.Parallel()
	bin := etcdbrctl(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cfg := embeddedtest.NewConfig(t)
	e, err := embedded.Start(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	cli := e.Client()

	// Before the full snapshot: leases of 3600, 3601 and 3602 s with keys.
	if _, err := (etcdtest.Workload{Seed: 21, Keys: 1500, Overwrites: 200, Deletes: 100, LeasedKeys: 30}).Run(ctx, cli); err != nil {
		t.Fatal(err)
	}
	leasesInFull := map[int64]bool{}
	leases, err := cli.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range leases.Leases {
		leasesInFull[int64(l.ID)] = true
	}

	// etcd-backup-restore's local provider keeps the store in $HOME/<container>/<prefix>/v2.
	home := t.TempDir()
	ebrDir := filepath.Join(home, "backups", "etcd-main")
	var ebrLogs embeddedtest.SyncBuffer
	ebr := exec.Command(bin, "snapshot",
		"--endpoints", cfg.AdvertiseClientUrls[0].String(),
		"--storage-provider", "Local", "--store-container", "backups", "--store-prefix", "etcd-main",
		"--schedule", "0 0 1 1 *", "--delta-snapshot-period", "1s",
		"--garbage-collection-period", "1h", "--defragmentation-schedule", "0 0 1 1 *",
		"--snapstore-temp-directory", t.TempDir())
	ebr.Env = append(os.Environ(), "HOME="+home)
	ebr.Stdout, ebr.Stderr = &ebrLogs, &ebrLogs
	if err := ebr.Start(); err != nil {
		t.Fatal(err)
	}
	ebrDone := make(chan struct{})
	go func() {
		_ = ebr.Wait()
		close(ebrDone)
	}()
	defer func() {
		_ = ebr.Process.Kill()
		<-ebrDone
	}()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("etcd-backup-restore's output:\n%s", ebrLogs.String())
		}
	})
	waitEBR(t, ebrDir, &ebrLogs, "full snapshot", func(f, _ []foreign.EBRObject) bool { return len(f) > 0 })

	// After it: more of everything, in two runs that several deltas hold.
	if _, err := (etcdtest.Workload{Seed: 22, Keys: 600, Overwrites: 400, Deletes: 150, LeasedKeys: 30}).Run(ctx, cli); err != nil {
		t.Fatal(err)
	}
	end := e.Server().KV().Rev()
	waitEBR(t, ebrDir, &ebrLogs, "delta up to the middle", func(_, d []foreign.EBRObject) bool { return len(d) > 0 && d[len(d)-1].Last >= end })
	fulls, _ := ebrObjects(t, ebrDir)
	mid := (fulls[0].Last + end) / 2 // inside the first delta
	atMid, err := etcdtest.Take(ctx, cli, mid)
	if err != nil {
		t.Fatal(err)
	}
	last, err := (etcdtest.Workload{Seed: 23, Keys: 300, Overwrites: 300, Deletes: 50, LeasedKeys: 20}).Run(ctx, cli)
	if err != nil {
		t.Fatal(err)
	}
	atLast, err := etcdtest.Take(ctx, cli, last)
	if err != nil {
		t.Fatal(err)
	}
	waitEBR(t, ebrDir, &ebrLogs, "delta up to the end", func(_, d []foreign.EBRObject) bool { return len(d) > 0 && d[len(d)-1].Last >= last })
	_ = ebr.Process.Signal(syscall.SIGTERM)
	<-ebrDone
	fulls, deltas := ebrObjects(t, ebrDir)
	if len(fulls) != 1 || len(deltas) < 2 || fulls[0].Compression != foreign.Gzip {
		t.Fatalf("etcd-backup-restore wrote %d full snapshots and %d deltas (want one gzip full snapshot and deltas):\n%s", len(fulls), len(deltas), ebrLogs.String())
	}
	snapshotFile := embeddedtest.WriteSnapshotFile(t, cfg) // etcdctl snapshot save's file: the db and its SHA-256
	all, err := etcdtest.Take(ctx, cli, 0)
	if err != nil {
		t.Fatal(err)
	}
	e.Close()

	// The leases of the source with the TTL the restore gives them: those granted after the
	// full snapshot get the longest TTL of the full snapshot's leases.
	ttls := deltatest.LeaseTTLs{Granted: map[int64]int64{}}
	exact := deltatest.LeaseTTLs{Granted: all.Leases}
	unrecorded := 0
	for id, ttl := range all.Leases {
		ttls.Granted[id] = ttl
		if !leasesInFull[id] {
			ttls.Granted[id] = 3602
			unrecorded++
		}
	}
	if unrecorded == 0 {
		t.Fatal("the workload granted no lease after the full snapshot")
	}

	store := "file://" + ebrDir
	code, out := runToExit(t, []string{"list", "--store", store, "--objects"})
	if code != 0 || !strings.Contains(out, fulls[0].Key) || !strings.Contains(out, fmt.Sprintf("to revision %d", last)) {
		t.Fatalf("etcdbr list of the etcd-backup-restore store: exit %d, want its objects up to revision %d:\n%s", code, last, out)
	}
	t.Logf("etcd-backup-restore store: %d full snapshot, %d deltas, revisions %d to %d", len(fulls), len(deltas), fulls[0].Last, last)

	restore := func(t *testing.T, store string, flags ...string) (member, string) {
		t.Helper()
		m := newMember(t, t.TempDir())
		args := append(append([]string{"restore", "--data-dir", m.DataDir, "--store", store, "--exact"}, flags...), "--")
		started := time.Now()
		code, out := runToExit(t, append(args, m.etcdFlags()...))
		if code != 0 {
			t.Fatalf("etcdbr restore --store %s: exit %d\n%s", store, code, out)
		}
		t.Logf("etcdbr restore %s took %v: %s", strings.Join(flags, " "), time.Since(started).Round(time.Millisecond), strings.TrimSpace(out))
		return m, out
	}
	serve := func(t *testing.T, m member, want etcdtest.Dump, ttls deltatest.LeaseTTLs) {
		t.Helper()
		p := start(t, m.runArgs("file://"+filepath.Join(t.TempDir(), "new-store"), "--full-snapshot-schedule", "@daily"))
		t.Cleanup(p.stop)
		c := client(t, m.ClientURL)
		got, err := etcdtest.Take(context.Background(), c, 0)
		if err != nil {
			t.Fatal(err)
		}
		if diff := deltatest.Compare(want, got, ttls, 20); len(diff) > 0 {
			t.Fatalf("restored data differs from the source's at revision %d:\n%s", want.Revision, strings.Join(diff, "\n"))
		}
		if _, err := c.Put(context.Background(), "/after-restore", "x"); err != nil {
			t.Fatalf("the restored member does not take writes: %v", err)
		}
	}

	t.Run("latest", func(t *testing.T) {
		t.Parallel()
		m, out := restore(t, store)
		if want := fmt.Sprintf("%d leases granted after the full snapshot have no TTL", unrecordedAt(atLast, leasesInFull)); !strings.Contains(out, want) {
			t.Errorf("etcdbr restore does not report the leases without TTL (%q):\n%s", want, out)
		}
		serve(t, m, atLast, ttls)
	})
	t.Run("a revision inside the deltas", func(t *testing.T) {
		t.Parallel()
		m, _ := restore(t, store, "--to-revision", fmt.Sprint(mid))
		serve(t, m, atMid, ttls)
	})
	t.Run("converted by etcdbr copy", func(t *testing.T) {
		t.Parallel()
		converted := "file://" + filepath.Join(t.TempDir(), "etcdbr")
		code, out := runToExit(t, []string{"copy", "--from", store, "--to", converted})
		if code != 0 || strings.Count(out, "converted from etcd-backup-restore, verified") != len(fulls)+len(deltas) {
			t.Fatalf("etcdbr copy: exit %d, want %d objects converted and verified:\n%s", code, len(fulls)+len(deltas), out)
		}
		m, _ := restore(t, converted)
		serve(t, m, atLast, ttls)
	})
	t.Run("etcdbr run's restore at start", func(t *testing.T) {
		t.Parallel()
		// A member whose data dir is gone, moving to etcdbr: its new store is empty, so the
		// start-up restores from the etcd-backup-restore store, starts a new history past it
		// (what the lost member served after its newest backup is unknown), and backs that
		// up into the new store.
		m := newMember(t, t.TempDir())
		newStore := "file://" + filepath.Join(t.TempDir(), "etcdbr")
		p := start(t, m.runArgs(newStore, "--restore-from", store, "--full-snapshot-schedule", "@daily"))
		t.Cleanup(p.stop)
		c := client(t, m.ClientURL)
		got, err := etcdtest.Take(context.Background(), c, 0)
		if err != nil {
			t.Fatal(err)
		}
		if got.Revision <= last+catalog.DefaultUnbackedRevisions {
			t.Fatalf("the member restored at start is at revision %d, want a new history past %d", got.Revision, last+catalog.DefaultUnbackedRevisions)
		}
		got.Revision = atLast.Revision
		if diff := deltatest.Compare(atLast, got, ttls, 20); len(diff) > 0 {
			t.Fatalf("restored data differs from the source's at revision %d:\n%s", last, strings.Join(diff, "\n"))
		}
		p.waitLine("full snapshot taken", time.Minute) // the new history, backed up into the new store
	})
	t.Run("an etcdctl snapshot file", func(t *testing.T) {
		t.Parallel()
		m, _ := restore(t, snapshotFile)
		serve(t, m, all, exact)
	})
}

// unrecordedAt counts the leases keys use at d that the full snapshot did not hold.
func unrecordedAt(d etcdtest.Dump, inFull map[int64]bool) int {
	used := map[int64]bool{}
	for _, kv := range d.KVs {
		if kv.Lease != 0 && !inFull[kv.Lease] {
			used[kv.Lease] = true
		}
	}
	return len(used)
}
