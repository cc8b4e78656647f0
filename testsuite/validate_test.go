package testsuite

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/etcdbr/etcdbr/embedded/datadir"
	"github.com/etcdbr/etcdbr/snapstore"
)

// runPhase runs etcdbr on m with store, writes n keys under prefix, waits for a full
// snapshot holding them, stops it cleanly and returns the last revision.
func runPhase(t *testing.T, m member, store, prefix string, n int) int64 {
	t.Helper()
	p := start(t, m.runArgs(store, "--full-snapshot-schedule", "@every 1s"))
	cli := client(t, m.ClientURL)
	var rev int64
	for i := range n {
		resp, err := cli.Put(context.Background(), fmt.Sprintf("%s-%04d", prefix, i), strings.Repeat("v", 100))
		if err != nil {
			t.Fatal(err)
		}
		rev = resp.Header.Revision
	}
	waitFull(t, store, rev, time.Minute)
	cli.Close()
	p.stop()
	return rev
}

// validate runs `etcdbr validate` and returns its exit code and output.
func validate(t *testing.T, dataDir string, extra ...string) (int, string) {
	t.Helper()
	code, out := runToExit(t, append([]string{"validate", "--data-dir", dataDir}, extra...))
	t.Logf("validate %s %v: exit %d\n%s", dataDir, extra, code, out)
	return code, out
}

func wantOutput(t *testing.T, out string, subs ...string) {
	t.Helper()
	for _, s := range subs {
		if !strings.Contains(out, s) {
			t.Errorf("output lacks %q", s)
		}
	}
}

