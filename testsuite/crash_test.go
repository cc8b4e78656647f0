package testsuite

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdbr/etcdbr/embedded"
	"github.com/etcdbr/etcdbr/embedded/datadir"
	"github.com/etcdbr/etcdbr/embedded/rebuild"
	"github.com/etcdbr/etcdbr/internal/etcdtest"
)

// crashSource is what the crash tests restore: a member, a store with its full snapshot
// and deltas, the dump of its data at the newest revision, and a copy of its data dir at
// an older revision (valid, cleanly stopped, behind the store).
type crashSource struct {
	m     member
	store string
	want  etcdtest.Dump
	// old is the data dir as it was after the first batch of writes; oldHash is its
	// treeHash and oldRev its revision.
	old     string
	oldHash string
	oldRev  int64
}

// deltaSource runs etcdbr on a fresh member with one full snapshot at the start and
// deltas every second, writes three batches of keys (each in the store before the next),
// keeping a copy of the data dir after the first (etcdbr stopped for it and started
// again), stops it and returns what it made.
func deltaSource(t *testing.T) crashSource {
	t.Helper()
	dir := t.TempDir()
	m := newMember(t, dir)
	src := crashSource{m: m, store: "file://" + filepath.Join(dir, "store"), old: filepath.Join(dir, "old")}
	args := m.runArgs(src.store, "--full-snapshot-schedule", "@every 1000h", "--delta-snapshot-period", "1s")
	ctx := context.Background()
	batch := func(cli *clientv3.Client, n int) int64 {
		for i := range 100 {
			if _, err := cli.Put(ctx, fmt.Sprintf("k-%d-%03d", n, i), strings.Repeat("x", 64)); err != nil {
				t.Fatal(err)
			}
		}
		resp, err := cli.Delete(ctx, fmt.Sprintf("k-%d-000", n))
		if err != nil {
			t.Fatal(err)
		}
		waitStoreRevision(t, src.store, resp.Header.Revision, time.Minute)
		return resp.Header.Revision
	}

	p := start(t, args)
	cli := client(t, m.ClientURL)
	src.oldRev = batch(cli, 0)
	cli.Close()
	p.stop()
	copyTree(t, m.DataDir, src.old)
	if v := datadir.InspectWith(ctx, src.old, "", datadir.InspectOptions{Depth: datadir.DepthFull}); v.State != datadir.StateValid || v.Revision != src.oldRev {
		t.Fatalf("the old data dir is %s at revision %d, want valid at %d: %s", v.State, v.Revision, src.oldRev, v.Reason)
	}
	src.oldHash = treeHash(t, src.old)

	p = start(t, args)
	cli = client(t, m.ClientURL)
	batch(cli, 1)
	batch(cli, 2)
	var err error
	if src.want, err = etcdtest.Take(ctx, cli, 0); err != nil {
		t.Fatal(err)
	}
	cli.Close()
	p.stop()
	if n := len(deltas(t, src.store)); n < 2 {
		t.Fatalf("the source wrote %d deltas; the replay failpoint needs 2", n)
	}
	if src.oldRev >= src.want.Revision {
		t.Fatalf("the old data dir (revision %d) is not behind the store (%d)", src.oldRev, src.want.Revision)
	}
	return src
}

// dumpDataDir starts etcd in-process on dataDir with the member's flags and dumps it.
func dumpDataDir(t *testing.T, m member, dataDir string) etcdtest.Dump {
	t.Helper()
	cfg, err := embedded.ParseFlags(m.etcdFlags())
	if err != nil {
		t.Fatal(err)
	}
	cfg.Dir = dataDir
	return pitrDump(t, cfg)
}

// crashPoint is a failpoint of the restore and what a crash there leaves once
// rebuild.RecoverInterruptedRestore ran: the old data dir untouched (the swap did not
// begin), or the new one in place (the staged dir was complete).
type crashPoint struct {
	name     string
	keepsOld bool
}

var crashPoints = []crashPoint{
	{rebuild.FailpointAfterFetch, true},
	{rebuild.FailpointDuringReplay, true},
	{rebuild.FailpointAfterStaging, true},
	{rebuild.FailpointAfterAside, false},
	{rebuild.FailpointAfterSwap, false},
}

// killedAt runs etcdbr with args and the failpoint armed, and checks that it was killed.
func killedAt(t *testing.T, fp string, args []string) {
	t.Helper()
	p := start(t, args, "ETCDBR_FAILPOINT="+fp)
	p.wait(2 * time.Minute)
	if st := p.cmd.ProcessState; st.Exited() || st.String() != "signal: killed" {
		t.Fatalf("etcdbr %s was not killed at %s: %v\n%s", args[0], fp, st, p.Output())
	}
}

// noLeftovers checks that no staging dir or fetched snapshot file of a restore of
// dataDir is left.
func noLeftovers(t *testing.T, dataDir string) {
	t.Helper()
	for _, left := range []string{rebuild.StagingDir(dataDir), dataDir + ".etcdbr-snapshot.db"} {
		if _, err := os.Lstat(left); err == nil {
			t.Errorf("%s is left over", left)
		}
	}
}

