package testsuite

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/etcdbr/etcdbr/internal/etcdtest"
)

// sourceData runs etcdbr on a fresh member, applies the standard workload, waits for a full
// snapshot that holds all of it, stops, and returns the member, its store and the dump of its
// data at the last revision.
func sourceData(t *testing.T) (member, string, etcdtest.Dump) {
	t.Helper()
	dir := t.TempDir()
	m := newMember(t, dir)
	store := "file://" + filepath.Join(dir, "store")
	p := start(t, m.runArgs(store, "--full-snapshot-schedule", "@every 1s"))
	cli := client(t, m.ClientURL)
	ctx := context.Background()
	rev, err := etcdtest.Workload{Seed: 1, Keys: 10000, Overwrites: 1500, Deletes: 800, LeasedKeys: 300}.Run(ctx, cli)
	if err != nil {
		t.Fatal(err)
	}
	want, err := etcdtest.Take(ctx, cli, 0)
	if err != nil {
		t.Fatal(err)
	}
	if want.Revision != rev {
		t.Fatalf("dump at revision %d, last write at %d", want.Revision, rev)
	}
	waitFull(t, store, rev, time.Minute)
	cli.Close()
	p.stop()
	return m, store, want
}

// copyTree copies a directory tree (files and dirs, modes kept).
func copyTree(t testing.TB, src, dst string) {
	t.Helper()
	if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
		t.Fatal(err)
	}
}

// TestRunRestoresDamagedDataDir damages the data dir of a member with a backup in the store
// in several ways; each time `etcdbr run` brings back every key and lease exactly.
func TestRunRestoresDamagedDataDir(t *testing.T) {
	src, store, want := sourceData(t)
	if len(want.KVs) < 9000 || len(want.Leases) != 3 {
		t.Fatalf("workload too small: %d keys, %d leases", len(want.KVs), len(want.Leases))
	}
	storeDir := strings.TrimPrefix(store, "file://")
	damage := map[string]func(t *testing.T, dataDir string){
		"truncated db": func(t *testing.T, dataDir string) {
			db := filepath.Join(dataDir, "member", "snap", "db")
			fi, err := os.Stat(db)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(db, fi.Size()/3); err != nil {
				t.Fatal(err)
			}
		},
		"data dir deleted": func(t *testing.T, dataDir string) {
			if err := os.RemoveAll(dataDir); err != nil {
				t.Fatal(err)
			}
		},
		"wal cut short": func(t *testing.T, dataDir string) {
			wals, err := filepath.Glob(filepath.Join(dataDir, "member", "wal", "*.wal"))
			if err != nil || len(wals) == 0 {
				t.Fatalf("no WAL files: %v", err)
			}
			last := wals[len(wals)-1]
			fi, err := os.Stat(last)
			if err != nil {
				t.Fatal(err)
			}
			// WAL files are preallocated: cut inside the written part, mid-record.
			used := walUsed(t, last)
			if err := os.Truncate(last, min(fi.Size(), used/2+3)); err != nil {
				t.Fatal(err)
			}
		},
	}
	for name, fn := range damage {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			m := newMember(t, dir)
			m.Name = src.Name
			copyTree(t, src.DataDir, m.DataDir)
			copyTree(t, storeDir, filepath.Join(dir, "store"))
			// The member keeps its name; its URLs move, which a restore takes from the flags:
			// the restored member is another cluster ID. A damaged data dir still tells (in its
			// WAL) that it was the store's cluster, and the store follows the member; a deleted
			// one does not, and --force-restore hands the store over.
			fn(t, m.DataDir)
			extra := []string{"--full-snapshot-schedule", "@daily"}
			if name == "data dir deleted" {
				extra = append(extra, "--force-restore")
			}
			p := start(t, m.runArgs("file://"+filepath.Join(dir, "store"), extra...))
			cli := client(t, m.ClientURL)
			got, err := etcdtest.Take(context.Background(), cli, 0)
			if err != nil {
				t.Fatal(err)
			}
			// A restore at start cannot know what the member served after the store's
			// newest revision: the restored data starts a new history. A truncated db is
			// not restored: the verdict finds the data dir valid (etcd rebuilds it).
			served := want
			if name != "truncated db" {
				served = newHistory(want, want.Revision)
			}
			if diff := etcdtest.Diff(served, got, 20); len(diff) > 0 {
				t.Fatalf("restored data differs from the source:\n%s\n%s", strings.Join(diff, "\n"), p.Output())
			}
			p.stop()
		})
	}
}

