package backup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// clientSource is FullFromClient's source, with guess instead of its revision read.
func clientSource(cli *clientv3.Client, guess func(context.Context) (int64, error)) streamSource {
	return streamSource{guess: guess, open: func(ctx context.Context) (io.ReadCloser, error) { return cli.Snapshot(ctx) }}
}

// A member that is not written to is snapshotted in one pass: the stream is uploaded while it
// is received, with no spool file (the spool dir does not even exist), under the revision
// inside the db.
func TestFullFromClientStreams(t *testing.T) {
	e := startEtcd(t)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{e.Clients[0].Addr().String()}, Logger: zap.NewNop(), DialOptions: SnapshotDialOptions()})
	require.NoError(t, err)
	defer cli.Close()
	ctx := context.Background()
	for i := range 2000 {
		_, err := cli.Put(ctx, fmt.Sprintf("/k/%04d", i), strings.Repeat("v", i%700))
		require.NoError(t, err)
	}
	_, err = cli.Delete(ctx, "/k/1", clientv3.WithPrefix())
	require.NoError(t, err)
	store := memStore(t)
	snap, err := FullFromClient(ctx, cli, store, filepath.Join(t.TempDir(), "does-not-exist"))
	require.NoError(t, err)
	now, err := currentRevision(ctx, cli)
	require.NoError(t, err)
	require.Equal(t, now, snap.Revision)
	require.Equal(t, snap.Revision, checkPayload(t, readPayload(t, store, snap)))
}

// When the revision read before the stream is not the one inside the snapshot (a write came
// in between, or the read failed, or it was wrong), the upload under the wrong name never
// becomes visible: the store ends with one object, named with the revision inside it, and no
// spool file is left.
func TestFullFromClientWrongGuess(t *testing.T) {
	e := startEtcd(t)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{e.Clients[0].Addr().String()}, Logger: zap.NewNop()})
	require.NoError(t, err)
	defer cli.Close()
	ctx := context.Background()
	for i := range 500 {
		_, err := cli.Put(ctx, fmt.Sprintf("/k/%04d", i), "v")
		require.NoError(t, err)
	}
	for name, guess := range map[string]func(context.Context) (int64, error){
		// Writes between the reads and the snapshot: the stream is spooled.
		"writes": func(ctx context.Context) (int64, error) {
			rev, err := currentRevision(ctx, cli)
			if err != nil {
				return 0, err
			}
			_, err = cli.Put(ctx, "/between", "v")
			return rev, err
		},
		// A revision that is not the one inside (another member, say): the upload under it is
		// abandoned once the stream ended, and the snapshot taken again.
		"wrong": func(ctx context.Context) (int64, error) {
			rev, err := currentRevision(ctx, cli)
			return rev + 1, err
		},
		"failed": func(context.Context) (int64, error) {
			return 0, errors.New("permission denied")
		},
	} {
		t.Run(name, func(t *testing.T) {
			store := memStore(t)
			spool := t.TempDir()
			snap, err := fullFromStream(ctx, store, spool, clientSource(cli, guess))
			require.NoError(t, err)
			now, err := currentRevision(ctx, cli)
			require.NoError(t, err)
			if name == "writes" {
				now-- // the second read wrote once more after the snapshot
			}
			require.Equal(t, now, snap.Revision)
			require.Equal(t, snap.Revision, checkPayload(t, readPayload(t, store, snap)))
			listed, err := store.List(ctx, catalog.KindFull)
			require.NoError(t, err)
			require.Len(t, listed, 1, "objects in the store: %v", listed)
			require.Equal(t, snap.Key, listed[0].Key)
			left, err := os.ReadDir(spool)
			require.NoError(t, err)
			require.Empty(t, left, "spool files left behind")
		})
	}
}

