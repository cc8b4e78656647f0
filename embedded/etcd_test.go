package embedded

import (
	"context"
	"net"
	"net/url"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/etcdbr/etcdbr/embedded/datadir"
	"github.com/etcdbr/etcdbr/embedded/rebuild"
	"github.com/etcdbr/etcdbr/internal/embeddedtest"
)

func TestStartCloseRestart(t *testing.T) {
	t.Parallel()
	cfg := embeddedtest.NewConfig(t)
	ctx := context.Background()

	e, err := Start(ctx, cfg, embeddedtest.Logger(t))
	require.NoError(t, err)
	_, err = e.Client().Put(ctx, "greeting", "hello")
	require.NoError(t, err)
	require.NotNil(t, e.Server())

	// While etcd runs, its data dir is reported as held, and a restore into it
	// is refused.
	v := datadir.Inspect(ctx, cfg.Dir, "")
	assert.Equal(t, datadir.StateCorrupt, v.State)
	assert.Contains(t, v.Reason, "locked by another process")
	db := embeddedtest.WriteSnapshotFile(t, cfg)
	_, err = rebuild.BuildDataDir(ctx, db, cfg, rebuild.RestoreOptions{}, embeddedtest.Logger(t))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "in use by a running etcd")

	e.Close()
	e.Close() // idempotent
	_, open := <-e.Err()
	assert.False(t, open, "Err is closed once etcd stopped")

	// Same config, same data dir: the value survived.
	e2 := embeddedtest.MustStart(t, Start, cfg)
	resp, err := e2.Client().Get(ctx, "greeting")
	require.NoError(t, err)
	require.Len(t, resp.Kvs, 1)
	assert.Equal(t, "hello", string(resp.Kvs[0].Value))
}

// TestStartFailureStopsEverything takes one of etcd's ports, checks that Start
// fails naming the cause, and that nothing it started is left: its other ports
// are free and the data dir can be used again at once.
func TestStartFailureStopsEverything(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		port func(cfg *embed.Config) *url.URL
	}{
		// The client listener is set up before the server starts...
		{name: "client port taken", port: func(cfg *embed.Config) *url.URL { return &cfg.ListenClientUrls[0] }},
		// ...the metrics listener after the server started.
		{name: "metrics port taken", port: func(cfg *embed.Config) *url.URL { return &cfg.ListenMetricsUrls[0] }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg, _ := embeddedtest.NewDataDir(t, Start, 3)
			taken := tt.port(cfg)
			l, err := net.Listen("tcp", taken.Host)
			require.NoError(t, err)
			defer l.Close()

			e, err := Start(context.Background(), cfg, embeddedtest.Logger(t))
			require.Error(t, err)
			assert.Nil(t, e)
			assert.Contains(t, err.Error(), "address already in use")
			assert.Contains(t, err.Error(), cfg.Dir)

			for _, u := range []url.URL{cfg.ListenPeerUrls[0], cfg.ListenClientUrls[0], cfg.ListenMetricsUrls[0]} {
				if u.Host == taken.Host {
					continue
				}
				pl, err := net.Listen("tcp", u.Host)
				require.NoError(t, err, "port %s still held after the failed start", u.Host)
				require.NoError(t, pl.Close())
			}
			require.Equal(t, datadir.StateValid, datadir.Inspect(context.Background(), cfg.Dir, "").State, "db lock released")

			*taken = embeddedtest.FreeURL(t, taken.Scheme)
			if taken == &cfg.ListenClientUrls[0] {
				cfg.AdvertiseClientUrls = []url.URL{*taken}
			}
			e = embeddedtest.MustStart(t, Start, cfg)
			keys, _ := embeddedtest.AllKeys(t, e.Client())
			assert.Len(t, keys, 2)
		})
	}
}

func TestStartCanceled(t *testing.T) {
	t.Parallel()
	cfg := embeddedtest.NewConfig(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Start(ctx, cfg, nil)
	require.ErrorIs(t, err, context.Canceled)
}
