package embedded

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3client"
)

// Etcd is an etcd member running in this process.
type Etcd struct {
	name   string
	etcd   *embed.Etcd
	calls  *clientCalls
	client *clientv3.Client
	lg     *slog.Logger

	errc      chan error    // at most one fatal error; closed when the watcher ends
	stopping  chan struct{} // closed when Close begins
	watchDone chan struct{} // closed when the watcher goroutine has returned
	closeOnce sync.Once
}

// Start starts etcd in-process with cfg and waits until it serves client
// requests (the server's ReadyNotify), fails (StartEtcd returns an error or etcd
// reports one on its error channel), stops by itself, or ctx ends. On failure
// everything it started is stopped and the error says why.
//
// A member of a multi-member cluster becomes ready only once it has a leader, so
// the deadline of ctx bounds the wait. etcd logs through its own zap logger as
// cfg configures it; lg receives etcdbr's own messages (nil discards them).
//
// If etcd panics while starting (it does on some damaged data dirs) Start
// recovers and returns an error, but etcd may still hold its listeners and the
// lock on its db: the process should exit rather than start etcd again.
// Inspect the data dir first (datadir.Inspect) to avoid that. etcd also exits
// the process on a few fatal conditions (for example a WAL it cannot read);
// datadir.Inspect reports those as StateCorrupt.
func Start(ctx context.Context, cfg *embed.Config, lg *slog.Logger) (*Etcd, error) {
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	if cfg == nil {
		return nil, errors.New("start etcd: no configuration")
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("start etcd: %w", err)
	}
	lg.Info("starting etcd", "name", cfg.Name, "data_dir", cfg.Dir, "cluster_state", cfg.ClusterState)

	calls := newClientCalls()
	ee, err := startEtcd(cfg, calls)
	if err != nil {
		return nil, fmt.Errorf("start etcd member %q with data dir %q: %w", cfg.Name, cfg.Dir, err)
	}

	select {
	case <-ee.Server.ReadyNotify():
	case err, ok := <-ee.Err():
		stopEtcd(ee, calls)
		if !ok || err == nil {
			err = errors.New("a listener stopped")
		}
		return nil, fmt.Errorf("etcd member %q failed while starting: %w", cfg.Name, err)
	case <-ee.Server.StopNotify():
		stopEtcd(ee, calls)
		return nil, fmt.Errorf("etcd member %q stopped before it became ready (see etcd's log)", cfg.Name)
	case <-ctx.Done():
		stopEtcd(ee, calls)
		return nil, fmt.Errorf("etcd member %q did not become ready: %w", cfg.Name, ctx.Err())
	}

	e := &Etcd{
		name:      cfg.Name,
		etcd:      ee,
		calls:     calls,
		client:    v3client.New(ee.Server),
		lg:        lg,
		errc:      make(chan error, 1),
		stopping:  make(chan struct{}),
		watchDone: make(chan struct{}),
	}
	go e.watch()
	lg.Info("etcd is ready", "name", cfg.Name, "member_id", ee.Server.MemberID().String(),
		"cluster_id", ee.Server.Cluster().ID().String())
	return e, nil
}

// startEtcd calls embed.StartEtcd with calls' interceptors on etcd's gRPC
// servers and etcd's logger quiet about the listeners a stop closes, and turns a
// panic into an error. cfg is left as it was: StartEtcd keeps a copy of it.
func startEtcd(cfg *embed.Config, calls *clientCalls) (e *embed.Etcd, err error) {
	restoreLogger, err := quietStopLogs(cfg, calls)
	if err != nil {
		return nil, err
	}
	defer restoreLogger()
	opts := cfg.GRPCAdditionalServerOptions
	cfg.GRPCAdditionalServerOptions = append(opts[:len(opts):len(opts)], calls.serverOptions()...)
	defer func() {
		cfg.GRPCAdditionalServerOptions = opts
		if r := recover(); r != nil {
			e, err = nil, fmt.Errorf("etcd panicked while starting: %v "+
				"(it may still hold its ports and db lock: restart the process)", r)
		}
	}()
	return embed.StartEtcd(cfg)
}

// stopEtcd stops ee: it ends the client calls that would hold up the stop
// (streams such as watches; see clientCalls), then closes ee, which lets the
// other calls in flight finish, stops the server (the raft loop ends, the WAL is
// synced and closed, the backend committed and closed) and closes its listeners.
func stopEtcd(ee *embed.Etcd, calls *clientCalls) {
	calls.stop()
	ee.Close()
}

// watch forwards the first fatal error of the running etcd to errc.
func (e *Etcd) watch() {
	defer close(e.watchDone)
	defer close(e.errc)

	var err error
	select {
	case <-e.stopping:
		return
	case ferr, ok := <-e.etcd.Err():
		if !ok || ferr == nil {
			ferr = errors.New("a listener stopped")
		}
		err = fmt.Errorf("etcd failed: %w", ferr)
	case <-e.etcd.Server.StopNotify():
		err = errors.New("etcd server stopped unexpectedly (see etcd's log)")
	}
	select {
	case <-e.stopping:
		return // the failure is the shutdown Close asked for
	default:
	}
	e.lg.Error("etcd failed", "error", err)
	e.errc <- err
}

// Server returns the running etcd server.
func (e *Etcd) Server() *etcdserver.EtcdServer { return e.etcd.Server }

// Client returns an in-process client of the member (no network, no TLS, no
// auth). Close closes it. On etcd 3.6 a Maintenance().Snapshot through it ends
// with "context canceled" instead of EOF; take snapshots over the member's client
// URL instead.
func (e *Etcd) Client() *clientv3.Client { return e.client }

// Err returns a channel that receives the error that ended etcd if it fails
// after Start returned. It receives at most one error and is closed once etcd
// failed or Close was called.
func (e *Etcd) Err() <-chan error { return e.errc }

// Close stops etcd and returns when it has fully stopped (listeners closed, WAL
// and db closed). Clients' streams (watches, lease keep-alives, ...) are ended at
// once with Unavailable ("etcd is stopping"), so that clients reconnect, rather
// than waited for; other requests in flight may finish. It is idempotent and safe
// to call concurrently; every call returns after the stop completed.
func (e *Etcd) Close() {
	e.closeOnce.Do(func() {
		close(e.stopping)
		<-e.watchDone
		e.lg.Info("stopping etcd", "name", e.name)
		if err := e.client.Close(); err != nil && !errors.Is(err, context.Canceled) {
			e.lg.Warn("closing the in-process etcd client", "error", err)
		}
		stopEtcd(e.etcd, e.calls)
		e.lg.Info("etcd stopped", "name", e.name)
	})
}
