package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// putKeys is the key space of the put load.
const putKeys = 100_000

// benchPut measures put throughput (cfg.ValueSize values, cfg.Clients concurrent clients
// over cfg.Conns connections) of etcdbr run with deltas every second, beside the same etcdbr
// run with backups off (no deltas, no full snapshot while measuring), each on a new data dir,
// alternating for cfg.Rounds rounds (the side that goes first alternates too).
func benchPut(ctx context.Context, cfg config, dir string) ([]figure, error) {
	var ops, secs [2]float64
	var rss, anon [2]float64
	var lag time.Duration
	for r := range cfg.Rounds {
		for _, side := range alternate(r) { // which side goes first alternates
			i, deltas, name := 0, false, "backups off"
			if side == "etcdbr" {
				i, deltas, name = 1, true, "deltas every 1s"
			}
			cfg.progress("put throughput, %d clients, %s, round %d", cfg.Clients, name, r+1)
			round := filepath.Join(dir, fmt.Sprintf("put-%d-%d", r, i))
			period := "0s"
			if deltas {
				period = "1s"
			}
			storeURL := "file://" + filepath.Join(round, "store")
			s, err := startServer(ctx, cfg.Bins, serverSpec{Etcdbr: true, DataDir: filepath.Join(round, "data"), Store: storeURL,
				LogPath: filepath.Join(dir, fmt.Sprintf("put-%d-%d.log", r, i)),
				Args:    []string{"--delta-snapshot-period", period, "--full-snapshot-schedule", "0 0 1 1 *"}})
			if err != nil {
				return nil, err
			}
			n, took, last, err := putLoad(ctx, cfg, s)
			if err == nil && deltas {
				var l time.Duration
				if l, err = deltaLag(ctx, storeURL, last); err == nil {
					lag = max(lag, l)
				}
			}
			st, serr := s.stop(syscall.SIGTERM)
			if err == nil {
				err = serr
			}
			if err != nil {
				return nil, fmt.Errorf("put throughput, %s: %w", name, err)
			}
			ops[i] += float64(n)
			secs[i] += took.Seconds()
			rss[i], anon[i] = max(rss[i], mibs(st.PeakRSS)), max(anon[i], mibs(st.PeakAnon))
			os.RemoveAll(round)
		}
	}
	f := figure{
		Name:         fmt.Sprintf("put throughput, %d B values, %d clients, deltas every 1 s", cfg.ValueSize, cfg.Clients),
		Etcdbr:       []value{{"ops_per_s", ops[1] / secs[1]}, {"peak_rss_mib", rss[1]}, {"peak_anon_mib", anon[1]}, {"delta_lag_s", lag.Seconds()}},
		Baseline:     []value{{"ops_per_s", ops[0] / secs[0]}, {"peak_rss_mib", rss[0]}, {"peak_anon_mib", anon[0]}},
		BaselineName: "the same etcdbr run, backups off",
		Note: fmt.Sprintf("%d rounds of %v each, alternating (which goes first too), over %d connections, fsync on; delta lag = the longest wait after the load stopped until the store held its last revision",
			cfg.Rounds, cfg.PutDuration, cfg.Conns),
	}
	f.compare("ops_per_s")
	f.want("ops ratio >= 0.95", f.Ratio >= 0.95)
	return []figure{f}, nil
}

// putLoad waits until s is ready, puts for a second to warm up, then counts the puts
// acknowledged during cfg.PutDuration; it returns them, the time they took and the last
// revision written.
func putLoad(ctx context.Context, cfg config, s *server) (int64, time.Duration, int64, error) {
	if _, err := s.ready(ctx, readyTimeout); err != nil {
		return 0, 0, 0, err
	}
	var clis []*clientv3.Client
	defer func() {
		for _, c := range clis {
			c.Close()
		}
	}()
	for range cfg.Conns {
		c, err := newClient(s.Endpoint)
		if err != nil {
			return 0, 0, 0, err
		}
		clis = append(clis, c)
	}
	var done, last atomic.Int64
	stop := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		errc <- parallel(ctx, cfg.Clients, func(ctx context.Context, w int) error {
			rng := rand.New(rand.NewPCG(cfg.Seed, uint64(1000+w)))
			buf := []byte(randomValue(rng, 2*cfg.ValueSize))
			cli := clis[w%len(clis)]
			for {
				select {
				case <-stop:
					return nil
				default:
				}
				off := rng.IntN(cfg.ValueSize)
				resp, err := cli.Put(ctx, fmt.Sprintf("/bench/put/%06d", rng.IntN(putKeys)), string(buf[off:off+cfg.ValueSize]))
				if err != nil {
					return err
				}
				done.Add(1)
				for rev := resp.Header.Revision; ; {
					l := last.Load()
					if rev <= l || last.CompareAndSwap(l, rev) {
						break
					}
				}
			}
		})
	}()
	wait := func(d time.Duration) error {
		select {
		case err := <-errc:
			if err == nil {
				err = fmt.Errorf("the writers stopped early")
			}
			return err
		case <-time.After(d):
			return nil
		}
	}
	err := wait(time.Second)
	from, start := done.Load(), time.Now()
	if err == nil {
		err = wait(cfg.PutDuration)
	}
	n, took := done.Load()-from, time.Since(start)
	close(stop)
	if err != nil {
		return 0, 0, 0, err
	}
	if err := <-errc; err != nil {
		return 0, 0, 0, err
	}
	return n, took, last.Load(), nil
}

// deltaLag waits until the store's deltas reach revision last and returns how long that took.
func deltaLag(ctx context.Context, storeURL string, last int64) (time.Duration, error) {
	store, err := snapstore.Open(ctx, storeURL, snapstore.Options{})
	if err != nil {
		return 0, err
	}
	defer store.Close()
	start := time.Now()
	for {
		snap, ok, err := store.Latest(ctx, catalog.KindDelta)
		if err != nil {
			return 0, err
		}
		if ok && snap.Revision >= last {
			return time.Since(start), nil
		}
		if time.Since(start) > 2*time.Minute {
			return 0, fmt.Errorf("the deltas did not reach revision %d within 2 minutes of the last put (newest delta: revision %d)", last, snap.Revision)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
