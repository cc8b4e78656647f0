package testsuite

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/etcdbr/etcdbr/backup"
	"github.com/etcdbr/etcdbr/embedded"
	"github.com/etcdbr/etcdbr/embedded/rebuild"
	"github.com/etcdbr/etcdbr/internal/deltatest"
	"github.com/etcdbr/etcdbr/internal/embeddedtest"
	"github.com/etcdbr/etcdbr/internal/etcdtest"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
	"github.com/etcdbr/etcdbr/supervisor"
)

// gcSource is a file store of a real member: an old generation (a full snapshot, copies of
// it under older times, and a delta for every revision after it) that garbage collection
// deletes, and the newest generation (a full snapshot and its deltas) that it keeps.
type gcSource struct {
	url, dir  string
	old       catalog.Snapshot   // the old generation's full snapshot
	oldDeltas []catalog.Snapshot // one per revision after it
	copies    int                // copies of old under older times
	kept      []string           // the newest generation's keys
	newest    etcdtest.Dump      // the member's data at the newest revision
	// dumpAt reads the member's data at a revision (it runs until the test ends).
	dumpAt func(rev int64) etcdtest.Dump
}

func buildGCSource(t *testing.T, oldDeltas, copies int) *gcSource {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	cfg := embeddedtest.NewConfig(t)
	e, err := embedded.Start(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	cli := e.Client()
	src := &gcSource{dir: filepath.Join(t.TempDir(), "store"), copies: copies}
	src.url = "file://" + src.dir
	store := openStore(t, src.url)
	defer store.Close()
	put := func(i int) int64 {
		resp, err := cli.Put(ctx, fmt.Sprintf("/registry/k%03d", i%300), fmt.Sprintf("value %d", i))
		if err != nil {
			t.Fatal(err)
		}
		return resp.Header.Revision
	}
	for i := range 50 {
		put(i)
	}
	if src.old, err = backup.FullFromBackend(ctx, e.Server().Backend(), store); err != nil {
		t.Fatal(err)
	}
	rec := deltatest.Start(ctx, cli, store, src.old.Revision+1, deltatest.Options{})
	defer rec.Stop()
	for i := range oldDeltas {
		d, err := rec.Cut(ctx, put(50+i))
		if err != nil {
			t.Fatal(err)
		}
		src.oldDeltas = append(src.oldDeltas, d)
	}
	f2, err := backup.FullFromBackend(ctx, e.Server().Backend(), store)
	if err != nil {
		t.Fatal(err)
	}
	src.kept = append(src.kept, f2.Key)
	var last int64
	for i := range 30 {
		last = put(50 + oldDeltas + i)
		if i%10 == 9 {
			d, err := rec.Cut(ctx, last)
			if err != nil {
				t.Fatal(err)
			}
			src.kept = append(src.kept, d.Key)
		}
	}
	if src.newest, err = etcdtest.Take(ctx, cli, last); err != nil {
		t.Fatal(err)
	}
	src.dumpAt = func(rev int64) etcdtest.Dump {
		d, err := etcdtest.Take(ctx, cli, rev)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	// Copies of the old full snapshot under older names: the same db, so each one restores.
	oldPath := filepath.Join(src.dir, filepath.FromSlash(src.old.Key))
	for i := 1; i <= copies; i++ {
		name := catalog.FullName(src.old.Revision, src.old.Time.Add(-time.Duration(i)*time.Minute), false)
		if err := os.Link(oldPath, filepath.Join(src.dir, filepath.FromSlash(name))); err != nil {
			t.Fatal(err)
		}
	}
	slices.Sort(src.kept)
	return src
}

// listing lists the store's backup objects.
func (src *gcSource) listing(t *testing.T) (fulls, deltas []catalog.Snapshot) {
	t.Helper()
	store := openStore(t, src.url)
	defer store.Close()
	l, err := store.ListForGC(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return l.Fulls, l.Deltas
}

// restoreAndCompare restores the store to target in-process (what etcdbr restore does) and
// compares every key with the source's.
func (src *gcSource) restoreAndCompare(t *testing.T, target catalog.Target, want etcdtest.Dump) {
	t.Helper()
	store := openStore(t, src.url)
	defer store.Close()
	cfg := embeddedtest.NewConfig(t)
	res, err := supervisor.Restore(context.Background(), store, cfg, target, rebuild.RestoreOptions{}, nil)
	if err != nil {
		t.Fatalf("restore to %s: %v", target, err)
	}
	if res.Revision != want.Revision {
		t.Fatalf("restored revision %d, want %d", res.Revision, want.Revision)
	}
	if diff := etcdtest.Diff(want, pitrDump(t, cfg), 20); len(diff) > 0 {
		t.Fatalf("restored to %s from %s and %d deltas: the data differs from the source's at revision %d:\n%s",
			target, res.Snapshot.Key, len(res.Deltas), want.Revision, strings.Join(diff, "\n"))
	}
}

// gcUntil runs `etcdbr gc` with args, reads its output until a line starts with stopAt, and
// then reads no more: the process can only go on until its output pipe is full (64 KiB,
// a few hundred lines, one per deletion), so it is still in the middle of its run when it
// gets SIGKILL. It returns the lines read.
func gcUntil(t *testing.T, stopAt string, skip int, args ...string) []string {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"gc"}, args...)...)
	logs, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer logs.Close()
	cmd.Stderr = logs
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var lines []string
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if strings.HasPrefix(sc.Text(), stopAt) {
			if skip--; skip < 0 {
				break
			}
		}
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("the gc run ended before it was killed (%v):\n%s", err, strings.Join(lines, "\n"))
	}
	err = cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("the gc run was not killed: %v", err)
	}
	return lines
}