// walUsed returns how many bytes at the start of a preallocated WAL file are written (the
// rest is zeros).
func walUsed(t testing.TB, path string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := len(b)
	for n > 0 && b[n-1] == 0 {
		n--
	}
	return int64(n)
}

// treeHash hashes every file's path, mode and bytes under dir.
func treeHash(t testing.TB, dir string) string {
	t.Helper()
	h := sha256.New()
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		h.Write([]byte(rel + "\x00" + info.Mode().String() + "\x00"))
		if d.Type().IsRegular() {
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			h.Write(b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// TestRunCorruptDataDirWithoutBackup: a corrupt data dir and an empty store stop etcdbr with
// a clear error, and the data dir is not touched.
func TestRunCorruptDataDirWithoutBackup(t *testing.T) {
	dir := t.TempDir()
	m := newMember(t, dir)
	p := start(t, m.runArgs("file://"+filepath.Join(dir, "store1")))
	cli := client(t, m.ClientURL)
	if _, err := (etcdtest.Workload{Seed: 2, Keys: 500}).Run(context.Background(), cli); err != nil {
		t.Fatal(err)
	}
	cli.Close()
	p.stop()

	db := filepath.Join(m.DataDir, "member", "snap", "db")
	if err := os.Truncate(db, 8192); err != nil {
		t.Fatal(err)
	}
	before := treeHash(t, m.DataDir)
	code, out := runToExit(t, m.runArgs("file://"+filepath.Join(dir, "empty-store")))
	if code != 1 {
		t.Fatalf("exit code %d, want 1; output:\n%s", code, out)
	}
	for _, s := range []string{"corrupt", "no full snapshot", "left untouched"} {
		if !strings.Contains(out, s) {
			t.Errorf("the error does not say %q:\n%s", s, out)
		}
	}
	if after := treeHash(t, m.DataDir); after != before {
		t.Fatal("the data dir changed")
	}
	if entries, _ := filepath.Glob(m.DataDir + ".*"); len(entries) > 0 {
		t.Fatalf("etcdbr left files beside the data dir: %v", entries)
	}
}

// TestUsageErrors: mistakes a user can make get exit code 2 (usage) or 1 (runtime) and a
// message that names the problem.
func TestUsageErrors(t *testing.T) {
	dir := t.TempDir()
	m := newMember(t, dir)
	store := "file://" + filepath.Join(dir, "store")
	notADir := filepath.Join(dir, "file")
	if err := os.WriteFile(notADir, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		args []string
		code int
		says []string
	}{
		{"bad cron", m.runArgs(store, "--full-snapshot-schedule", "every hour"), 2, []string{"--full-snapshot-schedule", "every hour", "five cron fields"}},
		{"unknown etcd flag", append(m.runArgs(store), "--no-such-flag=1"), 2, []string{"no-such-flag"}},
		{"unknown store scheme", m.runArgs("ftp://host/x"), 2, []string{"ftp", "s3://"}},
		{"unknown etcdbr flag", []string{"run", "--bogus"}, 2, []string{"--bogus"}},
		{"data dir not writable", append([]string{"run", "--data-dir", filepath.Join(notADir, "data"), "--store", store, "--"}, m.etcdFlags()...), 1, []string{"not writable"}},
		{"restore into non-empty dir", []string{"restore", "--data-dir", dir, "--store", store}, 2, []string{"not empty"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, out := runToExit(t, c.args)
			if code != c.code {
				t.Errorf("exit code %d, want %d; output:\n%s", code, c.code, out)
			}
			for _, s := range c.says {
				if !strings.Contains(out, s) {
					t.Errorf("output does not mention %q:\n%s", s, out)
				}
			}
		})
	}
}

// TestVersion prints etcdbr's and etcd's versions.
func TestVersion(t *testing.T) {
	out, err := exec.Command(binary, "version").CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if !strings.Contains(string(out), "etcdbr version") || !strings.Contains(string(out), "etcd Version: 3.6.") {
		t.Fatalf("unexpected version output:\n%s", out)
	}
}
