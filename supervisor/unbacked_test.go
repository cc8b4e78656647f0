package supervisor

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestRevisionClock(t *testing.T) {
	t0 := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	var c revisionClock
	c.observe(10, at(0))
	require.True(t, c.unbackedSince(10, time.Time{}).IsZero(), "the store holds etcd's revision")

	// Writes keep coming while the store lags: the age counts from the first sample past
	// the store's revision, not from when the store was last current.
	c.observe(20, at(1))
	c.observe(30, at(2))
	c.observe(40, at(3))
	require.Equal(t, at(1), c.unbackedSince(10, time.Time{}))
	require.Equal(t, at(3), c.unbackedSince(35, time.Time{}), "the store caught up to 35: the oldest write left is 36..40")
	require.Equal(t, at(3), c.unbackedSince(30, time.Time{}), "forgotten samples do not come back")
	c.observe(50, at(4))
	require.Equal(t, at(3), c.unbackedSince(39, time.Time{}))
	// The taker's own observation time is exact and earlier than the sample.
	require.Equal(t, at(3).Add(-300*time.Millisecond), c.unbackedSince(39, at(3).Add(-300*time.Millisecond)))
	require.Equal(t, at(3), c.unbackedSince(39, at(5)), "a later exact time does not hide the sample")
	require.True(t, c.unbackedSince(50, at(3)).IsZero(), "all in the store")

	// etcd went back in history (a restore to a past point, without a bump).
	c.observe(5, at(6))
	require.True(t, c.unbackedSince(5, time.Time{}).IsZero())
	c.observe(6, at(7))
	require.Equal(t, at(7), c.unbackedSince(5, time.Time{}))

	// Bounded: the oldest sample past the store's revision survives thinning.
	var big revisionClock
	for i := range 3 * maxRevisionSamples {
		big.observe(int64(i+1), at(i))
	}
	require.LessOrEqual(t, len(big.samples), maxRevisionSamples+1)
	require.Equal(t, at(0), big.unbackedSince(0, time.Time{}))
	since := big.unbackedSince(int64(2*maxRevisionSamples), time.Time{})
	require.False(t, since.After(at(2*maxRevisionSamples+8)), "coarser, but close: %v", since.Sub(t0))
	require.False(t, since.Before(at(2*maxRevisionSamples-8)))
}