// A garbage collection killed in the middle of its run leaves a store that restores: to its
// newest point, and to every point of the deltas it had not deleted yet (each still follows
// its full snapshot). Killed in the deltas, then in the full snapshots, then run to the end.
func TestGCSurvivesSIGKILL(t *testing.T) {
	t.Parallel()
	src := buildGCSource(t, 1000, 800)
	args := []string{"--store", src.url, "--gc-policy", "limit", "--max-backups", "1"}
	check := func(t *testing.T) (fulls, deltas []catalog.Snapshot) {
		t.Helper()
		fulls, deltas = src.listing(t)
		var keys []string
		for _, s := range slices.Concat(fulls, deltas) {
			keys = append(keys, s.Key)
		}
		for _, k := range src.kept {
			if !slices.Contains(keys, k) {
				t.Fatalf("%s, of the newest generation, is gone", k)
			}
		}
		if problems := catalog.CheckChain(fulls, deltas); len(problems) > 0 {
			t.Fatalf("the store has a delta cut off from its full snapshot: %v", problems)
		}
		return fulls, deltas
	}

	// Killed while it deletes the deltas (from the newest down).
	lines := gcUntil(t, "deleted delta/", 99, args...)
	fulls, deltas := check(t)
	oldLeft := len(deltas) - (len(src.kept) - 1)
	if oldLeft >= len(src.oldDeltas) || oldLeft < len(src.oldDeltas)/2 || len(fulls) != src.copies+2 {
		t.Fatalf("killed after %d lines: %d of %d old deltas and %d full snapshots are left, want the run stopped in its deltas",
			len(lines), oldLeft, len(src.oldDeltas), len(fulls))
	}
	t.Logf("killed among the deltas: %d of %d old deltas left", oldLeft, len(src.oldDeltas))
	src.restoreAndCompare(t, catalog.Target{}, src.newest)
	// The old deltas left are the oldest: a prefix of the chain, still restorable.
	lastOld := src.oldDeltas[oldLeft-1]
	if !slices.ContainsFunc(deltas, func(d catalog.Snapshot) bool { return d.Key == lastOld.Key }) {
		t.Fatalf("the old deltas left are not the oldest: %s is gone", lastOld.Key)
	}
	src.restoreAndCompare(t, catalog.Target{Revision: lastOld.Revision}, src.dumpAt(lastOld.Revision))

	// Killed while it deletes the full snapshots: every delta it deletes is gone first.
	gcUntil(t, "deleted full/", 0, args...)
	fulls, deltas = check(t)
	if len(deltas) != len(src.kept)-1 || len(fulls) < 2 || len(fulls) > src.copies+1 {
		t.Fatalf("%d full snapshots and %d deltas are left, want the run stopped in its full snapshots after every old delta",
			len(fulls), len(deltas))
	}
	t.Logf("killed among the full snapshots: %d of %d left", len(fulls), src.copies+2)
	src.restoreAndCompare(t, catalog.Target{}, src.newest)

	// Run again, it finishes the job.
	code, out := runToExit(t, append([]string{"gc"}, args...))
	if code != 0 {
		t.Fatalf("etcdbr gc: exit %d\n%s", code, out)
	}
	fulls, deltas = check(t)
	var left []string
	for _, s := range slices.Concat(fulls, deltas) {
		left = append(left, s.Key)
	}
	slices.Sort(left)
	if !slices.Equal(left, src.kept) {
		t.Fatalf("after the last run the store holds %v, want %v", left, src.kept)
	}
	src.restoreAndCompare(t, catalog.Target{}, src.newest)
}