// A snapshot abandoned while it streams, or whose stream is cut short or damaged, leaves
// nothing in the store and no spool file.
func TestFullFromClientFails(t *testing.T) {
	e := startEtcd(t)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{e.Clients[0].Addr().String()}, Logger: zap.NewNop()})
	require.NoError(t, err)
	defer cli.Close()
	ctx := context.Background()
	big := string(bytes.Repeat([]byte("x"), 64<<10))
	for i := range 200 {
		_, err := cli.Put(ctx, fmt.Sprintf("/big/%d", i), big)
		require.NoError(t, err)
	}
	for _, c := range []struct {
		name string
		// wrap changes the stream; it may cancel the snapshot's context.
		wrap func(r io.Reader, cancel func()) io.Reader
		want string
	}{
		{"cancelled", func(r io.Reader, cancel func()) io.Reader {
			return io.TeeReader(r, &cancelAfter{n: 1 << 20, cancel: cancel})
		}, "context canceled"},
		{"cut short", func(r io.Reader, _ func()) io.Reader { return io.LimitReader(r, 3<<20) }, "does not end with the SHA-256"},
		{"damaged", func(r io.Reader, _ func()) io.Reader { return &flipByte{r: r, at: 2 << 20} }, "does not end with the SHA-256"},
	} {
		for _, path := range []string{"streamed", "spooled"} {
			t.Run(c.name+", "+path, func(t *testing.T) {
				store := memStore(t)
				spool := t.TempDir()
				sctx, cancel := context.WithCancel(ctx)
				defer cancel()
				src := streamSource{
					guess: func(ctx context.Context) (int64, error) {
						if path == "spooled" {
							return 0, errors.New("no revision")
						}
						return currentRevision(ctx, cli)
					},
					open: func(ctx context.Context) (io.ReadCloser, error) {
						rc, err := cli.Snapshot(ctx)
						if err != nil {
							return nil, err
						}
						return readCloser{c.wrap(rc, cancel), rc}, nil
					},
				}
				_, err := fullFromStream(sctx, store, spool, src)
				require.ErrorContains(t, err, c.want)
				listed, err := store.List(ctx, catalog.KindFull)
				require.NoError(t, err)
				require.Empty(t, listed)
				left, err := os.ReadDir(spool)
				require.NoError(t, err)
				require.Empty(t, left, "spool files left behind")
			})
		}
	}
}

type readCloser struct {
	io.Reader
	io.Closer
}

// flipByte flips the byte at offset at of what it reads.
type flipByte struct {
	r  io.Reader
	at int64
	n  int64
}

func (f *flipByte) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if i := f.at - f.n; i >= 0 && i < int64(n) {
		p[i] ^= 0xff
	}
	f.n += int64(n)
	return n, err
}

// The snapshot client's buffer pool hands out buffers of the length asked for, pooled by
// power-of-two capacity up to 4 MiB and plain above; it ignores buffers it could not have
// handed out. (TestFullFromClient and TestFullFromClientStreams receive through it and check
// every byte against etcd's SHA-256.)
func TestRecvPool(t *testing.T) {
	p := &recvPool{}
	for _, n := range []int{0, 1, 2, 3, 1000, 32<<10 + 30, 1 << 20, 1<<22 - 1, 1 << 22, 1<<22 + 1, 9 << 20} {
		b := p.Get(n)
		require.Len(t, *b, n)
		c := cap(*b)
		if n <= 1<<maxPoolShift {
			require.Equal(t, 0, c&(c-1), "capacity %d of a pooled buffer for %d bytes is a power of two", c, n)
			require.Less(t, c, 2*max(n, 1), "capacity %d for %d bytes", c, n)
		} else {
			require.Equal(t, n, c)
		}
		p.Put(b)
		again := p.Get(n)
		require.Len(t, *again, n)
	}
	odd := make([]byte, 100)
	p.Put(&odd) // not a power of two: dropped
	huge := make([]byte, 0, 1<<23)
	p.Put(&huge) // above the pooled sizes: dropped
	require.Len(t, *p.Get(100), 100)
}
