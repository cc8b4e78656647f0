//go:build soak

package datadir

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/etcdbr/etcdbr/embedded"
	"github.com/etcdbr/etcdbr/internal/embeddedtest"
)

// TestValidationStartupSoak measures the start-up of a clean 1 GiB data dir: the quick
// check (clean-stop marker), the full check, and etcd's own start, and checks that the
// quick check adds at most 10% to the start-up time.
//
//	go test -tags soak -run TestValidationStartupSoak -v ./embedded/
func TestValidationStartupSoak(t *testing.T) {
	cfg := embeddedtest.NewConfig(t)
	cfg.QuotaBackendBytes = 4 << 30
	e := embeddedtest.MustStart(t, embedded.Start, cfg)
	val := make([]byte, 1<<20)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range val {
		val[i] = byte(r.Uint32()) // incompressible, as real values may be
	}
	ctx := context.Background()
	for i := range 1024 {
		_, err := e.Client().Put(ctx, fmt.Sprintf("big-%04d", i), string(val))
		require.NoError(t, err)
	}
	e.Close()
	require.NoError(t, WriteCleanStopMarker(cfg.Dir, ""))

	measure := func(d Depth) time.Duration {
		start := time.Now()
		v := InspectWith(ctx, cfg.Dir, "", InspectOptions{Depth: d})
		took := time.Since(start)
		require.Equal(t, StateValid, v.State, v.Reason)
		require.Equal(t, d, v.Depth)
		return took
	}
	quick, full := measure(DepthQuick), measure(DepthFull)
	start := time.Now()
	e = embeddedtest.MustStart(t, embedded.Start, cfg)
	etcdStart := time.Since(start)
	e.Close()
	t.Logf("1 GiB data dir: quick validation %v, full validation %v, etcd start %v; quick adds %.1f%%, full adds %.1f%%",
		quick, full, etcdStart, 100*quick.Seconds()/etcdStart.Seconds(), 100*full.Seconds()/etcdStart.Seconds())
	require.Less(t, quick.Seconds(), 0.1*etcdStart.Seconds(), "the quick check adds more than 10%% to the start-up")
}
