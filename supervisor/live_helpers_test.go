package supervisor

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/etcdbr/etcdbr/backup"
	"github.com/etcdbr/etcdbr/internal/embeddedtest"
	"github.com/etcdbr/etcdbr/snapstore"
)

func mustTime(t *testing.T, s string) time.Time {
	t.Helper()
	at, err := time.Parse(time.RFC3339Nano, s)
	require.NoError(t, err)
	return at
}

// liveSup is a Supervisor running in the test with a real etcd and a file store.
type liveSup struct {
	t     *testing.T
	s     *Supervisor
	cfg   Config
	cli   *clientv3.Client // a client of the member's URL: it reconnects after restarts
	url   string           // the API's base URL
	log   *embeddedtest.SyncBuffer
	store *snapstore.Store
	stop  func() error
}

// startLive runs a Supervisor with a fresh member, a file store, deltas every second and
// the API on a free loopback port; change adjusts the configuration. It waits until etcd
// serves and the first full snapshot is in the store.
func startLive(t *testing.T, change func(*Config)) *liveSup {
	t.Helper()
	etcdCfg := embeddedtest.NewConfig(t)
	store, err := snapstore.Open(context.Background(), "file://"+t.TempDir(), snapstore.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { store.Close() })
	sched, err := backup.ParseSchedule("@daily")
	require.NoError(t, err)
	logs := &embeddedtest.SyncBuffer{}
	cfg := Config{
		Etcd:        etcdCfg,
		Store:       store,
		Schedule:    sched,
		DeltaPeriod: time.Second,
		API:         APIConfig{Listen: "127.0.0.1:0"},
		Log:         slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if change != nil {
		change(&cfg)
	}
	s, err := New(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	stopped := false
	var runErr error
	stop := func() error {
		if !stopped {
			stopped = true
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(2 * time.Minute):
				t.Fatal("Run did not return after its context ended")
			}
		}
		return runErr
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("supervisor log:\n%s", logs.String())
		}
	})
	l := &liveSup{t: t, s: s, cfg: cfg, log: logs, store: store, stop: stop}
	l.waitFor("etcd to serve with a full snapshot in the store", func() bool {
		st := s.Status()
		return st.State == StateServing && st.Backups.NewestFull != nil
	})
	l.cli, err = clientv3.New(clientv3.Config{Endpoints: []string{etcdCfg.ListenClientUrls[0].String()},
		DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	require.NoError(t, err)
	t.Cleanup(func() { l.cli.Close() })
	if cfg.API.Listen != "" {
		l.url = "http://" + s.APIAddr()
	}
	return l
}

// waitFor polls cond until it holds, or fails the test after two minutes.
func (l *liveSup) waitFor(what string, cond func() bool) {
	l.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			l.t.Fatalf("timed out waiting for %s; status: %+v", what, l.s.Status())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// call makes an API request and decodes the JSON answer into out (unless nil); it returns
// the status code.
func (l *liveSup) call(method, path, body string, out any) int {
	l.t.Helper()
	req, err := http.NewRequest(method, l.url+path, strings.NewReader(body))
	require.NoError(l.t, err)
	if method == http.MethodPost && path != "/v1/snapshots/full" && path != "/v1/snapshots/delta" {
		req.Header.Set("Content-Type", "application/json") // as curl --json
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(l.t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(l.t, err)
	if out != nil {
		require.NoError(l.t, json.Unmarshal(raw, out), "%s %s answered %d: %s", method, path, resp.StatusCode, raw)
	}
	return resp.StatusCode
}
