package testsuite

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/etcdbr/etcdbr/embedded/datadir"
	"github.com/etcdbr/etcdbr/embedded/rebuild"
	"github.com/etcdbr/etcdbr/internal/diskspace"
	"github.com/etcdbr/etcdbr/internal/etcdtest"
	"github.com/etcdbr/etcdbr/snapstore"
)

// fileStoreSize is the size of the file system a disk-full cell's store lives on: room for
// the small backups of the cell, and nothing more once the filler takes the rest.
const fileStoreSize = "1m"

// smallFS is a tmpfs of its own, mounted on a directory for one test: a file system that a
// test can fill up, make room on again, grow, or remount read-only and read-write. Mounting
// needs root; the tests run as root here and in CI (under CI=true a missing root fails the
// test, elsewhere it skips). The tmpfs is unmounted when the test ends, failed or not.
type smallFS struct {
	t      testing.TB
	dir    string
	filler string // not a backup's name: listings skip it
}

// mountSmallFS mounts a tmpfs of size (mount's size=, e.g. "1m") on a new directory named
// name in a temporary directory of the test.
func mountSmallFS(t testing.TB, name, size string) *smallFS {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("a full or read-only file system needs a tmpfs of its own: mount needs root, and CI runs as root")
		}
		t.Skip("a full or read-only file system needs a tmpfs of its own: mount needs root")
	}
	dir := filepath.Join(t.TempDir(), name)
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0700", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount a tmpfs on %s: %v: %s", dir, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			// Still busy (a process of the test that did not exit): detach it, so that no
			// mount outlives the test, and say so.
			lazy, lerr := exec.Command("umount", "-l", dir).CombinedOutput()
			t.Errorf("umount %s: %v: %s (umount -l: %v %s)", dir, err, out, lerr, lazy)
		}
	})
	return &smallFS{t: t, dir: dir, filler: filepath.Join(dir, "filler")}
}

