package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff hands out the waits between the failed tries of one retry loop: Min first, then
// twice the last one, never more than Max (Max wins over a larger Min). With Jitter, each
// wait is drawn uniformly from (0, w] instead of w ("full jitter"), so that clients that
// failed together do not retry together; a wait of 0 stays 0.
//
// The zero value waits 0 every time. A Backoff is not safe for concurrent use: each retry
// loop has its own.
type Backoff struct {
	Min, Max time.Duration
	Jitter   bool

	cur     time.Duration // the last wait before jitter
	started bool          // Next was called since the last Reset
}

// Next returns the next wait and advances the backoff.
func (b *Backoff) Next() time.Duration {
	if !b.started {
		b.started = true
		b.cur = min(b.Min, b.Max)
	} else if b.cur > b.Max/2 {
		b.cur = b.Max // doubling would pass Max (or overflow)
	} else {
		b.cur = 2 * b.cur
	}
	b.cur = max(b.cur, 0)
	if !b.Jitter || b.cur == 0 {
		return b.cur
	}
	return rand.N(b.cur) + 1
}

// Reset starts the backoff again from Min: call it after a success.
func (b *Backoff) Reset() {
	b.cur, b.started = 0, false
}

// Sleep waits for d, or until ctx ends, then returns ctx's error. A d that is not positive
// returns at once (with ctx's error, if it ended).
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
