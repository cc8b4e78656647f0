// Package progress is how long work (a restore, a deep verification, a copy) tells whoever
// watches how far it got: the work updates a Progress's counters, atomically and coarsely
// (per buffer of bytes, per batch of revisions), and a watcher samples them when it likes.
// A nil *Progress is valid and costs one nil check per update: nobody watches.
//
// Pure figures (rates, time left) are computed from two samples by Measure; the log-line
// reporter (Logger) takes its ticks from a channel, so that tests drive it without waiting.
package progress

import (
	"sync/atomic"
)

// Progress holds the counters of one piece of long work. The zero value is ready; every
// method may be called on a nil *Progress (then it does nothing and Load returns zeros).
type Progress struct {
	phase          atomic.Pointer[string]
	bytes          atomic.Int64
	bytesTotal     atomic.Int64
	revisions      atomic.Int64
	revisionsTotal atomic.Int64
	revision       atomic.Int64
}

// New returns a Progress in phase.
func New(phase string) *Progress {
	p := &Progress{}
	p.SetPhase(phase)
	return p
}

// SetPhase names what the work does now ("fetch", "replay", "copy", ...).
func (p *Progress) SetPhase(phase string) {
	if p == nil {
		return
	}
	p.phase.Store(&phase)
}

// Reset starts a new stretch of work named phase: every counter and total back to 0.
func (p *Progress) Reset(phase string) {
	if p == nil {
		return
	}
	p.bytes.Store(0)
	p.bytesTotal.Store(0)
	p.revisions.Store(0)
	p.revisionsTotal.Store(0)
	p.revision.Store(0)
	p.SetPhase(phase)
}

// AddBytes counts n more bytes read (or copied).
func (p *Progress) AddBytes(n int64) {
	if p == nil {
		return
	}
	p.bytes.Add(n)
}

// AddBytesTotal raises the number of bytes the work is expected to read by n.
func (p *Progress) AddBytesTotal(n int64) {
	if p == nil {
		return
	}
	p.bytesTotal.Add(n)
}

// SetRevisionsTotal sets how many revisions the work is expected to replay.
func (p *Progress) SetRevisionsTotal(n int64) {
	if p == nil {
		return
	}
	p.revisionsTotal.Store(n)
}

// AddRevisions counts n more revisions replayed, the last of them rev.
func (p *Progress) AddRevisions(n, rev int64) {
	if p == nil {
		return
	}
	p.revisions.Add(n)
	p.revision.Store(rev)
}

// Counts is a sample of a Progress's counters.
type Counts struct {
	// Phase is what the work does.
	Phase string
	// Bytes counts the bytes read so far; BytesTotal those expected (0: unknown).
	Bytes, BytesTotal int64
	// Revisions counts the revisions replayed so far; RevisionsTotal those expected (0:
	// unknown); Revision is the last one replayed.
	Revisions, RevisionsTotal, Revision int64
}

// Load samples the counters (each one atomically; together they may be a moment apart).
func (p *Progress) Load() Counts {
	if p == nil {
		return Counts{}
	}
	var c Counts
	if ph := p.phase.Load(); ph != nil {
		c.Phase = *ph
	}
	c.Bytes, c.BytesTotal = p.bytes.Load(), p.bytesTotal.Load()
	c.Revisions, c.RevisionsTotal, c.Revision = p.revisions.Load(), p.revisionsTotal.Load(), p.revision.Load()
	return c
}
