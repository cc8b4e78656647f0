package testsuite

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/etcdbr/etcdbr/embedded"
	"github.com/etcdbr/etcdbr/internal/etcdtest"
)

// deltaSource runs etcdbr on a fresh member with one full snapshot at the start and
// deltas every second, writes three batches of keys (each in the store before the next),
// stops it and returns the member, its store and the dump of its data.
func deltaSource(t *testing.T) (member, string, etcdtest.Dump) {
	t.Helper()
	dir := t.TempDir()
	m := newMember(t, dir)
	store := "file://" + filepath.Join(dir, "store")
	p := start(t, m.runArgs(store, "--full-snapshot-schedule", "@every 1000h", "--delta-snapshot-period", "1s"))
	cli := client(t, m.ClientURL)
	ctx := context.Background()
	for batch := range 3 {
		var rev int64
		for i := range 100 {
			resp, err := cli.Put(ctx, fmt.Sprintf("k-%d-%03d", batch, i), strings.Repeat("x", 64))
			if err != nil {
				t.Fatal(err)
			}
			rev = resp.Header.Revision
		}
		if _, err := cli.Delete(ctx, fmt.Sprintf("k-%d-000", batch)); err != nil {
			t.Fatal(err)
		}
		waitStoreRevision(t, store, rev+1, time.Minute)
	}
	want, err := etcdtest.Take(ctx, cli, 0)
	if err != nil {
		t.Fatal(err)
	}
	cli.Close()
	p.stop()
	if n := len(deltas(t, store)); n < 2 {
		t.Fatalf("the source wrote %d deltas; the replay failpoint needs 2", n)
	}
	return m, store, want
}

// dumpDataDir starts etcd in-process on dataDir with the member's flags and dumps it.
func dumpDataDir(t *testing.T, m member, dataDir string) etcdtest.Dump {
	t.Helper()
	cfg, err := embedded.ParseFlags(m.etcdFlags())
	if err != nil {
		t.Fatal(err)
	}
	cfg.Dir = dataDir
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e, err := embedded.Start(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	d, err := etcdtest.Take(ctx, e.Client(), 0)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestRestoreCrashPoints kills `etcdbr restore` with SIGKILL at each step of the restore
// (ETCDBR_FAILPOINT), recovers as a start does (embedded.RecoverInterruptedRestore), runs
// the restore again where there is still no data dir, and checks that the result is a
// valid data dir holding exactly the source's data, with no staging dir or fetched
// snapshot left.
func TestRestoreCrashPoints(t *testing.T) {
	src, store, want := deltaSource(t)
	for _, fp := range []string{
		embedded.FailpointAfterFetch,
		embedded.FailpointDuringReplay,
		embedded.FailpointAfterStaging,
		embedded.FailpointAfterAside,
		embedded.FailpointAfterSwap,
	} {
		t.Run(fp, func(t *testing.T) {
			m := src
			m.DataDir = filepath.Join(t.TempDir(), "data")
			args := append([]string{"restore", "--data-dir", m.DataDir, "--store", store, "--"}, m.etcdFlags()...)
			p := start(t, args, "ETCDBR_FAILPOINT="+fp)
			p.wait(2 * time.Minute)
			if st := p.cmd.ProcessState; st.Exited() || st.String() != "signal: killed" {
				t.Fatalf("the restore was not killed at %s: %v\n%s", fp, st, p.Output())
			}

			did, err := embedded.RecoverInterruptedRestore(m.DataDir, "", nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("recovery after %s: %q", fp, did)
			if entries, _ := os.ReadDir(m.DataDir); len(entries) == 0 {
				code, out := runToExit(t, args)
				if code != 0 {
					t.Fatalf("the restore after the crash: exit %d\n%s", code, out)
				}
			}

			for _, left := range []string{embedded.StagingDir(m.DataDir), m.DataDir + ".etcdbr-snapshot.db"} {
				if _, err := os.Lstat(left); err == nil {
					t.Errorf("%s is left over", left)
				}
			}
			v := embedded.InspectWith(context.Background(), m.DataDir, "", embedded.InspectOptions{Depth: embedded.DepthFull})
			if v.State != embedded.StateValid || v.Revision != want.Revision {
				t.Fatalf("data dir after the crash at %s: %s at revision %d (want valid at %d): %s", fp, v.State, v.Revision, want.Revision, v.Reason)
			}
			if diff := etcdtest.Diff(want, dumpDataDir(t, m, m.DataDir), 20); len(diff) > 0 {
				t.Fatalf("data after the crash at %s differs from the source's:\n%s", fp, strings.Join(diff, "\n"))
			}
		})
	}
}