// remount changes the mount's options (mount -o remount,opts). A remount read-only is
// refused while a file on it is open for writing (an upload in flight): it is tried again
// until it passes, for up to 30 s.
func (f *smallFS) remount(opts string) {
	f.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := exec.Command("mount", "-o", "remount,"+opts, f.dir).CombinedOutput()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("mount -o remount,%s %s: %v: %s", opts, f.dir, err, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// readOnly remounts the file system read-only; readWrite remounts it read-write.
func (f *smallFS) readOnly()  { f.remount("ro") }
func (f *smallFS) readWrite() { f.remount("rw") }

// grow makes the file system size large (mount's size=): room made without deleting anything.
func (f *smallFS) grow(size string) { f.remount("size=" + size) }

// fill fills the file system up: a filler file takes all but spare bytes. With spare above
// 0 the file system never runs out on the way (the filler grows to its size and stops), so
// that what the test runs sees only the room that is left; with 0 it is written until the
// file system refuses.
func (f *smallFS) fill(spare int64) {
	f.t.Helper()
	file, err := os.OpenFile(f.filler, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		f.t.Fatal(err)
	}
	defer file.Close()
	left := int64(-1) // to the end
	if spare > 0 {
		avail, err := diskspace.Available(f.dir)
		if err != nil {
			f.t.Fatal(err)
		}
		left = max(0, avail-spare)
	}
	chunk := bytes.Repeat([]byte{0xaa}, 64<<10)
	for left != 0 {
		n := int64(len(chunk))
		if left > 0 {
			n = min(n, left)
			left -= n
		}
		if _, err := file.Write(chunk[:n]); err != nil {
			if spare > 0 {
				f.t.Fatalf("fill %s up to %d bytes: %v", f.dir, spare, err)
			}
			break // full
		}
	}
	if err := file.Sync(); err != nil && !strings.Contains(err.Error(), "no space") {
		f.t.Fatal(err)
	}
}

// free removes the filler.
func (f *smallFS) free() {
	f.t.Helper()
	if err := os.Remove(f.filler); err != nil {
		f.t.Fatal(err)
	}
}

// diskFullStore mounts a small tmpfs as a file store's directory and returns the directory
// and a function that fills it up (a filler file takes all but spare bytes) and one that
// frees it again (smallFS).
func diskFullStore(t *testing.T) (dir string, fill func(spare int64), free func()) {
	t.Helper()
	f := mountSmallFS(t, "store", fileStoreSize)
	return f.dir, f.fill, f.free
}

// leftovers returns the files in dir that are neither backups, records nor the filler:
// what an interrupted upload left (a temporary file).
func leftovers(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if strings.HasSuffix(path, ".tmp") {
			out = append(out, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// diskFullFull: `etcdbr snapshot --once` into a file store whose disk is full fails naming
// the object and the cause, and leaves nothing behind; once there is room, it succeeds.
func (e *faultEnv) diskFullFull(t *testing.T) cellResult {
	dir, fill, free := diskFullStore(t)
	url := "file://" + dir
	code, out := runToExit(t, []string{"snapshot", "--once", "--endpoints", e.src.ClientURL, "--store", url})
	if code != 0 {
		t.Fatalf("etcdbr snapshot --once into an empty file store: exit code %d:\n%s", code, out)
	}
	before := fulls(t, url)
	fill(1024)
	code, out = runToExit(t, []string{"snapshot", "--once", "--endpoints", e.src.ClientURL, "--store", url})
	if code == 0 {
		t.Fatalf("etcdbr snapshot --once into a full disk succeeded:\n%s", out)
	}
	if !strings.Contains(out, "full/") || !strings.Contains(out, "no space left on device") {
		t.Fatalf("etcdbr snapshot --once into a full disk failed without naming the object and the cause:\n%s", out)
	}
	if got := fulls(t, url); len(got) != len(before) {
		t.Fatalf("a failed upload into a full disk left %v (before: %v)", got, before)
	}
	if l := leftovers(t, dir); len(l) > 0 {
		t.Fatalf("a failed upload left %v", l)
	}
	free()
	began := time.Now()
	code, out = runToExit(t, []string{"snapshot", "--once", "--endpoints", e.src.ClientURL, "--store", url})
	if code != 0 {
		t.Fatalf("etcdbr snapshot --once once there is room again: exit code %d:\n%s", code, out)
	}
	checkFileStore(t, url)
	return cellResult{row: "disk full (file store)", col: colFull, faults: 1, requests: 1, recover: time.Since(began),
		outcome: "failed naming the object and \"no space left on device\", nothing left behind; uploaded once there was room"}
}

// diskFullDelta: `etcdbr run` with a file store whose disk fills up: etcd keeps serving,
// /readyz fails naming the cause, the metrics count the failed uploads, no temporary file
// stays; once there is room, the deltas catch up without a gap.
func (e *faultEnv) diskFullDelta(t *testing.T) cellResult {
	dir, fill, free := diskFullStore(t)
	url := "file://" + dir
	r := runFileCell(t, newMember(t, t.TempDir()), url)
	fill(0)
	began := time.Now()
	ready := r.waitUnready(t, "readiness to fail naming the full disk", 2*time.Minute, "no space left on device")
	failedAfter := time.Since(began)
	if strings.Contains(ready.Failed, "etcd:") {
		t.Fatalf("readiness with the disk full: %+v, want only the backup check failed", ready)
	}
	var storeErrors, deltaFailures float64
	waitFor(t, "the metrics to count two failed uploads", 2*time.Minute, func() bool {
		storeErrors, deltaFailures = r.failures(t)
		return storeErrors >= 2 && deltaFailures >= 2
	})
	if l := leftovers(t, dir); len(l) > 0 {
		t.Fatalf("failed uploads left %v", l)
	}
	free()
	freed := time.Now()
	waitFor(t, "readiness once there is room", 2*time.Minute, func() bool {
		return r.api.call(http.MethodGet, "/readyz", "", nil) == http.StatusOK
	})
	recovered := time.Since(freed)
	r.writes.halt()
	if len(r.writes.failed) > 0 {
		t.Fatalf("%d writes failed while the disk was full (etcd must keep serving), the first: %v", len(r.writes.failed), r.writes.failed[0])
	}
	waitStoreRevision(t, url, r.writes.last, 2*time.Minute)
	r.p.stop()
	checkChain(t, url)
	checkFileStore(t, url)
	return cellResult{row: "disk full (file store)", col: colDelta, faults: int(deltaFailures), requests: int(deltaFailures), recover: recovered,
		outcome: fmt.Sprintf("/readyz failed %v after the disk filled, naming \"no space left on device\", and passed %v after room was made; "+
			"%v failed uploads counted (etcdbr_store_errors_total), %v failed deltas (etcdbr_snapshot_failures_total); no temporary file left",
			failedAfter.Round(100*time.Millisecond), recovered.Round(100*time.Millisecond), storeErrors, deltaFailures)}
}

// checkFileStore verifies every object of a file store.
func checkFileStore(t *testing.T, url string) {
	t.Helper()
	store := openStore(t, url)
	defer store.Close()
	rep, err := snapstore.Verify(context.Background(), store, snapstore.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() {
		t.Fatalf("the file store after the fault: %v", rep.Problems)
	}
}

// runFileCell is an `etcdbr run` of a new member backing up into a file store, with deltas
// every second, --max-backup-age 2s, its API on a port of its own, ready, and writes going on.
func runFileCell(t *testing.T, m member, url string) *runCell {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := start(t, m.runArgs(url, "--full-snapshot-schedule", "@daily", "--delta-snapshot-period", "1s",
		"--max-backup-age", "2s", "--listen-api", addr))
	return readyWithWrites(t, m, &runCell{c: &faultCell{direct: url}, p: p, base: "http://" + addr})
}

// dirFiles lists every file under dir (relative paths), the filler
// left out: what a command that must change nothing is checked against.
func dirFiles(t *testing.T, dir string) []string {
	t.Helper()
	var keys []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() == "filler" {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		keys = append(keys, rel)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// TestDiskFullStoreReadOnly: the directory of a file store becomes read-only (its tmpfs
// remounted ro) under `etcdbr run`: etcd serves every write, the uploads fail naming the
// directory, the cause and the fix, /readyz and the metrics say so, nothing is left behind.
// Meanwhile the store is read: `etcdbr snapshot --once` fails clearly, `etcdbr gc` fails
// without deleting anything, `etcdbr restore` from it succeeds. Remounted read-write, the
// deltas catch up without a gap to the newest write.
func TestDiskFullStoreReadOnly(t *testing.T) {
	t.Parallel()
	store := mountSmallFS(t, "store", "16m")
	url := "file://" + store.dir
	m := newMember(t, t.TempDir())
	r := runFileCell(t, m, url)
	waitFull(t, url, 1, time.Minute)
	// A second full snapshot, so that gc has something to delete.
	if code, out := runToExit(t, []string{"snapshot", "--once", "--endpoints", m.ClientURL, "--store", url}); code != 0 {
		t.Fatalf("etcdbr snapshot --once: exit code %d:\n%s", code, out)
	}
	if n := len(fulls(t, url)); n != 2 {
		t.Fatalf("%d full snapshots in the store, want 2", n)
	}

	store.readOnly()
	began := time.Now()
	ready := r.waitUnready(t, "readiness to fail naming the read-only directory", time.Minute, "read-only file system")
	failedAfter := time.Since(began)
	for _, want := range []string{"backup:", store.dir, "remount it read-write"} {
		if !strings.Contains(ready.Failed, want) {
			t.Fatalf("readiness with the store read-only: %q, want it to name %q", ready.Failed, want)
		}
	}
	if strings.Contains(ready.Failed, "etcd:") {
		t.Fatalf("readiness with the store read-only: %+v, want only the backup check failed", ready)
	}
	var storeErrors, deltaFailures float64
	waitFor(t, "the metrics to count two failed uploads", time.Minute, func() bool {
		storeErrors, deltaFailures = r.failures(t)
		return storeErrors >= 2 && deltaFailures >= 2
	})
	before := dirFiles(t, store.dir)

	code, out := runToExit(t, []string{"snapshot", "--once", "--endpoints", m.ClientURL, "--store", url})
	if code == 0 || !strings.Contains(out, "read-only file system") || !strings.Contains(out, store.dir) {
		t.Fatalf("etcdbr snapshot --once into a read-only store: exit code %d, want a failure naming the directory and the cause:\n%s", code, out)
	}
	code, out = runToExit(t, []string{"gc", "--store", url, "--gc-policy", "limit", "--max-backups", "1"})
	if code == 0 || !strings.Contains(out, "read-only file system") || !strings.Contains(out, "deleted 0 full snapshots and 0 deltas") {
		t.Fatalf("etcdbr gc of a read-only store: exit code %d, want a failure naming the cause, having deleted nothing:\n%s", code, out)
	}
	t.Logf("etcdbr gc: %s", lastLine(out))
	restored := filepath.Join(t.TempDir(), "restored")
	code, out = runToExit(t, append([]string{"restore", "--store", url, "--data-dir", restored, "--"}, m.etcdFlags()...))
	if code != 0 {
		t.Fatalf("etcdbr restore from a read-only store: exit code %d:\n%s", code, out)
	}
	if _, err := os.Stat(filepath.Join(restored, "member", "snap", "db")); err != nil {
		t.Fatalf("etcdbr restore from a read-only store: %v\n%s", err, out)
	}
	if after := dirFiles(t, store.dir); !slices.Equal(after, before) {
		t.Fatalf("the read-only store changed: %v, before %v", after, before)
	}

	store.readWrite()
	rw := time.Now()
	waitFor(t, "readiness once the store is writable", time.Minute, func() bool {
		return r.api.call(http.MethodGet, "/readyz", "", nil) == http.StatusOK
	})
	recovered := time.Since(rw)
	r.writes.halt()
	if len(r.writes.failed) > 0 {
		t.Fatalf("%d writes failed while the store was read-only (etcd must keep serving), the first: %v", len(r.writes.failed), r.writes.failed[0])
	}
	waitStoreRevision(t, url, r.writes.last, time.Minute)
	r.p.stop()
	checkChain(t, url)
	checkFileStore(t, url)
	if l := leftovers(t, store.dir); len(l) > 0 {
		t.Fatalf("failed uploads left %v", l)
	}
	t.Logf("store read-only: /readyz failed %v after the remount, passed %v after the remount read-write; "+
		"%v failed uploads (etcdbr_store_errors_total), %v failed deltas (etcdbr_snapshot_failures_total)",
		failedAfter.Round(100*time.Millisecond), recovered.Round(100*time.Millisecond), storeErrors, deltaFailures)
}

// TestDiskFullSpool: `etcdbr compact` with its spool dir on a full file system fails naming
// the spool dir, the cause and what to do; it leaves nothing in the spool dir, adds nothing
// to the store (and records nothing damaged: a full spool says nothing of the backups); once
// there is room, it succeeds.
func TestDiskFullSpool(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	m := newMember(t, dir)
	storeDir := filepath.Join(dir, "store")
	url := "file://" + storeDir
	p := start(t, m.runArgs(url, "--delta-snapshot-period", "1s", "--full-snapshot-schedule", "@daily", "--compact-period", "0"))
	cli := client(t, m.ClientURL)
	last, err := etcdtest.Workload{Seed: 5, Keys: 300, Overwrites: 100, Deletes: 20}.Run(ctx, cli)
	if err != nil {
		t.Fatal(err)
	}
	waitNewest(t, url, last)
	p.stop()
	before := dirFiles(t, storeDir)

	spool := mountSmallFS(t, "spool", "1m")
	spool.fill(0)
	code, out := runToExit(t, []string{"compact", "--store", url, "--spool-dir", spool.dir})
	if code == 0 {
		t.Fatalf("etcdbr compact with a full spool dir succeeded:\n%s", out)
	}
	for _, want := range []string{spool.dir, "no space left on device", "make room there"} {
		if !strings.Contains(out, want) {
			t.Fatalf("etcdbr compact with a full spool dir: the error does not name %q:\n%s", want, out)
		}
	}
	if left := dirFiles(t, spool.dir); len(left) > 0 {
		t.Fatalf("the failed compaction left %v in the spool dir", left)
	}
	if after := dirFiles(t, storeDir); !slices.Equal(after, before) {
		t.Fatalf("the failed compaction changed the store: %v, before %v", after, before)
	}

	t.Logf("refused: %s", lastLine(out))
	spool.free()
	code, out = runToExit(t, []string{"compact", "--store", url, "--spool-dir", spool.dir})
	if code != 0 || !strings.Contains(out, fmt.Sprintf("at revision %d", last)) {
		t.Fatalf("etcdbr compact once the spool dir has room: exit code %d:\n%s", code, out)
	}
	if left := dirFiles(t, spool.dir); len(left) > 0 {
		t.Fatalf("the compaction left %v in the spool dir", left)
	}
	if fs := fulls(t, url); len(fs) != 2 || fs[1].Revision != last {
		t.Fatalf("full snapshots after the compaction: %v, want a second one at revision %d", fs, last)
	}
	checkFileStore(t, url)
}

// dataDirFSSize is the size of the file system a data-dir cell's data dir lives on: etcd's
// first WAL file and the one it preallocates next (64 MB each), a small db, and room enough
// (more than a WAL file) that etcdbr does not count it full before the cell fills it.
const dataDirFSSize = "220m"

// TestDiskFullDataDir: the file system of the data dir fills up under `etcdbr run`. Once it
// has less than a WAL file free, etcdbr raises etcd's NOSPACE alarm: etcd refuses writes with
// "database space exceeded" and serves reads, also with the file system filled to the last
// byte; /readyz fails on the etcd check naming the data dir; nothing is restored, and the
// process does not stop. Once there is room, the alarm is disarmed, writes are taken again,
// /readyz passes and the backups reach the newest write without a gap.
func TestDiskFullDataDir(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	data := mountSmallFS(t, "data", dataDirFSSize)
	m := newMember(t, t.TempDir())
	m.DataDir = filepath.Join(data.dir, "data")
	url := "file://" + filepath.Join(t.TempDir(), "store")
	r := runFileCell(t, m, url)
	cli := client(t, m.ClientURL)
	r.writes.halt() // this cell writes by itself, to see each answer
	before, err := cli.Put(ctx, "/before", "full")
	if err != nil {
		t.Fatal(err)
	}

	data.fill(16 << 20) // less than a WAL file left
	began := time.Now()
	ready := r.waitUnready(t, "readiness to fail naming the full data dir", time.Minute, "NOSPACE alarm")
	detected := time.Since(began)
	for _, want := range []string{"etcd:", "file system of the data dir", m.DataDir, "is full"} {
		if !strings.Contains(ready.Failed, want) {
			t.Fatalf("readiness with the data dir full: %q, want it to name %q", ready.Failed, want)
		}
	}
	r.p.waitLine("raised etcd's NOSPACE alarm", time.Minute)
	if v := value(t, scrape(t, r.base), "etcdbr_etcd_alarm", "alarm", "nospace"); v != 1 {
		t.Fatalf("etcdbr_etcd_alarm{alarm=\"nospace\"} is %v with the data dir full, want 1 (what EtcdbrEtcdAlarm alerts on)", v)
	}
	if _, err := cli.Put(ctx, "/during", "x"); err == nil || !strings.Contains(err.Error(), "database space exceeded") {
		t.Fatalf("a write with the data dir full: %v, want etcd's NOSPACE refusal", err)
	}

	data.fill(0) // to the last byte
	for i := range 20 {
		resp, err := cli.Get(ctx, "/before")
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("read %d with the data dir full: %v %v, want etcd to serve it", i, resp, err)
		}
		if _, err := cli.Put(ctx, "/during", "x"); err == nil || !strings.Contains(err.Error(), "database space exceeded") {
			t.Fatalf("write %d with the data dir full: %v, want etcd's NOSPACE refusal", i, err)
		}
	}
	select {
	case <-r.p.done:
		t.Fatalf("etcdbr stopped with the data dir full (%v)", r.p.err)
	default:
	}
	// Nothing restored, moved aside or restarted: one start-up decision, no old data dir.
	if n := r.p.count("start-up decision"); n != 1 {
		t.Fatalf("etcdbr made %d start-up decisions, want 1 (etcd must not be restarted over a full data dir):\n%s", n, r.p.Output())
	}
	if old, err := datadir.OldDataDirs(m.DataDir); err != nil || len(old) > 0 {
		t.Fatalf("with the data dir merely full, etcdbr moved it aside: %v (%v)", old, err)
	}
	if _, err := os.Stat(rebuild.StagingDir(m.DataDir)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("with the data dir merely full, etcdbr staged a restore: %v", err)
	}

	data.free()
	freed := time.Now()
	waitFor(t, "readiness once the data dir has room", time.Minute, func() bool {
		return r.api.call(http.MethodGet, "/readyz", "", nil) == http.StatusOK
	})
	recovered := time.Since(freed)
	r.p.waitLine("disarmed etcd's NOSPACE alarm", time.Minute)
	after, err := cli.Put(ctx, "/after", "room")
	if err != nil {
		t.Fatalf("a write once the data dir has room: %v", err)
	}
	if after.Header.Revision <= before.Header.Revision {
		t.Fatalf("revision %d after the disk was full, %d before", after.Header.Revision, before.Header.Revision)
	}
	waitStoreRevision(t, url, after.Header.Revision, time.Minute)
	r.p.stop()
	checkChain(t, url)
	t.Logf("data dir full: /readyz failed and the NOSPACE alarm was up %v after the file system had less than a WAL file free; "+
		"/readyz passed %v after room was made", detected.Round(100*time.Millisecond), recovered.Round(100*time.Millisecond))
}

// TestDiskFullDataDirRestore: `etcdbr run` with no data dir restores from the store at
// start; on a file system too small for the restored data dir it stops with an error naming
// the path, the room needed and the room there is, leaving nothing on that file system (no
// staging dir, no fetched snapshot) and the store as it was. Once the file system is larger,
// the same command restores and serves the data.
func TestDiskFullDataDirRestore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	src := newMember(t, t.TempDir())
	storeDir := filepath.Join(t.TempDir(), "store")
	url := "file://" + storeDir
	p := start(t, src.runArgs(url, "--delta-snapshot-period", "1s", "--full-snapshot-schedule", "@daily"))
	cli := client(t, src.ClientURL)
	last, err := etcdtest.Workload{Seed: 7, Keys: 200, Overwrites: 50, Deletes: 10}.Run(ctx, cli)
	if err != nil {
		t.Fatal(err)
	}
	want, err := etcdtest.Take(ctx, cli, 0)
	if err != nil {
		t.Fatal(err)
	}
	waitNewest(t, url, last)
	p.stop()
	cli.Close()
	before := dirFiles(t, storeDir)

	// The same member (the same cluster) has lost its data dir, and its new file system is
	// smaller than the WAL file a restored data dir starts with.
	data := mountSmallFS(t, "data", "32m")
	m := src
	m.DataDir = filepath.Join(data.dir, "data")
	p = start(t, m.runArgs(url, "--delta-snapshot-period", "1s", "--full-snapshot-schedule", "@daily"))
	if code := p.wait(2 * time.Minute); code == 0 {
		t.Fatalf("etcdbr run restoring into a file system too small exited 0:\n%s", p.Output())
	}
	out := p.Output()
	for _, want := range []string{data.dir, "no room for the restored data dir", "needs at least", "free"} {
		if !strings.Contains(out, want) {
			t.Fatalf("etcdbr run restoring into a file system too small: the error does not name %q:\n%s", want, out)
		}
	}
	if left := dirFiles(t, data.dir); len(left) > 0 {
		t.Fatalf("the failed restore left %v on the data dir's file system", left)
	}
	if entries, err := os.ReadDir(data.dir); err != nil || len(entries) > 0 {
		t.Fatalf("the failed restore left %v (%v) on the data dir's file system", entries, err)
	}
	if after := dirFiles(t, storeDir); !slices.Equal(after, before) {
		t.Fatalf("the failed restore changed the store: %v, before %v", after, before)
	}

	t.Logf("refused: %s", lastLine(out))
	data.grow(dataDirFSSize)
	grown := time.Now()
	p = start(t, m.runArgs(url, "--delta-snapshot-period", "1s", "--full-snapshot-schedule", "@daily"))
	cli = client(t, m.ClientURL)
	t.Logf("restored and serving %v after the file system grew", time.Since(grown).Round(100*time.Millisecond))
	got, err := etcdtest.Take(ctx, cli, 0)
	if err != nil {
		t.Fatal(err)
	}
	// A restore at start cannot know what the member served after the store's newest
	// revision: the restored data starts a new history.
	if diff := etcdtest.Diff(newHistory(want, want.Revision), got, 20); len(diff) > 0 {
		t.Fatalf("the data restored once there was room differs from the source:\n%s", strings.Join(diff, "\n"))
	}
	p.stop()
}

// TestDiskFullDataDirAtStart: `etcdbr run` of a new member whose data dir's file system is too
// small for etcd's first WAL file: etcd panics without the cause ("failed to create WAL");
// etcdbr exits 1 naming the file system, its free space and what to do, and removes the
// empty db etcd's bootstrap left (before, the next start found a data dir without a WAL,
// called it corrupt and refused to start). Once the file system is larger, the same command
// starts the member.
func TestDiskFullDataDirAtStart(t *testing.T) {
	t.Parallel()
	data := mountSmallFS(t, "data", "32m")
	m := newMember(t, t.TempDir())
	m.DataDir = filepath.Join(data.dir, "data")
	url := "file://" + filepath.Join(t.TempDir(), "store")
	code, out := runToExit(t, m.runArgs(url, "--full-snapshot-schedule", "@daily"))
	if code == 0 {
		t.Fatalf("etcdbr run on a file system too small for etcd's WAL exited 0:\n%s", out)
	}
	for _, want := range []string{"the file system of the data dir (" + m.DataDir + ") has ", "less than etcd's WAL file", "make room there"} {
		if !strings.Contains(out, want) {
			t.Fatalf("etcdbr run on a file system too small for etcd's WAL: the error does not say %q:\n%s", want, out)
		}
	}
	// etcd's failed bootstrap left only an empty db, which the next start would find a data
	// dir without a WAL (corrupt) and refuse: etcdbr removed it again.
	if _, err := os.Stat(filepath.Join(m.DataDir, "member")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the failed start of a new member left its member dir (%v):\n%s", err, out)
	}
	t.Logf("refused: %s", lastLine(out))
	data.grow(dataDirFSSize)
	p := start(t, m.runArgs(url, "--full-snapshot-schedule", "@daily"))
	cli := client(t, m.ClientURL)
	if _, err := cli.Put(context.Background(), "/started", "once there was room"); err != nil {
		t.Fatal(err)
	}
	p.stop()
}
