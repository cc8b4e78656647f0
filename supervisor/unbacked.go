package supervisor

import "time"

// maxRevisionSamples bounds the samples a revisionClock keeps; beyond it, every second
// sample of the older half is dropped (the estimate gets coarser, never younger than the
// truth by more than the gap between the samples kept).
const maxRevisionSamples = 4096

// revisionSample says that etcd was at revision rev at time at.
type revisionSample struct {
	rev int64
	at  time.Time
}

// revisionClock remembers when etcd's revisions were first seen, so that the age of the
// oldest write not in the store can be told whatever takes the backups: a write of
// revision r was made at or before the first sample at r or later.
type revisionClock struct {
	samples []revisionSample // increasing revisions
}

// observe records etcd's revision at time now.
func (c *revisionClock) observe(rev int64, now time.Time) {
	if n := len(c.samples); n > 0 && c.samples[n-1].rev >= rev {
		if c.samples[n-1].rev > rev {
			// etcd went back in history (a restore): start again.
			c.samples = append(c.samples[:0], revisionSample{rev, now})
		}
		return
	}
	c.samples = append(c.samples, revisionSample{rev, now})
	if len(c.samples) > maxRevisionSamples {
		half := len(c.samples) / 2
		kept := c.samples[:0:0]
		for i, s := range c.samples[:half] {
			if i%2 == 0 {
				kept = append(kept, s)
			}
		}
		c.samples = append(kept, c.samples[half:]...)
	}
}

// unbackedSince returns when the oldest write after revision stored was made, at the
// latest: the time of the first sample past stored, or exact, the time the delta taker
// observed its oldest revision not in the store (zero: none), whichever is earlier. It
// returns the zero time when no sample is past stored. Samples at or before stored are
// forgotten.
func (c *revisionClock) unbackedSince(stored int64, exact time.Time) time.Time {
	i := 0
	for i < len(c.samples) && c.samples[i].rev <= stored {
		i++
	}
	// Keep the last sample at or before stored: it tells when the next write came after.
	if i > 1 {
		c.samples = append(c.samples[:0], c.samples[i-1:]...)
		i = 1
	}
	if i == len(c.samples) {
		return time.Time{}
	}
	since := c.samples[i].at
	if !exact.IsZero() && exact.Before(since) {
		since = exact
	}
	return since
}

// reset forgets every sample.
func (c *revisionClock) reset() { c.samples = c.samples[:0] }
