package embedded

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/etcdbr/etcdbr/internal/embeddedtest"
)

// startTimeout bounds how long a test waits for a single-member etcd to serve.
const startTimeout = 60 * time.Second

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// tWriter sends log lines to t.Log.
type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

// mustStart starts etcd with cfg and closes it when the test ends.
func mustStart(t testing.TB, cfg *embed.Config) *Etcd {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	e, err := Start(ctx, cfg, testLogger(t))
	require.NoError(t, err)
	t.Cleanup(e.Close)
	return e
}

// fillKeys writes n keys key-000.. with two versions each and deletes one.
func fillKeys(t testing.TB, c *clientv3.Client, n int) {
	t.Helper()
	ctx := context.Background()
	for v := range 2 {
		for i := range n {
			_, err := c.Put(ctx, fmt.Sprintf("key-%03d", i), fmt.Sprintf("value-%d-%d", i, v))
			require.NoError(t, err)
		}
	}
	_, err := c.Delete(ctx, "key-000")
	require.NoError(t, err)
}

// allKeys returns every key with its metadata and the current revision.
func allKeys(t testing.TB, c *clientv3.Client) (map[string]keyState, int64) {
	t.Helper()
	resp, err := c.Get(context.Background(), "", clientv3.WithPrefix())
	require.NoError(t, err)
	out := make(map[string]keyState, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out[string(kv.Key)] = keyState{string(kv.Value), kv.CreateRevision, kv.ModRevision, kv.Version}
	}
	return out, resp.Header.Revision
}

type keyState struct {
	Value                  string
	CreateRevision, ModRev int64
	Version                int64
}

// newDataDir creates a valid data dir with some keys, etcd stopped cleanly,
// and returns its config and the revision in it.
func newDataDir(t testing.TB, keys int) (*embed.Config, int64) {
	t.Helper()
	cfg, _, rev := newDataDirKeys(t, keys)
	return cfg, rev
}

// newDataDirKeys is newDataDir that also returns the keys in the data dir.
func newDataDirKeys(t testing.TB, keys int) (*embed.Config, map[string]keyState, int64) {
	t.Helper()
	cfg := embeddedtest.NewConfig(t)
	e, err := Start(context.Background(), cfg, testLogger(t))
	require.NoError(t, err)
	fillKeys(t, e.Client(), keys)
	kvs, rev := allKeys(t, e.Client())
	e.Close()
	return cfg, kvs, rev
}

// copyTree copies a directory tree, keeping zero blocks sparse (WAL files are
// preallocated to 64 MiB).
func copyTree(t testing.TB, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(target, info.Mode().Perm())
		}
		return copySparse(path, target, info.Mode().Perm())
	})
	require.NoError(t, err)
}

func copySparse(src, dst string, perm fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, perm)
	if err != nil {
		return err
	}
	defer out.Close()
	buf := make([]byte, 64<<10)
	var size int64
	for {
		n, rerr := in.Read(buf)
		if n > 0 {
			if isZero(buf[:n]) {
				if _, err := out.Seek(int64(n), io.SeekCurrent); err != nil {
					return err
				}
			} else if _, err := out.Write(buf[:n]); err != nil {
				return err
			}
			size += int64(n)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return rerr
		}
	}
	return out.Truncate(size)
}

func isZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// treeDigest maps every file under root to the sha256 of its content.
func treeDigest(t testing.TB, root string) map[string][32]byte {
	t.Helper()
	out := map[string][32]byte{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		out[rel] = sha256.Sum256(b)
		return nil
	})
	require.NoError(t, err)
	return out
}

// writeSnapshotFile streams a snapshot from the running member of cfg over its
// client URL (db followed by its sha256) into a file and returns its path.
func writeSnapshotFile(t testing.TB, cfg *embed.Config) string {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{cfg.AdvertiseClientUrls[0].String()},
		DialTimeout: 10 * time.Second,
		Logger:      zap.NewNop(),
	})
	require.NoError(t, err)
	defer c.Close()
	rc, err := c.Snapshot(context.Background())
	require.NoError(t, err)
	defer rc.Close()
	path := filepath.Join(t.TempDir(), "snapshot.db")
	f, err := os.Create(path)
	require.NoError(t, err)
	_, err = io.Copy(f, rc)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	return path
}