// wantValidAt checks, fully, that dataDir is a valid data dir at revision rev.
func wantValidAt(t *testing.T, dataDir string, rev int64, when string) {
	t.Helper()
	v := datadir.InspectWith(context.Background(), dataDir, "", datadir.InspectOptions{Depth: datadir.DepthFull})
	if v.State != datadir.StateValid || v.Revision != rev {
		t.Fatalf("data dir %s: %s at revision %d (want valid at %d): %s", when, v.State, v.Revision, rev, v.Reason)
	}
}

// wantOldAside checks that the dirs moved aside from dataDir are n copies of the old
// data dir, byte for byte.
func wantOldAside(t *testing.T, src crashSource, dataDir string, n int) {
	t.Helper()
	olds, err := datadir.OldDataDirs(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(olds) != n {
		t.Fatalf("%d dirs moved aside (%v), want %d", len(olds), olds, n)
	}
	for _, old := range olds {
		if treeHash(t, old) != src.oldHash {
			t.Fatalf("the dir moved aside, %s, is not the old data dir", old)
		}
	}
}

// TestRestoreCrashPoints kills the restore with SIGKILL at each of its steps
// (ETCDBR_FAILPOINT) and then starts again as etcdbr does:
//
//   - into an empty place, `etcdbr restore`: after recovery (rebuild.RecoverInterruptedRestore)
//     and, where there is still no data dir, a second `etcdbr restore`, the data dir is valid
//     and holds exactly the source's data;
//   - over an old data dir (valid, behind the store, so `etcdbr run` restores over it): right
//     after recovery the data dir is either the old one byte for byte (the swap had not begun)
//     or the complete new one, never a mix; the next `etcdbr run` serves exactly the source's
//     data, and the old dir is kept aside, byte for byte.
//
// Never is a staging dir or a fetched snapshot left behind.
func TestRestoreCrashPoints(t *testing.T) {
	src := deltaSource(t)
	ctx := context.Background()
	// Every restore here is of the newest point, without knowing what the member served
	// after it: a new history.
	want := newHistory(src.want, src.want.Revision)

	for _, fp := range crashPoints {
		t.Run("into an empty place/"+fp.name, func(t *testing.T) {
			m := src.m
			m.DataDir = filepath.Join(t.TempDir(), "data")
			args := append([]string{"restore", "--data-dir", m.DataDir, "--store", src.store, "--"}, m.etcdFlags()...)
			killedAt(t, fp.name, args)

			did, err := rebuild.RecoverInterruptedRestore(m.DataDir, "", nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("recovery after %s: %q", fp.name, did)
			if entries, _ := os.ReadDir(m.DataDir); len(entries) == 0 {
				code, out := runToExit(t, args)
				if code != 0 {
					t.Fatalf("the restore after the crash: exit %d\n%s", code, out)
				}
			}

			noLeftovers(t, m.DataDir)
			wantValidAt(t, m.DataDir, want.Revision, "after the crash at "+fp.name)
			if diff := etcdtest.Diff(want, dumpDataDir(t, m, m.DataDir), 20); len(diff) > 0 {
				t.Fatalf("data after the crash at %s differs from the source's:\n%s", fp.name, strings.Join(diff, "\n"))
			}
		})
	}

	for _, fp := range crashPoints {
		t.Run("over an old data dir/"+fp.name, func(t *testing.T) {
			dir := t.TempDir()
			m := src.m
			m.DataDir = filepath.Join(dir, "data")
			copyTree(t, src.old, m.DataDir)
			// A store of its own: the next start may add to it.
			store := "file://" + filepath.Join(dir, "store")
			copyTree(t, strings.TrimPrefix(src.store, "file://"), filepath.Join(dir, "store"))
			args := m.runArgs(store, "--full-snapshot-schedule", "@every 1000h", "--delta-snapshot-period", "0")
			killedAt(t, fp.name, args)

			did, err := rebuild.RecoverInterruptedRestore(m.DataDir, "", nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("recovery after %s: %q", fp.name, did)
			noLeftovers(t, m.DataDir)
			if fp.keepsOld {
				if treeHash(t, m.DataDir) != src.oldHash {
					t.Fatalf("after the crash at %s the data dir is not the old one, untouched", fp.name)
				}
				wantOldAside(t, src, m.DataDir, 0)
			} else {
				wantValidAt(t, m.DataDir, want.Revision, "after the crash at "+fp.name)
				wantOldAside(t, src, m.DataDir, 1)
			}

			// The next start restores over the old dir, or keeps the new one.
			p := start(t, args)
			cli := client(t, m.ClientURL)
			got, err := etcdtest.Take(ctx, cli, 0)
			if err != nil {
				t.Fatal(err)
			}
			if diff := etcdtest.Diff(want, got, 20); len(diff) > 0 {
				t.Fatalf("data served after the crash at %s differs from the source's:\n%s", fp.name, strings.Join(diff, "\n"))
			}
			cli.Close()
			p.stop()
			noLeftovers(t, m.DataDir)
			wantValidAt(t, m.DataDir, want.Revision, "after the next start")
			wantOldAside(t, src, m.DataDir, 1)
		})
	}
}
