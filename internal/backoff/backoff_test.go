package backoff

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestNext(t *testing.T) {
	const s = time.Second
	for _, tc := range []struct {
		name     string
		min, max time.Duration
		want     []time.Duration
	}{
		{"doubles up to max", s, 30 * s, []time.Duration{s, 2 * s, 4 * s, 8 * s, 16 * s, 30 * s, 30 * s}},
		{"min equals max", 5 * s, 5 * s, []time.Duration{5 * s, 5 * s, 5 * s}},
		{"max below min wins", 10 * s, 3 * s, []time.Duration{3 * s, 3 * s}},
		{"zero value waits nothing", 0, 0, []time.Duration{0, 0, 0}},
		{"zero min stays zero", 0, s, []time.Duration{0, 0}},
		{"no overflow near the top", math.MaxInt64 / 3, math.MaxInt64, []time.Duration{
			math.MaxInt64 / 3, 2 * (math.MaxInt64 / 3), math.MaxInt64, math.MaxInt64}},
		{"negative bounds wait nothing", -s, -s, []time.Duration{0, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := Backoff{Min: tc.min, Max: tc.max}
			var got []time.Duration
			for range tc.want {
				got = append(got, b.Next())
			}
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestReset(t *testing.T) {
	b := Backoff{Min: time.Second, Max: time.Minute}
	b.Next()
	b.Next()
	require.Equal(t, 4*time.Second, b.Next())
	b.Reset()
	assert.Equal(t, time.Second, b.Next(), "after Reset the backoff starts from Min")
	assert.Equal(t, 2*time.Second, b.Next())
}

// TestJitter checks that a jittered wait lies in (0, w], where w is the wait without jitter,
// and that it is not always w.
func TestJitter(t *testing.T) {
	for _, tc := range []struct {
		name     string
		min, max time.Duration
	}{
		{"small", time.Millisecond, 10 * time.Millisecond},
		{"large", 500 * time.Millisecond, 15 * time.Second},
		{"one nanosecond", 1, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plain := Backoff{Min: tc.min, Max: tc.max}
			jittered := Backoff{Min: tc.min, Max: tc.max, Jitter: true}
			below := false
			for range 200 {
				w := plain.Next()
				got := jittered.Next()
				require.Greater(t, got, time.Duration(0))
				require.LessOrEqual(t, got, w)
				below = below || got < w
			}
			if tc.max > 1 {
				assert.True(t, below, "the jittered waits are drawn below the plain ones")
			}
		})
	}
	t.Run("zero stays zero", func(t *testing.T) {
		b := Backoff{Jitter: true}
		assert.Zero(t, b.Next())
	})
}

func TestSleep(t *testing.T) {
	t.Run("waits", func(t *testing.T) {
		start := time.Now()
		require.NoError(t, Sleep(context.Background(), 20*time.Millisecond))
		assert.GreaterOrEqual(t, time.Since(start), 20*time.Millisecond)
	})
	t.Run("ends with the context", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		assert.ErrorIs(t, Sleep(ctx, time.Hour), context.Canceled)
	})
	t.Run("no wait", func(t *testing.T) {
		assert.NoError(t, Sleep(context.Background(), 0))
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		assert.ErrorIs(t, Sleep(ctx, -time.Second), context.Canceled)
	})
}
