package embeddedtest

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
)

// The helpers of the tests of embedded, embedded/datadir and embedded/rebuild that run etcd
// and make data dirs.
//
// embeddedtest cannot import package embedded: embedded's own tests import embeddedtest. So
// the helpers that start etcd take the function that starts it, embedded.Start, as an
// argument (embeddedtest.MustStart(t, embedded.Start, cfg)), and use what they need of the
// member through Member.

// StartTimeout bounds how long a test waits for a single-member etcd to serve. It is a
// deadline for a failure, not a measure: on a loaded machine (the suite's packages run side
// by side, and a test may start etcd in a child process it first has to exec) a start took
// over a minute.
const StartTimeout = 3 * time.Minute

// Member is an etcd member a test started: *embedded.Etcd.
type Member interface {
	Client() *clientv3.Client
	Close()
}

// Logger returns a logger that sends warnings and errors to t.Log.
func Logger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// tWriter sends log lines to t.Log.
type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

// MustStart starts etcd with cfg through start (embedded.Start) and closes it when the test
// ends.
func MustStart[M Member](t testing.TB, start func(context.Context, *embed.Config, *slog.Logger) (M, error), cfg *embed.Config) M {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), StartTimeout)
	defer cancel()
	e, err := start(ctx, cfg, Logger(t))
	require.NoError(t, err)
	t.Cleanup(e.Close)
	return e
}

// FillKeys writes n keys key-000.. with two versions each and deletes one.
func FillKeys(t testing.TB, c *clientv3.Client, n int) {
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

// AllKeys returns every key with its metadata and the current revision.
func AllKeys(t testing.TB, c *clientv3.Client) (map[string]KeyState, int64) {
	t.Helper()
	resp, err := c.Get(context.Background(), "", clientv3.WithPrefix())
	require.NoError(t, err)
	out := make(map[string]KeyState, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out[string(kv.Key)] = KeyState{string(kv.Value), kv.CreateRevision, kv.ModRevision, kv.Version}
	}
	return out, resp.Header.Revision
}

// KeyState is a key's value and metadata, as AllKeys reads them.
type KeyState struct {
	Value                  string
	CreateRevision, ModRev int64
	Version                int64
}

// NewDataDir creates a valid data dir with some keys, etcd (started through start,
// embedded.Start) stopped cleanly, and returns its config and the revision in it.
func NewDataDir[M Member](t testing.TB, start func(context.Context, *embed.Config, *slog.Logger) (M, error), keys int) (*embed.Config, int64) {
	t.Helper()
	cfg, _, rev := NewDataDirKeys(t, start, keys)
	return cfg, rev
}

// NewDataDirKeys is NewDataDir that also returns the keys in the data dir.
func NewDataDirKeys[M Member](t testing.TB, start func(context.Context, *embed.Config, *slog.Logger) (M, error), keys int) (*embed.Config, map[string]KeyState, int64) {
	t.Helper()
	cfg := NewConfig(t)
	e, err := start(context.Background(), cfg, Logger(t))
	require.NoError(t, err)
	FillKeys(t, e.Client(), keys)
	kvs, rev := AllKeys(t, e.Client())
	e.Close()
	return cfg, kvs, rev
}

// CopyTree copies a directory tree, keeping zero blocks sparse (WAL files are
// preallocated to 64 MiB).
func CopyTree(t testing.TB, src, dst string) {
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
		return CopySparse(path, target, info.Mode().Perm())
	})
	require.NoError(t, err)
}

// CopySparse copies the file src to the new file dst, leaving blocks of zeros as holes.
func CopySparse(src, dst string, perm fs.FileMode) error {
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

// TreeDigest maps every file under root to the sha256 of its content.
func TreeDigest(t testing.TB, root string) map[string][32]byte {
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

// WriteSnapshotFile streams a snapshot from the running member of cfg over its
// client URL (db followed by its sha256) into a file and returns its path.
func WriteSnapshotFile(t testing.TB, cfg *embed.Config) string {
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
