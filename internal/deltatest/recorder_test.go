package deltatest

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/etcdbr/etcdbr/embedded"
	"github.com/etcdbr/etcdbr/internal/embeddedtest"
	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// A recorder that starts far behind etcd, and goes on while etcd is written to, catches up
// with segment watches and records exactly the events a plain watch sees: every revision,
// every event in order, with its key, value, revisions, version and lease; and the TTL each
// lease was granted.
func TestRecorderCatchesUp(t *testing.T) {
	for _, client := range []string{"in-process", "gRPC"} {
		t.Run(client, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			cfg := embeddedtest.NewConfig(t)
			e, err := embedded.Start(ctx, cfg, nil)
			require.NoError(t, err)
			defer e.Close()
			cli := e.Client()
			if client == "gRPC" {
				cli, err = clientv3.New(clientv3.Config{Endpoints: []string{cfg.ListenClientUrls[0].String()}, Logger: zap.NewNop()})
				require.NoError(t, err)
				defer cli.Close()
			}
			store, err := snapstore.Open(ctx, "mem://", snapstore.Options{})
			require.NoError(t, err)
			defer store.Close()

			before, err := Churn{Seed: 1, Ops: 3500, Keys: 100}.Run(ctx, cli, nil)
			require.NoError(t, err)
			// Segments of 100 revisions, 4 at a time, once 200 revisions behind: the recorder
			// starts thousands behind (etcd sends a watch that is behind 1000 revisions at a time).
			rec := Start(ctx, cli, store, 2, Options{CatchUpLag: 200, CatchUpWatchers: 4, CatchUpSegment: 100})
			defer rec.Stop()
			after, err := Churn{Seed: 2, Ops: 1200, Keys: 100}.Run(ctx, cli, nil)
			require.NoError(t, err)
			last := after.Revision
			require.NoError(t, rec.WaitFor(ctx, last))
			require.Positive(t, rec.CatchUpRounds(), "the recorder never caught up in segments")

			delta, err := rec.Cut(ctx, last)
			require.NoError(t, err)
			require.Equal(t, int64(2), delta.From)
			require.Equal(t, last, delta.Revision)
			got := readDelta(t, store, delta)
			want := WatchRevisions(ctx, t, cli, 2, last)
			require.Equal(t, len(want), len(got.revs), "revisions recorded")
			for i, w := range want {
				g := got.revs[i]
				require.Equal(t, w[0].Kv.ModRevision, g.Revision)
				require.Equal(t, len(w), len(g.Events), "events of revision %d", g.Revision)
				for j := range w {
					require.Equal(t, EventString(w[j]), EventString(g.Events[j]), "event %d of revision %d", j, g.Revision)
				}
			}
			granted := map[int64]int64{}
			for _, res := range []ChurnResult{before, after} {
				for id, ttl := range res.TTLs {
					granted[id] = ttl
				}
			}
			require.NotEmpty(t, got.leases, "the churn attaches keys to leases")
			for id, ttl := range got.leases {
				if ttl != 0 { // 0: revoked before the recorder asked
					require.Equal(t, granted[id], ttl, "lease %x", id)
				}
			}
		})
	}
}

// recorded is a delta's content.
type recorded struct {
	revs   []snapstore.Revision
	leases map[int64]int64
}

func readDelta(t *testing.T, store *snapstore.Store, delta catalog.Snapshot) recorded {
	t.Helper()
	r, err := store.Open(context.Background(), delta)
	require.NoError(t, err)
	defer r.Close()
	dec, err := snapstore.NewDeltaDecoder(r)
	require.NoError(t, err)
	out := recorded{leases: map[int64]int64{}}
	for {
		lease, rev, err := dec.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		require.NoError(t, err)
		if lease != nil {
			out.leases[lease.ID] = lease.TTL
		} else {
			out.revs = append(out.revs, *rev)
		}
	}
}
