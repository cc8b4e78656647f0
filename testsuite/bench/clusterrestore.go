package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

	"github.com/etcdbr/etcdbr/snapstore"
)

// benchClusterRestore measures a whole-cluster restore: a store of its own (a full snapshot
// of a cfg.ClusterRestoreMiB db and every delta after it: cfg.LongEvents events) restored
// by three etcdbr run members whose data dirs are all lost, from `etcdbr cluster restore`
// to every member serving, and to the intent's end (a full snapshot of the restored cluster
// in the store).
func benchClusterRestore(ctx context.Context, cfg config, dir string) ([]figure, error) {
	dcfg := cfg
	dcfg.DBBytes = int64(cfg.ClusterRestoreMiB) << 20
	dir = filepath.Join(dir, "cluster-restore")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	ds, err := makeDataset(ctx, dcfg, dir)
	if err != nil {
		return nil, err
	}
	c, err := newRejoinCluster(cfg, filepath.Join(dir, "members"))
	if err != nil {
		return nil, err
	}
	c.store = ds.StoreURL
	defer c.stopAll()
	events := ds.Points[len(ds.Points)-1].Events
	cfg.progress("cluster restore: 3 members, the store's newest point (%d MiB db, %d events after it)", ds.DBBytes>>20, events)
	// What the scenarios before wrote is still being written back (gigabytes at a few
	// hundred MB/s): on disk first, so that its I/O is not measured here.
	syscall.Sync()

	start := time.Now()
	cmd := exec.CommandContext(ctx, cfg.Bins.Etcdbr, "cluster", "restore", "--store", ds.StoreURL, "--no-wait")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("etcdbr cluster restore: %w: %s", err, out)
	}
	id := ""
	if _, rest, ok := strings.Cut(string(out), "cluster restore "); ok {
		id, _, _ = strings.Cut(rest, " ")
	}
	recorded := time.Since(start)
	// Every machine was lost: the members start on no data, see the intent and restore.
	for i := range c.members {
		if err := c.start(ctx, i, true, "new", ""); err != nil {
			return nil, err
		}
	}
	serving, err := c.allServe(ctx, start)
	if err != nil {
		return nil, err
	}
	cfg.progress("  every member serves after %.2f s", serving.Seconds())
	store, err := snapstore.Open(ctx, ds.StoreURL, snapstore.Options{})
	if err != nil {
		return nil, err
	}
	defer store.Close()
	deadline := time.Now().Add(30 * time.Minute)
	for {
		end, ended, err := store.IntentEnd(ctx, id)
		if err != nil {
			return nil, err
		}
		if ended {
			if end.Outcome != "done" {
				return nil, fmt.Errorf("cluster restore %s ended %s: %s", id, end.Outcome, end.Reason)
			}
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, fmt.Errorf("cluster restore %s has not ended after 30 minutes", id)
		}
		time.Sleep(100 * time.Millisecond)
	}
	done := time.Since(start)
	cfg.progress("  done (a full snapshot of the restored cluster in the store) after %.2f s", done.Seconds())
	if err := c.sameHash(ctx); err != nil {
		return nil, err
	}
	fig := figure{
		Name:   fmt.Sprintf("cluster restore of 3 members (db %d MiB, %d events)", ds.DBBytes>>20, events),
		Etcdbr: []value{{"wall_s", serving.Seconds()}, {"done_s", done.Seconds()}, {"recorded_s", recorded.Seconds()}},
		Note: "from `etcdbr cluster restore` to every member serving the store's newest point (a linearizable read through each), " +
			"every member started on no data after the intent was recorded (each restores the full snapshot and replays the deltas at once, " +
			"on the same machine); done: the leader's full snapshot of the restored cluster is in the store. Same HashKV on every member checked",
	}
	// The target is for a db of 1 GiB and 1M events after it: it is not judged at other sizes.
	if ds.DBBytes >= 1<<30 && events >= 1_000_000 {
		fig.want("every member serves within 30 s", serving <= 30*time.Second)
	}
	return []figure{fig}, nil
}

// allServe waits until a linearizable read through every member succeeds and returns the
// time since start. Its clients try to connect again every 50 ms: with gRPC's default
// backoff, a client that found no member listening for half a minute waits seconds before
// it tries again, and the figure would count that wait.
func (c *rejoinCluster) allServe(ctx context.Context, start time.Time) (time.Duration, error) {
	retry := grpc.WithConnectParams(grpc.ConnectParams{
		Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1, MaxDelay: 50 * time.Millisecond},
		MinConnectTimeout: time.Second,
	})
	for _, m := range c.members {
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{m.Client}, DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
			DialOptions: []grpc.DialOption{retry}})
		if err != nil {
			return 0, err
		}
		deadline := time.Now().Add(30 * time.Minute)
		for {
			gctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			_, err = cli.Get(gctx, "probe")
			cancel()
			if err == nil {
				break
			}
			if m.srv.exited() {
				cli.Close()
				return 0, fmt.Errorf("member %s exited (see %s)", m.Name, m.srv.log.Name())
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				cli.Close()
				return 0, fmt.Errorf("member %s does not serve after 30 minutes: %w", m.Name, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		cli.Close()
	}
	return time.Since(start), nil
}

// sameHash checks that the members have the same HashKV at the same revision.
func (c *rejoinCluster) sameHash(ctx context.Context) error {
	cli, err := c.client()
	if err != nil {
		return err
	}
	defer cli.Close()
	resp, err := cli.Get(ctx, "probe")
	if err != nil {
		return err
	}
	rev := resp.Header.Revision
	var first uint32
	for i, m := range c.members {
		h, err := cli.HashKV(ctx, m.Client, rev)
		if err != nil {
			return fmt.Errorf("hash kv of %s: %w", m.Name, err)
		}
		if i == 0 {
			first = h.Hash
		} else if h.Hash != first {
			return errors.New("cluster restore: the members' HashKV differ at revision " + fmt.Sprint(rev))
		}
	}
	return nil
}