// TestValidateCommand runs `etcdbr validate` on data dirs made by etcdbr run: valid, corrupt,
// missing, unreadable (could not tell), behind the store, and of another cluster.
func TestValidateCommand(t *testing.T) {
	dir := t.TempDir()
	m := newMember(t, dir)
	store := "file://" + filepath.Join(dir, "store")
	rev1 := runPhase(t, m, store, "a", 200)
	old := filepath.Join(dir, "old")
	copyTree(t, m.DataDir, old)
	rev2 := runPhase(t, m, store, "b", 200)
	if rev2 <= rev1 {
		t.Fatalf("second phase ended at %d, first at %d", rev2, rev1)
	}

	digest := treeSum(t, m.DataDir)
	code, out := validate(t, m.DataDir)
	if code != 0 {
		t.Fatalf("valid data dir: exit %d", code)
	}
	wantOutput(t, out, "verdict: valid", fmt.Sprintf("revision: %d", rev2))
	if treeSum(t, m.DataDir) != digest {
		t.Fatal("validate changed the data dir")
	}

	t.Run("etcdbr run's clean stop leaves a marker that quick trusts", func(t *testing.T) {
		code, out := validate(t, m.DataDir, "--validation", "quick")
		if code != 0 {
			t.Fatalf("exit %d, want 0", code)
		}
		wantOutput(t, out, "verdict: valid", "check: quick", fmt.Sprintf("revision: %d", rev2))
	})

	t.Run("quick without a clean-stop marker cannot tell", func(t *testing.T) {
		d := filepath.Join(t.TempDir(), "data")
		copyTree(t, m.DataDir, d)
		if err := datadir.RemoveCleanStopMarker(d); err != nil {
			t.Fatal(err)
		}
		code, out := validate(t, d, "--validation", "quick")
		if code != 2 {
			t.Fatalf("exit %d, want 2", code)
		}
		wantOutput(t, out, "verdict: unknown", "clean-stop marker")
	})

	t.Run("quick with a clean-stop marker", func(t *testing.T) {
		d := filepath.Join(t.TempDir(), "data")
		copyTree(t, m.DataDir, d)
		if err := datadir.WriteCleanStopMarker(d, ""); err != nil {
			t.Fatal(err)
		}
		code, out := validate(t, d, "--validation", "quick")
		if code != 0 {
			t.Fatalf("exit %d, want 0", code)
		}
		wantOutput(t, out, "verdict: valid", "check: quick", fmt.Sprintf("revision: %d", rev2))
	})

	t.Run("corrupt", func(t *testing.T) {
		d := filepath.Join(t.TempDir(), "data")
		copyTree(t, m.DataDir, d)
		db := filepath.Join(d, "member", "snap", "db")
		// Keep the two meta pages only: every page they point to is cut off
		// (bbolt's file is preallocated, so a cut by size may miss the pages in use).
		if err := os.Truncate(db, 8192); err != nil {
			t.Fatal(err)
		}
		code, out := validate(t, d)
		if code != 1 {
			t.Fatalf("exit %d, want 1", code)
		}
		wantOutput(t, out, "verdict: corrupt", db)
		code, out = validate(t, d, "--store", store)
		if code != 1 {
			t.Fatalf("with the store: exit %d, want 1", code)
		}
		wantOutput(t, out, "at start: restore")
	})

	t.Run("missing", func(t *testing.T) {
		code, out := validate(t, filepath.Join(t.TempDir(), "none"))
		if code != 1 {
			t.Fatalf("exit %d, want 1", code)
		}
		wantOutput(t, out, "verdict: missing")
	})

	t.Run("unreadable: could not tell", func(t *testing.T) {
		// Root reads everything: run validate as nobody on a dir only root may read.
		parent, err := os.MkdirTemp("", "etcdbr-validate-*")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(parent) })
		if err := os.Chmod(parent, 0o755); err != nil {
			t.Fatal(err)
		}
		d := filepath.Join(parent, "data")
		copyTree(t, m.DataDir, d)
		if err := os.Chmod(d, 0o700); err != nil {
			t.Fatal(err)
		}
		before := treeSum(t, d)
		bin, err := os.ReadFile(binary) // the suite's build dir is private to root
		if err != nil {
			t.Fatal(err)
		}
		nobodyBin := filepath.Join(parent, "etcdbr")
		if err := os.WriteFile(nobodyBin, bin, 0o755); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(nobodyBin, "validate", "--data-dir", d)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		outb, err := cmd.CombinedOutput()
		out := string(outb)
		t.Logf("as nobody: %v\n%s", err, out)
		if code := cmd.ProcessState.ExitCode(); code != 2 {
			t.Fatalf("exit %d, want 2", code)
		}
		wantOutput(t, out, "verdict: unknown", "permission denied")
		if treeSum(t, d) != before {
			t.Fatal("validate changed the data dir")
		}
	})

	t.Run("behind the store", func(t *testing.T) {
		code, out := validate(t, old, "--store", store)
		if code != 1 {
			t.Fatalf("exit %d, want 1", code)
		}
		wantOutput(t, out, "verdict: valid", fmt.Sprintf("revision: %d", rev1), fmt.Sprintf("store revision: %d", rev2),
			"at start: restore", "lost locally")
		code, out = validate(t, m.DataDir, "--store", store)
		if code != 0 {
			t.Fatalf("up to date: exit %d, want 0", code)
		}
		wantOutput(t, out, "at start: keep")
	})

	t.Run("another cluster", func(t *testing.T) {
		id, err := datadir.ReadIDs(m.DataDir, "")
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		claim := func(url, cluster string) {
			s := openStore(t, url)
			defer s.Close()
			if err := s.ClaimClusterID(ctx, cluster); err != nil {
				t.Fatal(err)
			}
		}
		same := "file://" + filepath.Join(t.TempDir(), "same")
		copyTree(t, strings.TrimPrefix(store, "file://"), strings.TrimPrefix(same, "file://"))
		claim(same, id.ClusterID)
		code, out := validate(t, m.DataDir, "--store", same)
		if code != 0 {
			t.Fatalf("same cluster: exit %d, want 0", code)
		}
		wantOutput(t, out, "cluster: "+id.ClusterID, "store cluster: "+id.ClusterID)

		other := "file://" + filepath.Join(t.TempDir(), "other")
		copyTree(t, strings.TrimPrefix(store, "file://"), strings.TrimPrefix(other, "file://"))
		if err := os.Remove(filepath.Join(strings.TrimPrefix(other, "file://"), snapstore.ClusterIDKey)); err != nil {
			t.Fatal(err) // etcdbr run recorded the member's cluster: replace it with another
		}
		claim(other, "1234567890abcdef")
		code, out = validate(t, m.DataDir, "--store", other)
		if code != 1 {
			t.Fatalf("another cluster: exit %d, want 1", code)
		}
		wantOutput(t, out, "at start: stop", "1234567890abcdef", id.ClusterID, "--force-restore")
	})
}

// treeSum is a digest of every file's path, size and content under root.
func treeSum(t testing.TB, root string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.Walk(root, func(path string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s %d %x\n", path, info.Size(), sha256.Sum256(data))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}
