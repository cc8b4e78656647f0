package testsuite

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdbr/etcdbr/internal/etcdtest"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// takeDump dumps what the member at cli serves.
func takeDump(t *testing.T, m member) etcdtest.Dump {
	t.Helper()
	cli := client(t, m.ClientURL)
	defer cli.Close()
	d, err := etcdtest.Take(context.Background(), cli, 0)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// startBackedUp starts `etcdbr run` on a new member with a file store of its own, deltas
// every second, and waits for its first full snapshot; it returns the member, the store's
// URL, the process and a client.
func startBackedUp(t *testing.T) (member, string, *proc, *clientv3.Client) {
	t.Helper()
	dir := t.TempDir()
	src := newMember(t, dir)
	store := "file://" + filepath.Join(dir, "store")
	p := start(t, src.runArgs(store, "--full-snapshot-schedule", "@daily", "--delta-snapshot-period", "1s"))
	cli := client(t, src.ClientURL)
	waitFull(t, store, 1, time.Minute)
	return src, store, p, cli
}

// newHistory returns want as a restore that cannot know what the lost member served serves
// it: a new history, its revision raised past the store's newest revision (newest) plus the
// default bound of what was served but not backed up.
func newHistory(want etcdtest.Dump, newest int64) etcdtest.Dump {
	want.Revision = newest + catalog.DefaultUnbackedRevisions + catalog.BumpMargin
	return want
}

// sameData fails unless got holds want's keys, values, revisions, versions and leases; the
// store's revision of got is newRev (a restore that started a new history raised it).
func sameData(t *testing.T, want, got etcdtest.Dump, newRev int64, what string) {
	t.Helper()
	if got.Revision != newRev {
		t.Fatalf("%s: revision %d, want %d", what, got.Revision, newRev)
	}
	got.Revision = want.Revision
	if diff := etcdtest.Diff(want, got, 20); len(diff) > 0 {
		t.Fatalf("%s: the data differs from the source's at revision %d:\n%s", what, want.Revision, strings.Join(diff, "\n"))
	}
}

// An offline restore to an earlier point starts a new history, and `etcdbr run` on the
// restored data dir with the same store keeps it (it is not behind the store: its revision
// is past every revision the old history may have served), records the history and starts
// its chain with a full snapshot at once. Afterwards `etcdbr list`, `etcdbr verify --deep`
// and restores agree: the old history still restores up to its end, the new one from its
// start, and the revisions between are shown as the jump between two histories, not as a
// gap or as pruned backups. An exact copy (--exact) is never backed up into the store it
// came from.
func TestOfflineRestoreStartsNewHistory(t *testing.T) {
	t.Parallel()
	src, store, p, cli := startBackedUp(t)
	putKeys(t, cli, "a", 40)
	atA := takeDump(t, src)
	putKeys(t, cli, "b", 40)
	putKeys(t, cli, "a", 10) // changes 10 of a's values
	oldEnd := takeDump(t, src)
	cli.Close()
	p.stop() // uploads the final delta
	if got := newestRevision(t, store); got != oldEnd.Revision {
		t.Fatalf("the store's newest revision is %d, want %d (the final delta)", got, oldEnd.Revision)
	}

	// Restore the end of A offline into a new data dir of the same member (same cluster).
	m := src
	m.DataDir = filepath.Join(t.TempDir(), "data")
	code, out := runToExit(t, append([]string{"restore", "--data-dir", m.DataDir, "--store", store, "--to-revision", fmt.Sprint(atA.Revision), "--"}, m.etcdFlags()...))
	newStart := oldEnd.Revision + catalog.DefaultUnbackedRevisions + catalog.BumpMargin
	if code != 0 || !strings.Contains(out, fmt.Sprintf("starts a new history at revision %d", newStart)) {
		t.Fatalf("etcdbr restore: exit %d, want a new history at revision %d\n%s", code, newStart, out)
	}

	// run keeps it, records the history and takes a full snapshot of it at once.
	p = start(t, m.runArgs(store, "--full-snapshot-schedule", "@daily", "--delta-snapshot-period", "1s"))
	sameData(t, atA, takeDump(t, m), newStart, "run on the restored data dir")
	p.waitLine("decision=keep", time.Minute)
	fresh := waitFull(t, store, newStart, time.Minute)
	if fresh.Revision != newStart {
		t.Fatalf("the new history's first full snapshot is at revision %d, want %d", fresh.Revision, newStart)
	}
	s := openStore(t, store)
	defer s.Close()
	hs, err := s.Histories(context.Background())
	if err != nil || len(hs) != 1 || hs[0].Start != newStart || hs[0].Revision != atA.Revision || hs[0].Trigger != "offline" {
		t.Fatalf("the store's history records: %+v, %v; want one starting at %d from revision %d (offline)", hs, err, newStart, atA.Revision)
	}
	cli = client(t, m.ClientURL)
	putKeys(t, cli, "c", 20)
	cli.Close()
	newEnd := takeDump(t, m)
	p.stop()

	// list shows both histories and the jump between them, no gap and nothing pruned.
	code, out = runToExit(t, []string{"list", "--store", store, "--objects"})
	if code != 0 {
		t.Fatalf("etcdbr list: exit %d\n%s", code, out)
	}
	for _, want := range []string{
		fmt.Sprintf("to revision %d (", newEnd.Revision),
		fmt.Sprintf("went back to revision %d and started a new history at revision %d", atA.Revision, newStart),
		fmt.Sprintf("revisions %d to %d are in neither", oldEnd.Revision+1, newStart-1),
	} {
		if !strings.Contains(out, want) {
			t.Errorf("etcdbr list does not say %q:\n%s", want, out)
		}
	}
	for _, bad := range []string{"gap:", "pruned:", "overlap:"} {
		if strings.Contains(out, bad) {
			t.Errorf("etcdbr list shows %q after a restore:\n%s", bad, out)
		}
	}
	if code, out := runToExit(t, []string{"verify", "--store", store, "--deep"}); code != 0 {
		t.Fatalf("etcdbr verify --deep: exit %d\n%s", code, out)
	}

	// Restores reach both histories: the new one's newest point, and the old one's end.
	restoreTo := func(t *testing.T, flags ...string) member {
		r := newMember(t, t.TempDir())
		args := append([]string{"restore", "--data-dir", r.DataDir, "--store", store, "--keep-store-cluster"}, flags...)
		code, out := runToExit(t, append(append(args, "--"), r.etcdFlags()...))
		if code != 0 {
			t.Fatalf("etcdbr restore %v: exit %d\n%s", flags, code, out)
		}
		rp := start(t, r.runArgs("file://"+filepath.Join(t.TempDir(), "other-store"), "--full-snapshot-schedule", "@daily"))
		t.Cleanup(rp.stop)
		return r
	}
	t.Run("the newest point", func(t *testing.T) {
		r := restoreTo(t)
		sameData(t, newEnd, takeDump(t, r), newEnd.Revision+catalog.DefaultUnbackedRevisions+catalog.BumpMargin, "the newest point")
	})
	t.Run("the old history's end", func(t *testing.T) {
		r := restoreTo(t, "--to-revision", fmt.Sprint(oldEnd.Revision))
		sameData(t, oldEnd, takeDump(t, r), newEnd.Revision+catalog.DefaultUnbackedRevisions+catalog.BumpMargin, "the old history's end")
	})
	t.Run("a revision between the histories", func(t *testing.T) {
		r := newMember(t, t.TempDir())
		code, out := runToExit(t, append([]string{"restore", "--data-dir", r.DataDir, "--store", store, "--keep-store-cluster",
			"--to-revision", fmt.Sprint(oldEnd.Revision + 1), "--"}, r.etcdFlags()...))
		if code != 1 || !strings.Contains(out, "lies between two histories") || !strings.Contains(out, fmt.Sprintf("--to-revision %d", oldEnd.Revision)) {
			t.Fatalf("a restore to a revision no history holds: exit %d, want 1 and what would work\n%s", code, out)
		}
	})

	// An exact copy is refused by run with the store it came from, and runs with another.
	exact := src
	exact.DataDir = filepath.Join(t.TempDir(), "data")
	code, out = runToExit(t, append([]string{"restore", "--data-dir", exact.DataDir, "--store", store, "--exact", "--to-revision", fmt.Sprint(atA.Revision), "--"}, exact.etcdFlags()...))
	if code != 0 || strings.Contains(out, "new history") {
		t.Fatalf("etcdbr restore --exact: exit %d\n%s", code, out)
	}
	code, out = runToExit(t, exact.runArgs(store))
	if code == 0 || !strings.Contains(out, "exact copy") || !strings.Contains(out, "another --store") {
		t.Fatalf("run on an exact copy with the store it came from: exit %d, want a refusal\n%s", code, out)
	}
	code, out = runToExit(t, append([]string{"validate", "--data-dir", exact.DataDir, "--store", store, "--"}, exact.etcdFlags()...))
	if code != 1 || !strings.Contains(out, "at start: stop: ") || !strings.Contains(out, "exact copy") {
		t.Fatalf("validate of an exact copy with the store it came from: exit %d, want what run does (stop)\n%s", code, out)
	}
	if got := newestRevision(t, store); got != newEnd.Revision {
		t.Fatalf("the store's newest revision moved to %d after the refused run, want %d", got, newEnd.Revision)
	}
	p = start(t, exact.runArgs("file://"+filepath.Join(t.TempDir(), "forensics"), "--full-snapshot-schedule", "@daily"))
	defer p.stop()
	sameData(t, atA, takeDump(t, exact), atA.Revision, "the exact copy")
}
