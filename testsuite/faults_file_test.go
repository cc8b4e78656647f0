package testsuite

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/etcdbr/etcdbr/snapstore"
)

// fileStoreSize is the size of the file system a disk-full cell's store lives on: room for
// the small backups of the cell, and nothing more once the filler takes the rest.
const fileStoreSize = "1m"

// diskFullStore mounts a small tmpfs as a file store's directory and returns the directory
// and a function that fills it up (a filler file takes all but spare bytes) and one that
// frees it again. It needs root (mount); the tests run as root here and in CI. The tmpfs is
// unmounted when the test ends.
func diskFullStore(t *testing.T) (dir string, fill func(spare int64), free func()) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("a full file system needs a tmpfs of its own: mount needs root, and CI runs as root")
		}
		t.Skip("a full file system needs a tmpfs of its own: mount needs root")
	}
	dir = filepath.Join(t.TempDir(), "store")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+fileStoreSize+",mode=0700", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount a tmpfs on %s: %v: %s", dir, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	filler := filepath.Join(dir, "filler") // not a backup's name: listings skip it
	fill = func(spare int64) {
		t.Helper()
		f, err := os.Create(filler)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		chunk := bytes.Repeat([]byte{0xaa}, 4096)
		for {
			if _, err := f.Write(chunk); err != nil {
				break // full
			}
		}
		if err := f.Sync(); err != nil && !strings.Contains(err.Error(), "no space") {
			t.Fatal(err)
		}
		info, err := f.Stat()
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(max(0, info.Size()-spare)); err != nil {
			t.Fatal(err)
		}
	}
	free = func() {
		t.Helper()
		if err := os.Remove(filler); err != nil {
			t.Fatal(err)
		}
	}
	return dir, fill, free
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
	m := newMember(t, t.TempDir())
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := start(t, m.runArgs(url, "--full-snapshot-schedule", "@daily", "--delta-snapshot-period", "1s",
		"--max-backup-age", "2s", "--listen-api", addr))
	r := &runCell{c: &faultCell{direct: url}, p: p, api: newAPI(t, "http://"+addr), base: "http://" + addr}
	cli := client(t, m.ClientURL)
	waitFor(t, "readiness", 2*time.Minute, func() bool { return r.api.call(http.MethodGet, "/readyz", "", nil) == http.StatusOK })
	r.writes = startPutLoop(cli, "/faults")
	t.Cleanup(func() {
		select {
		case <-r.writes.done:
		default:
			r.writes.halt()
		}
	})
	fill(0)
	began := time.Now()
	var ready apiReady
	waitFor(t, "readiness to fail naming the full disk", 2*time.Minute, func() bool {
		return r.api.call(http.MethodGet, "/readyz", "", &ready) == http.StatusServiceUnavailable &&
			strings.Contains(ready.Failed, "no space left on device")
	})
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
	p.stop()
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
