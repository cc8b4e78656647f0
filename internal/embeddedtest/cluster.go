package embeddedtest

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/server/v3/embed"
)

// ClusterConfigs returns the configurations of n members (named m0, m1, ...) that form one
// new cluster on loopback, each with its own data dir and ports (NewConfig). Elections are
// fast: a 50 ms heartbeat and a 500 ms election timeout.
func ClusterConfigs(t testing.TB, n int) []*embed.Config {
	t.Helper()
	cfgs := make([]*embed.Config, n)
	var initial []string
	for i := range cfgs {
		cfg := NewConfig(t)
		cfg.Name = fmt.Sprintf("m%d", i)
		cfg.TickMs = 50
		cfg.ElectionMs = 500
		cfg.InitialClusterToken = "embeddedtest-" + t.Name()
		cfgs[i] = cfg
		initial = append(initial, cfg.Name+"="+cfg.AdvertisePeerUrls[0].String())
	}
	for _, cfg := range cfgs {
		cfg.InitialCluster = strings.Join(initial, ",")
	}
	return cfgs
}

// MustStartCluster starts the members of cfgs (ClusterConfigs) at once, as a member of a
// cluster serves only once the cluster has a leader, and closes them when the test ends.
func MustStartCluster[M Member](t testing.TB, start func(context.Context, *embed.Config, *slog.Logger) (M, error), cfgs []*embed.Config) []M {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), StartTimeout)
	defer cancel()
	members := make([]M, len(cfgs))
	errs := make([]error, len(cfgs))
	var wg sync.WaitGroup
	for i, cfg := range cfgs {
		wg.Go(func() { members[i], errs[i] = start(ctx, cfg, Logger(t)) })
	}
	wg.Wait()
	for i, err := range errs {
		if err == nil {
			t.Cleanup(members[i].Close)
		}
	}
	for _, err := range errs {
		require.NoError(t, err)
	}
	return members
}
