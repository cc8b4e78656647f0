package backup

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// A taker that starts far behind the member (more than catchUpLag revisions), while the
// member goes on being written to, catches up with segment watches and uploads a chain of
// exactly the revisions written: no gap, no overlap, every revision's events equal to a plain
// watch's, every lease recorded with its TTL, the key space rebuilt equal to the source's.
// With a small memory limit the segments are taken under the limit (the watch pauses and
// resumes) and the chain is the same.
func TestDeltasCatchUpInSegments(t *testing.T) {
	eachSource(t, func(t *testing.T, src eventSource) {
		for _, tc := range []struct {
			name  string
			limit int64
		}{
			{"default memory limit", 0},
			{"small memory limit", 512 << 10},
		} {
			t.Run(tc.name, func(t *testing.T) {
				e := startEtcd(t)
				cli := inProcess(t, e)
				store := memStore(t)
				log, logs := testLog(t)
				start := revisionOf(t, cli)
				want := newLeaseWant()

				churn(t, cli, "/before", 160, want)
				bulkPut(t, cli, "/bulk", 3*catchUpLag)
				// Anchor the chain at start, so that the taker begins far behind the member.
				w, err := store.Create(context.Background(), catalog.Snapshot{Kind: catalog.KindFull, Revision: start, Time: time.Now()})
				require.NoError(t, err)
				_, err = w.Commit()
				require.NoError(t, err)

				cfg := deltaConfig(src, e, cli, store, log)
				cfg.MemoryLimit = tc.limit
				run := startDeltas(t, cfg)
				last := churn(t, cli, "/during", 160, want)
				waitFor(t, "the deltas to reach the last write", func() bool { return newestDelta(t, store) >= last })
				run.stop(t, nil)

				require.Contains(t, logs.String(), "catching up with segment watches")
				if src == watchSource { // the backend's reader may reach the member between two rounds
					require.Contains(t, logs.String(), "the delta watch caught up")
				}
				checkChain(t, store, cli, start+1, last, *want)
			})
		}
	})
}

// bulkPut writes n revisions of one 100-byte put each under prefix, from 4 clients at once.
func bulkPut(t *testing.T, cli *clientv3.Client, prefix string, n int) {
	t.Helper()
	const writers = 4
	value := strings.Repeat("v", 100)
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for i := w; i < n; i += writers {
				if _, err := cli.Put(context.Background(), fmt.Sprintf("%s/%d", prefix, i%2000), value); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}
